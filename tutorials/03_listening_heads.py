# %% [markdown]
# # Listening heads: which heads' attention to the audio predicts a right answer?
#
# Glazer et al. rank heads on a labelled calibration set by how well a head's attention from the answer
# position to the audio separates correct from wrong answers, call the selected heads' mean audio attention
# the *listening signal*, and steer toward the audio with the difference between the input and the same
# prompt with silence. Here on the bundled toy's hardest non-speech task (counting beeps), where it errs.

# %%
import numpy as np
import torch
from scipy.stats import mannwhitneyu

from hooked_audio import HookedAudioTransformer
from hooked_audio.analysis import (
    audio_attention_per_row, audio_silence_steering_hooks, head_ablation_hooks, listening_head_scores,
    listening_signal, random_heads, same_prompt_donors, silence_like, top_heads,
)
from hooked_audio.app.method_plots import plot_head_scores
from hooked_audio.toy import evaluate, tasks

torch.set_grad_enabled(False)
model = HookedAudioTransformer.from_pretrained("toy-qwen2-audio")
print(model.cfg.n_layers, "decoder layers,", len(model.hook_dict), "hook points")
labels = list(tasks.TASKS_BY_NAME["beeps"].answers)
ids = torch.tensor([model.to_single_token(w) for w in labels])


def split(seed, n=40):
    samples = [s for s in tasks.make_probe_set(seed=seed, n_per_task=n, task_names=["beeps"]) if s.hint is None]
    batch = model.to_inputs(evaluate.encode(model.processor, samples))
    return batch, torch.tensor([labels.index(s.answer) for s in samples])


def correct_of(batch, answers, hooks=()):
    logits = model.run_with_hooks(batch, fwd_hooks=list(hooks))
    return logits[torch.arange(len(answers)), batch.last_positions][:, ids].argmax(-1) == answers


# %% [markdown]
# ## 1. Rank heads on a calibration split, test the listening signal on a held-out split

# %%
calib, calib_answers = split(11)
test, test_answers = split(12)
calib_correct, test_correct = correct_of(calib, calib_answers), correct_of(test, test_answers)
print("accuracy: calibration", calib_correct.float().mean().item(), " held-out", test_correct.float().mean().item())
scores = listening_head_scores(model, calib, calib_correct)
plot_head_scores(scores)
heads = top_heads(scores, 3)
signal = listening_signal(audio_attention_per_row(model, test), heads).numpy()
c = test_correct.numpy()
auc = mannwhitneyu(signal[c], signal[~c]).statistic / (c.sum() * (~c).sum())
print("top heads", heads, " held-out AUC of the listening signal", round(float(auc), 3))
# Measured: AUC 0.59 (40 held-out clips): barely above chance. The listener toy's errors on beeps are not
# explained by how much its heads look at the audio; a text-reliant organism is where this signal should matter.

# %% [markdown]
# ## 2. Resample-ablate the top heads vs random heads (5 draws)

# %%
donors = same_prompt_donors(test)
clean = test_correct.float().mean().item()
top = correct_of(test, test_answers, head_ablation_hooks(heads, "resample", donors=donors)).float().mean().item()
rand = [correct_of(test, test_answers, head_ablation_hooks(random_heads(model.cfg.n_layers, model.cfg.n_heads, 3, exclude=heads, seed=s),
                                                           "resample", donors=donors)).float().mean().item() for s in range(5)]
print(f"clean {clean:.2f}; top-3 resampled {top:.2f}; random-3 resampled {[round(r, 2) for r in rand]}")
# Measured: clean 0.57; top-3 listening heads resampled 0.55; random 3 heads 0.40 / 0.50 / 0.35 / 0.50 / 0.45.
# The heads ranked by *separating correct from wrong* are not the heads the answer depends on here (every
# random draw hurts more): on this toy, ranking by separation does not find the audio-reading heads, while
# ranking by audio attention mass does (tutorial 01). The paper's claim is not reproduced on this organism.

# %% [markdown]
# ## 3. The silence counterfactual and audio-silence steering (with its random-direction control)
# `silence_like` keeps the token layout and replaces each clip's features by those of digital silence.
# Steering adds beta * s(x) at the last layer's last position; the control adds a random direction of the
# same norm per item. The listener toy does not rely on text hints, so there is no text dominance to undo;
# what this shows is that the hook runs (also during generate) and how accuracy moves.

# %%
print("silence accuracy", correct_of(silence_like(test), test_answers).float().mean().item())
for beta in [0.5, 1.0]:
    steered = correct_of(test, test_answers, audio_silence_steering_hooks(model, test, heads, beta)).float().mean().item()
    control = correct_of(test, test_answers, audio_silence_steering_hooks(model, test, heads, beta, control="random")).float().mean().item()
    print(f"beta {beta}: steered {steered:.2f}, random direction {control:.2f}")
# Measured: silence 0.25 (chance); beta 0.5: steered 0.50, random 0.55; beta 1.0: steered 0.52, random 0.55.
# No benefit on this organism (it already listens); the conflict-prompt test awaits the text-reliant organism.
with model.hooks(audio_silence_steering_hooks(model, test[:2], heads, 1.0)):
    print(model.to_string(model.generate(test[:2], max_new_tokens=2)[:, -2:]))
