# %% [markdown]
# # AudioLens: in which layer does the model know what it heard?
#
# Yang et al.'s AudioLens reads each layer's residual stream at the answer position through the final norm
# and the unembedding, restricted to the task's labels, and asks whether the true label is on top
# (the *information score* of that layer). The *critical layer* is the score-weighted mean layer above
# (1 + alpha) x chance. *Audio masking* blocks attention to the audio to see where the answer is read from,
# *enrichment* adds an early layer's state back later, and the paper's three *prompt formats* ask whether a later
# critical layer goes with a lower accuracy. Runs on the bundled toy in well under a minute.

# %%
import torch

from hooked_audio import HookedAudioTransformer
from hooked_audio.analysis import (
    PROMPT_FORMATS, attribute_information, attribute_prompt_inputs, audio_masking_hooks, critical_layer,
    critical_layer_correlation, enrichment_sweep, information_scores, label_log_probs,
)
from hooked_audio.app.method_plots import plot_critical_layer_vs_accuracy, plot_information_by_layer
from hooked_audio.toy import evaluate, tasks

torch.set_grad_enabled(False)
model = HookedAudioTransformer.from_pretrained("toy-qwen2-audio")
print(model.cfg.n_layers, "decoder layers,", len(model.hook_dict), "hook points")


def task_batch(name, seed=5, n=16):
    labels = list(tasks.TASKS_BY_NAME[name].answers)
    samples = [s for s in tasks.make_probe_set(seed=seed, n_per_task=n, task_names=[name]) if s.hint is None]
    batch = model.to_inputs(evaluate.encode(model.processor, samples))
    return batch, labels, torch.tensor([labels.index(s.answer) for s in samples])


# %% [markdown]
# ## 1. Information by layer, and the critical layer
# On the bundled toy (seed 5, 16 clips per task) we measured: pitch and noise go from chance at the embedding to
# 0.50 / 0.69 at layer 2 (pitch still at chance), 0.81 / 0.88 at layer 3 and 1.0 from layer 4 (critical layers 4.70
# and 4.29); the harder beeps task reaches 0.81 (0.56 at layer 2, 0.81 at layers 3-4, 0.75 at layer 5, 0.69 at the
# output; critical layer 4.09). The output layer's score *is* the restricted accuracy.

# %%
curves, results = {}, {}
for name in ["pitch", "noise", "beeps"]:
    batch, labels, answers = task_batch(name)
    logits, cache = model.run_with_cache(batch, names_filter=lambda n: "resid" in n or n == "ln_final.hook_scale")
    lp = label_log_probs(model, cache, labels)
    scores = information_scores(lp, answers)
    curves[name] = scores
    results[name] = (batch, labels, answers, lp)
    print(f"{name:>6}: I = {[round(x, 2) for x in scores.tolist()]}, critical layer {critical_layer(scores, len(labels)):.2f}")
plot_information_by_layer(curves, title="toy-qwen2-audio: information by layer")

# %% [markdown]
# Split by the answer's correctness (correct = the output layer's restricted argmax), on beeps, the only
# task here with errors. Measured: the 11 correct items climb over the layers (0.64 at layer 2, 0.91 at layers
# 3-5, 1.0 at the output); the 5 wrong ones peak early (0.40 at layer 2, 0.60 at layers 3-4, 0.40 at layer 5) and
# end at 0: when the toy miscounts, the right count was on top at the answer position at layers 3-4 on 3 of those
# 5 clips (chance 1.25), and lost over layer 5 and the output.

# %%
batch, labels, answers, lp = results["beeps"]
correct = lp[-1].argmax(-1) == answers
for tag, rows in [("correct", correct), ("wrong", ~correct)]:
    print(tag, int(rows.sum()), [round(x, 2) for x in information_scores(lp[:, rows], answers[rows]).tolist()])

# %% [markdown]
# ## 2. Audio masking
# `audio_masking_hooks` adds the dtype's minimum to `hook_attn_scores` from the query positions to every audio
# key (hooking the scores puts those layers on the explicit attention path). Masking the *last* position only
# at all layers takes both tasks to chance, as does masking *every* query (measured: pitch 1.00 -> 0.50 -> 0.50,
# noise 1.00 -> 0.38 -> 0.38, chance 0.50 / 0.33): this toy's answer position reads the audio span itself, not a
# copy in the question's tokens (tutorial 06 finds the same by causal tracing). Control: on a text-only prompt
# the same hooks change nothing (no audio keys).


# %%
def masked_accuracy(batch, labels, answers, hooks):
    ids = torch.tensor([model.to_single_token(l) for l in labels])
    logits = model.run_with_hooks(batch, fwd_hooks=hooks)
    return (logits[torch.arange(len(answers)), batch.last_positions][:, ids].argmax(-1) == answers).float().mean().item()


for name in ["pitch", "noise"]:
    batch, labels, answers, _ = results[name]
    print(f"{name}: clean {masked_accuracy(batch, labels, answers, []):.2f}, last query masked "
          f"{masked_accuracy(batch, labels, answers, audio_masking_hooks(batch)):.2f}, every query masked "
          f"{masked_accuracy(batch, labels, answers, audio_masking_hooks(batch, query='all')):.2f}, chance {1 / len(labels):.2f}")

# %% [markdown]
# ## 3. Enrichment, chosen on one split and tested on another
# Add lam * h^src_last to h^(src+k)_last (k = 5, clipped to this 6-layer model's last layer). `enrichment_sweep`
# follows the paper's protocol: src is the block where the *probing* split's wrongly answered items carry the most
# information, lam is swept on a disjoint *test* split, and the baseline draws a random source layer per item
# (5 seeds, mean and std).

# %%
probe, labels, probe_answers = task_batch("beeps", seed=5)
test, _, test_answers = task_batch("beeps", seed=7, n=24)
sweep = enrichment_sweep(model, probe, probe_answers, test, test_answers, labels, lams=(0.0, 0.5, 1.0, 2.0))
print(f"source layer {sweep.source_layer} -> target {sweep.target_layer}")
for lam, chosen, mean, std in zip(sweep.lams, sweep.chosen, sweep.random_mean, sweep.random_std):
    print(f"lam {lam}: chosen source {chosen:.2f}; random source per item {mean:.2f} ± {std:.2f}")
# Measured (16 probing, 24 test clips): source block 2 -> target 5; lam 0 / 0.5 / 1 / 2 give 0.92 / 0.92 / 0.92 /
# 0.88 from the chosen source, against 0.92 / 0.91 ± 0.02 / 0.88 ± 0.02 / 0.85 ± 0.02 from a random source layer
# per item. Enrichment does not help here: the test clips are counted right at 0.92 (22 of 24) unpatched, and
# adding an earlier state back never gains an item; the chosen source costs less than a random one (nothing at
# lam 0.5-1 where a random layer costs up to one item, one item at lam 2 against 1.5), so the wrong items' peak
# layer is the least harmful source, but there is no gain to attribute to it.

# %% [markdown]
# ## 4. Prompt formats, and does a later critical layer mean a lower accuracy?
# AudioLens asks each attribute three ways, the assistant's turn prefilled and left open so the last token is
# where the attribute is predicted: P1 the clip alone, P2 the clip and the question, P3 the question with the
# options listed. `attribute_prompt_inputs` renders them with the checkpoint's own chat template (the toy's
# word-level vocabulary has no "options:", so P3 lists them as "one or two or three"). The toy was trained on the
# question without a prefill ("native"), so P1-P3 are prompts it never saw: a spread of accuracies to correlate.
# `critical_layer_correlation` gives Pearson's r between critical layer and accuracy over the task x format groups.

# %%
groups = {}
for name in ["pitch", "noise", "beeps", "when", "digit", "gender", "language"]:
    labels = list(tasks.TASKS_BY_NAME[name].answers)
    samples = [s for s in tasks.make_probe_set(seed=5, n_per_task=16, task_names=[name]) if s.hint is None]
    answers = torch.tensor([labels.index(s.answer) for s in samples])
    native = model.to_inputs(evaluate.encode(model.processor, samples))
    groups[f"{name}/native"] = attribute_information(model, native, labels, answers)
    for fmt in PROMPT_FORMATS:
        inputs = attribute_prompt_inputs(model, [s.waveform for s in samples], fmt, "the answer is", question=samples[0].question,
                                         options=labels, options_template="{question} {options}", join=" or ", sampling_rate=16000)
        groups[f"{name}/{fmt}"] = attribute_information(model, inputs, labels, answers)
for group, info in groups.items():
    print(f"{group:>16}: accuracy {info.accuracy:.2f}, critical layer last {info.critical_layer():.2f}, "
          f"penultimate {info.critical_layer('penultimate'):.2f}")
result = critical_layer_correlation(groups)
print(f"Pearson r = {result['r']:.2f} (p = {result['p']:.4f}, {result['n']} groups; undefined: {result['undefined']})")
plot_critical_layer_vs_accuracy(result, title="toy-qwen2-audio")
# Measured (16 clips per task): accuracy 0.56-1.00, critical layers 3.79-4.70 at the last position; P1 (no
# question) costs digit (1.00 -> 0.75), gender (1.00 -> 0.81), language (0.88 -> 0.75), beeps (0.69 -> 0.56) and
# "when" (1.00 -> 0.94); P2 costs beeps too (0.69 -> 0.56), P3 language (0.88 -> 0.69) and beeps (0.69 -> 0.62). At the penultimate position four groups print nan: no
# layer's information there exceeds (1 + alpha) / |Y|, so the critical layer is undefined (not 0).
# Pearson r = +0.26 (p = 0.18, 28 groups; the 4 formats of a task share its clips, so the groups are not
# independent and this p is if anything too small): no relation between critical layer and accuracy on this toy, and not the
# negative one AudioLens reports on real LALMs. Every group's critical layer lies within about one layer of the
# others (3.79-4.70), so the spread of accuracies has little spread in depth to go with; the hard task, beeps, is
# hard in every format without its critical layer moving with it. The listener it replaced gave r = +0.16
# (p = 0.41), the one before r = -0.40 (p = 0.03), carried by one group (beeps/P1, critical layer 5.33 and
# accuracy 0.44; without it about -0.1), and the earlier, effectively 4-layer toy r = -0.57.
