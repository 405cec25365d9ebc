# %% [markdown]
# # Who wins the conflict? Text dominance, layer tracing and back-patching
#
# Cho et al. (2026) give an audio LM a clip that supports answer A_a and a text that asserts A_t != A_a, and ask
# how often the text wins, where in the network the audio's answer is lost, and whether writing late audio
# representations back into earlier layers ("back-patching") gives the audio its say again.
#
# The instrument is the text-reliant toy `toy-qwen2-audio-textual` (trained on prompts whose hints are common and
# usually right, with the audio made uncertain on part of the training clips); the listener `toy-qwen2-audio`,
# which differs only in its training hints, is the control. Runs in about a minute on 2 cores.

# %%
import torch

from hooked_audio import HookedAudioTransformer
from hooked_audio.analysis import (
    LinearProbe, back_patching_hooks, back_patching_sweep, label_log_probs, last_position_resid,
    span_cosine_by_layer, text_dominance,
)
from hooked_audio.app.conflict_plots import plot_answers_by_layer, plot_back_patching
from hooked_audio.toy import evaluate, tasks

torch.set_grad_enabled(False)
textual = HookedAudioTransformer.from_pretrained("toy-qwen2-audio-textual")
listener = HookedAudioTransformer.from_pretrained("toy-qwen2-audio")
print(textual.cfg.n_layers, "decoder layers,", len(textual.hook_dict), "hook points")

# The held-out probe set asks each clip three times: without a hint, with a right one, with a wrong one (three
# hint positions, five phrasings). A conflict is the wrong-hint prompt.
TASKS = ["pitch", "beeps", "events_when", "events_order"]
probe = evaluate.make_eval_set(n_per_task=20, task_names=TASKS)
conflict = [s for s in probe if s.hint_kind == "wrong"]

# %% [markdown]
# ## 1. Three measures of text dominance
# `text_dominance` scores the conflict prompts; `hints=` cuts each hint out of its prompt to build the text-free
# run, which the flip rate and the hint effect need. `candidates="vocab"`: the answer is the argmax over the whole
# vocabulary, as on the organisms' cards. Measured (20 conflicts per task; 95 % intervals: Wilson for the rate,
# bootstrap for the hint effect; the flip rate is over the clips the model gets right without the hint, n in
# brackets):
#
# | task | textual: rate | flip rate | hint effect | listener: rate | flip rate | hint effect |
# |---|---|---|---|---|---|---|
# | pitch | 0.00 [0.00, 0.16] | 0.00 (20) | +0.41 [0.20, 0.63] | 0.00 [0.00, 0.16] | 0.00 (20) | +0.30 [0.07, 0.51] |
# | beeps | 0.40 [0.22, 0.61] | 0.25 (12) | +3.29 [2.89, 3.67] | 0.15 [0.05, 0.36] | 0.12 (17) | +1.65 [0.88, 2.48] |
# | events_when | 0.40 [0.22, 0.61] | 0.29 (17) | +2.91 [2.00, 4.01] | 0.05 [0.01, 0.24] | 0.00 (18) | +0.21 [-0.49, 0.94] |
# | events_order | 0.35 [0.18, 0.57] | 0.37 (19) | +3.91 [2.15, 5.73] | 0.00 [0.00, 0.16] | 0.00 (20) | +1.46 [0.40, 2.67] |
#
# The textual toy follows a wrong hint on about a third of the multi-event clips it gets right alone, and on one
# beeps clip in four; on pitch the hint moves its logits a little and its answers not at all (the within-model
# control). The listener is the between-model control: the same hints move it less on every task and flip fewer
# answers, though a wrong hint still flips 2 of the 17 beep counts it gets right alone (none of its "when does the X
# happen ?" or "what happens first / last ?" answers).

# %%
for name, model in [("textual", textual), ("listener", listener)]:
    result = text_dominance(
        model, evaluate.encode(model.processor, conflict), [s.answer for s in conflict], [s.hint for s in conflict],
        hints=[s.hint_text for s in conflict], candidates="vocab", groups=[s.task for s in conflict], n_boot=500)
    for task, r in result["by_group"].items():
        print(f"{name:>8} {task:>12}: rate {r['rate']:.2f} {tuple(round(x, 2) for x in r['rate_ci'])}, flip rate "
              f"{r['flip_rate']:.2f} (of {r['n_right_without_text']}), hint effect {r['hint_effect_mean']:+.2f} "
              f"{tuple(round(x, 2) for x in r['hint_effect_ci'])}")

# %% [markdown]
# ## 2. Where is the audio's answer lost? ("what happens first / last ?", textual toy)
# Three views of the conflict, layer by layer (0 = the embedding):
# - the AudioLens label lens at the last position: probability of A_a and of A_t among the five labels;
# - the cosine similarity of the audio span's and the text's mean residual (how far the streams have merged);
# - a linear probe fit on *audio-only* prompts (other clips) that reads the answer at the last position,
#   then read on the conflict prompts the model answered with the hinted word. If it still finds A_a there, the
#   audio evidence was suppressed downstream, not erased. Control: the same probe fit on shuffled labels.
#
# Measured (80 "what happens first / last ?" conflicts, 18 answered with the hinted word; the probe fit on 60 other
# audio-only clips): the lens favours A_t at layer 1 (0.53 vs 0.12) and A_a from layer 2 on (0.42 vs 0.37), ending
# at 0.73 vs 0.21 at the output (averaged over all 80); the spans' cosine stays at or below 0.26. The probe reads
# the answer on 0.81-0.91 of the text-free prompts from layer 2 on (chance 0.20, five events), and a little less
# often on the conflicts the audio won (0.66-0.85). On the 18 lost conflicts it reads A_a on 0.00-0.22 from layer 2
# on, never above chance by more than one conflict (0.22 = 4 of 18, at layer 5); the shuffled-label control reads
# 0.00-0.17, more than the real probe at layers 2-4 and less at layers 5-6, so the two do not separate: when the
# hint wins here, the audio's answer is not at the last position at any depth to be suppressed; the hint has taken
# its place by layer 2. (The previous textual sibling, traced on single-beep timing, showed the opposite, A_a still
# readable mid-network on 6 of 7 lost conflicts; that task now loses 1 conflict in 80, too few to trace.) Only the
# last position is probed.

# %%
TRACED = "events_order"  # heard at 0.98 without a hint, so a lost conflict is mostly the hint's doing
labels = list(tasks.TASKS_BY_NAME[TRACED].answers)
traced_set = evaluate.make_eval_set(n_per_task=80, task_names=[TRACED])  # a larger draw: few conflicts are lost
traced = [s for s in traced_set if s.hint_kind == "wrong"]
names = lambda n: "resid" in n or n == "ln_final.hook_scale"  # noqa: E731
_, cache = textual.run_with_cache(textual.to_inputs(evaluate.encode(textual.processor, traced)), names_filter=names)
audio_answer = torch.tensor([labels.index(s.answer) for s in traced])
text_answer = torch.tensor([labels.index(s.hint) for s in traced])
lens = label_log_probs(textual, cache, labels).exp()  # [layer, row, label]
rows = torch.arange(len(traced))
curves = {"lens P(audio answer)": lens[:, rows, audio_answer].mean(-1), "lens P(text answer)": lens[:, rows, text_answer].mean(-1),
          "cos(audio span, text)": span_cosine_by_layer(cache).mean(-1)}
for key, values in curves.items():
    print(f"{key:>24}: {[round(v, 2) for v in values.tolist()]}")

fit_samples = [s for s in tasks.make_probe_set(seed=11, n_per_task=60, task_names=[TRACED]) if s.hint is None]
_, fit_cache = textual.run_with_cache(textual.to_inputs(evaluate.encode(textual.processor, fit_samples)), names_filter=names)
x_fit, y_fit = last_position_resid(fit_cache), torch.tensor([labels.index(s.answer) for s in fit_samples])
free = [s for s in traced_set if s.hint is None]  # the same clips without the hint
_, free_cache = textual.run_with_cache(textual.to_inputs(evaluate.encode(textual.processor, free)), names_filter=names)
lost = lens[-1].argmax(-1) == text_answer  # conflicts the model answered with the hinted word
x_conflict, x_free = last_position_resid(cache), last_position_resid(free_cache)
y_free = torch.tensor([labels.index(s.answer) for s in free])
shuffled = y_fit[torch.randperm(len(y_fit), generator=torch.Generator().manual_seed(0))]
probe_curves = {key: [] for key in ("probe: no hint", "probe: conflict won", "probe: conflict lost", "shuffled-label probe: lost")}
for layer in range(x_fit.shape[0]):
    fitted = LinearProbe().fit(x_fit[layer], y_fit, len(labels))
    probe_curves["probe: no hint"].append(fitted.accuracy(x_free[layer], y_free))
    probe_curves["probe: conflict won"].append(fitted.accuracy(x_conflict[layer][~lost], audio_answer[~lost]))
    probe_curves["probe: conflict lost"].append(fitted.accuracy(x_conflict[layer][lost], audio_answer[lost]))
    control = LinearProbe().fit(x_fit[layer], shuffled, len(labels))
    probe_curves["shuffled-label probe: lost"].append(control.accuracy(x_conflict[layer][lost], audio_answer[lost]))
print(f"{int(lost.sum())} of {len(traced)} conflicts answered with the hinted word; probe accuracy for the audio answer by layer:")
for key, values in probe_curves.items():
    print(f"{key:>28}: {[round(v, 2) for v in values]}")
plot_answers_by_layer({**curves, **probe_curves}, ylabel="probability / accuracy / cosine", title=f"'{TRACED}' under conflict")

# %% [markdown]
# ## 3. Back-patching
# Cache the conflict run's `resid_post` over the audio span at a late source layer and write it into an earlier
# destination layer in a second pass of the same input (`back_patching_hooks`); the sweep scores every pair
# (source > destination). The pair is chosen on a dev half of the conflicts and tested on the other half, next to two
# controls: a random vector of the same norm as the patch's change at the same positions, and the same patch at the
# text positions instead of the audio. First the identity: source = destination must reproduce the run exactly.
#
# Measured: the identity holds bit for bit. On the dev half (0.17 unpatched) the best of the 15 pairs, (2, 1),
# gives 0.15 (the worst 0.35); on the test half (0.40 unpatched) it gives 0.40, the random vector of the same norm
# 0.40, and the same patch at the text positions 0.38. No pair lowers dominance by more than one dev conflict (of
# 40), and the chosen pair changes nothing on the test half, nor does the random vector; the text-position control
# moves it more (down by one conflict of 40): on this organism the late audio span carries no evidence that the
# earlier layers lack, so there is nothing for back-patching to restore (section 2: on lost conflicts the last
# position has lost the audio's answer by layer 2, whatever the audio span holds). A negative result, stated as such.

# %%
inputs = textual.to_inputs(evaluate.encode(textual.processor, conflict))
_, bp_cache = textual.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_resid_post"))
same = textual.run_with_hooks(inputs, fwd_hooks=back_patching_hooks(bp_cache, 2, 2))
print("source = destination reproduces the run exactly:", torch.equal(same, textual(inputs)))

ids = lambda words: torch.tensor([textual.to_single_token(w) for w in words])  # noqa: E731
dev, test = list(range(0, len(conflict), 2)), list(range(1, len(conflict), 2))


def dominance_rate(rows):
    text_ids, last = ids([conflict[r].hint for r in rows]), inputs.select_rows(rows).last_positions

    def rate(logits):
        final = logits[torch.arange(len(rows)), last]
        return float((final.argmax(-1) == text_ids).float().mean())
    return rate


pairs = [(s, d) for s in range(1, textual.cfg.n_layers) for d in range(s)]
dev_inputs, test_inputs = inputs.select_rows(dev), inputs.select_rows(test)
sweep = back_patching_sweep(textual, dev_inputs, dominance_rate(dev), pairs=pairs)
dev_base = dominance_rate(dev)(textual(dev_inputs))
best = min(pairs, key=lambda p: float(sweep[p]))
print(f"dev: unpatched rate {dev_base:.2f}; best pair {best} -> {float(sweep[best]):.2f}; worst "
      f"{float(sweep[~torch.isnan(sweep)].max()):.2f}")
plot_back_patching(sweep, dev_base)

_, test_cache = textual.run_with_cache(test_inputs, names_filter=lambda n: n.endswith("hook_resid_post"))
rate = dominance_rate(test)
for label, hooks in [
    ("unpatched", []),
    (f"back-patch {best}", back_patching_hooks(test_cache, *best)),
    ("random vector, same norm", back_patching_hooks(test_cache, *best, control="random")),
    ("same patch at the text", back_patching_hooks(test_cache, *best, positions="text")),
]:
    print(f"test {label:>26}: text-dominance rate {rate(textual.run_with_hooks(test_inputs, fwd_hooks=hooks)):.2f}")
