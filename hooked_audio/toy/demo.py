"""``hooked-audio demo``: how the toy audio-language model listens, as an offline HTML report.

1. answers the bundled example clips' questions;
2. logit lens: at which layer the right answer appears, and at which positions (audio or text);
3. ranks decoder heads by attention from the answer position to the audio;
4. ablates the top audio heads and, as the control, as many random heads (several draws), both by
   resampling (another clip's head output) and by zeroing;
5. shows where in time the top head looks (on a "when does the beep happen" clip);
6. measures text dominance: how often a wrong text hint beats the audio.
Numbers go to ``results.json``, figures to ``plots/``, and both into ``report.html``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..analysis.ablation import head_ablation_hooks, random_heads, same_prompt_donors
from ..analysis.heads import audio_attention_by_head, top_heads
from ..analysis.logit_lens import at_last_positions, logit_lens
from ..audio import load_waveform
from ..loading import from_pretrained
from ..app import plots
from ..app.report import HtmlReport

N_RANDOM_DRAWS = 4
ABLATION_MODES = ("resample", "zero")
PROBE_CLIPS_PER_TASK = 8


def _toy():
    """The toy package's task and evaluation helpers (imported lazily: they are data-generation code)."""
    from . import evaluate, tasks

    return tasks, evaluate


def probe_tasks() -> list[str]:
    """Single-question tasks whose clips can be synthesized here (the speech tasks need Debian's espeak-ng).

    The multi-event tasks are left out: their questions vary from clip to clip, so resample ablation would
    find no other clip with the same prompt."""
    tasks, _ = _toy()
    have_espeak = shutil.which("espeak-ng") is not None
    return [t.name for t in tasks.TASKS
            if (have_espeak or t.name not in tasks.SPEECH_TASKS) and t.name not in tasks.EVENT_TASKS]


def accuracy(model, processor, samples, make_hooks=lambda batch: []) -> dict[str, float]:
    """Per-task and overall next-token accuracy of ``model`` under the hooks ``make_hooks(batch)`` returns.

    One batch for all samples (one forward per condition); rows with the same prompt are each other's
    donors for resample ablation."""
    _, evaluate = _toy()
    batch = model.to_inputs(evaluate.encode(processor, samples))
    logits = model.run_with_hooks(batch, fwd_hooks=list(make_hooks(batch)))
    next_ids = logits[torch.arange(len(samples)), batch.last_positions].argmax(-1)
    predicted = model.tokenizer.convert_ids_to_tokens(next_ids.tolist())
    hits: dict[str, list[bool]] = {}
    for p, s in zip(predicted, samples):
        hits.setdefault(s.task, []).append(p == s.answer)
    result = {task: float(np.mean(h)) for task, h in hits.items()}
    result["overall"] = float(np.mean([h for task_hits in hits.values() for h in task_hits]))
    return result


def ablated_accuracy(model, processor, samples, heads, mode: str) -> dict[str, float]:
    """``accuracy`` with ``heads`` zeroed (``mode="zero"``) or given another clip's output ("resample")."""
    def make_hooks(batch):
        donors = same_prompt_donors(batch) if mode == "resample" else None
        return head_ablation_hooks(heads, mode=mode, donors=donors)

    return accuracy(model, processor, samples, make_hooks)


def ablation_summary(n_heads: int, clean: float, resample: dict, zero: dict) -> str:
    """The ablation section's text: what was done, the numbers, and what they do and do not show."""
    top_r, rand_r = resample["top_heads"]["overall"], resample["random_heads_mean"]["overall"]
    top_z, rand_z = zero["top_heads"]["overall"], zero["random_heads_mean"]["overall"]
    text = (f"Resample ablation gives each clip the heads' outputs from another clip with the same question (the "
            f"heads keep working, on the wrong audio). For the top {n_heads} audio-attending heads it takes accuracy "
            f"from {clean:.2f} to {top_r:.2f}; for {n_heads} random other heads, to {rand_r:.2f}. Zeroing the heads "
            f"instead gives {top_z:.2f} (top) and {rand_z:.2f} (random). ")
    if top_r < rand_r - 0.05:
        text += "The heads that attend most to the audio carry the audio information the answer is read from. "
    else:
        text += "Here the most audio-attending heads carry no more of the answer than random heads. "
    if top_z >= rand_z - 0.05 and top_r < rand_r - 0.05:
        text += ("Zeroing them hurts little, which fits redundancy: if other heads carry the same information, removing "
                 "it from these heads leaves the answer intact, whereas another clip's information in them competes. "
                 "Zeroing random heads also removes work that does not depend on the clip, which resampling leaves in "
                 "place: zero ablation asks whether a head is needed at all, resample ablation whether it carries the audio.")
    return text


def text_dominance_summary(stats: dict) -> str:
    """One sentence relating where the text wins to how well the audio alone is understood."""
    per_task = {t: v for t, v in stats.items() if t != "overall" and "/" not in t}
    most = max(per_task, key=lambda t: per_task[t]["text_dominance_rate"])
    hardest = min(per_task, key=lambda t: per_task[t]["accuracy"])
    if per_task[most]["text_dominance_rate"] == 0:
        return "No wrong hint wins on any task."
    text = (f"The text wins most often on {most} ({per_task[most]['text_dominance_rate']:.2f}, audio-only accuracy "
            f"{per_task[most]['accuracy']:.2f})")
    if most == hardest:
        return text + ", the task the model hears worst: it leans on the text where the audio is hard."
    return text + f"; the task it hears worst is {hardest} ({per_task[hardest]['accuracy']:.2f})."


@torch.no_grad()
def run_demo(model_name: str, out_dir: Path, n_heads: int = 8, seed: int = 0) -> dict:
    tasks, evaluate = _toy()
    out_dir = Path(out_dir)
    plot_dir = out_dir / "plots"
    progress = tqdm(total=7, desc="demo", unit="step")

    model = from_pretrained(model_name)
    processor = model.processor
    progress.update()
    report = HtmlReport(f"hooked_audio demo: how {model_name} listens")
    results: dict = {"model": model_name, "n_parameters": sum(p.numel() for p in model.parameters())}
    report.paragraph(
        f"{model_name}: {model.cfg.n_layers} decoder layers x {model.cfg.n_heads} heads, "
        f"{model.cfg.audio.n_layers} audio-encoder layers, {results['n_parameters'] / 1e6:.1f}M parameters, "
        f"{1 / model.cfg.seconds_per_audio_token:g} audio tokens per second. Everything below is computed by "
        "hook functions on this model; the numbers are in results.json."
    )

    # 1. The bundled examples.
    examples_dir = Path(__file__).parent / "examples"
    examples = json.loads((examples_dir / "examples.json").read_text())
    samples = [
        tasks.Sample(e["task"], load_waveform(examples_dir / e["file"]), e["question"], e["answer"]) for e in examples
    ]
    batch = model.to_inputs(evaluate.encode(processor, samples))
    logits, cache = model.run_with_cache(batch, names_filter=lambda n: ("resid" in n and "audio" not in n) or n == "ln_final.hook_scale")
    last = batch.last_positions
    rows = torch.arange(len(samples))
    answer_ids = torch.tensor([model.tokenizer.convert_tokens_to_ids(s.answer) for s in samples])
    probs = logits[rows, last].float().softmax(-1)
    predicted = model.tokenizer.convert_ids_to_tokens(probs.argmax(-1).tolist())
    results["examples"] = [
        {"file": e["file"], "task": s.task, "question": s.question, "expected": s.answer, "answer": p,
         "p_expected": round(float(probs[i, answer_ids[i]]), 4)}
        for i, (e, s, p) in enumerate(zip(examples, samples, predicted))
    ]
    report.heading("1. Answers on the bundled clips")
    report.table(["clip", "question", "expected", "model says", "P(expected)"],
                 [[r["file"], r["question"], r["expected"], r["answer"], f"{r['p_expected']:.3f}"] for r in results["examples"]])
    progress.update()

    # 2. Logit lens.
    lens = logit_lens(model, cache)
    at_last = at_last_positions(lens, last).exp()  # [layer, example, vocab]
    curve = at_last[:, rows, answer_ids].numpy()
    results["logit_lens"] = {"layers": lens.labels, "p_expected_by_layer": {s.task: [round(float(v), 4) for v in curve[:, i]] for i, s in enumerate(samples)}}
    first_layer = {s.task: next((lens.labels[l] for l in range(len(lens.labels)) if curve[l, i] > 0.5), "never") for i, s in enumerate(samples)}
    results["logit_lens"]["first_layer_above_half"] = first_layer
    png = plots.plot_lens_curves(curve, lens.labels, [s.task for s in samples], plot_dir / "logit_lens.png",
                                 "Logit lens at the answer position")
    report.heading("2. Logit lens: where the answer appears")
    report.paragraph("Probability of the correct answer when each layer's residual stream at the answer position is "
                     "decoded through the final norm and unembedding. First layer where it passes 0.5: "
                     + ", ".join(f"{t}: {l}" for t, l in first_layer.items()) + ".")
    report.image(png, "P(correct answer) by layer, one line per example clip")
    target = answer_ids[0]
    real = batch.attention_mask[0].bool().cpu()  # the first clip's row, its left padding left out
    first = int(real.nonzero()[0])
    heat = lens.target_prob(answer_ids)[:, 0][:, real].numpy()
    span = batch.audio_spans[0][0]
    tokens = [t for t, keep in zip(model.to_str_tokens(batch, row=0), real.tolist()) if keep]
    png = plots.plot_lens_heatmap(heat, lens.labels, tokens, (span.start - first, span.end - first),
                                  model.cfg.seconds_per_audio_token, plot_dir / "logit_lens_positions.png",
                                  f"P({model.tokenizer.convert_ids_to_tokens(int(target))}) at every layer and position ({samples[0].task} clip)")
    report.image(png, "The same lens at every position: the shaded band is the audio span (grid lines every second)")
    progress.update()

    # 3. Audio-attending heads, on a probe set of audio-only questions.
    hinted = tasks.make_probe_set(seed, PROBE_CLIPS_PER_TASK, task_names=probe_tasks())
    probe = [s for s in hinted if s.hint is None]
    probe_batch = model.to_inputs(evaluate.encode(processor, probe))
    _, pattern_cache = model.run_with_cache(probe_batch, names_filter=lambda n: n.endswith("hook_pattern") and not n.startswith("audio"))
    scores = audio_attention_by_head(pattern_cache, model.cfg.n_layers)
    del pattern_cache
    best = top_heads(scores, n_heads)
    results["heads"] = {"audio_attention": [[round(float(v), 4) for v in row] for row in scores],
                        "top": [f"L{l}H{h}" for l, h in best]}
    png = plots.plot_head_scores(scores.numpy(), plot_dir / "audio_heads.png",
                                 "Attention mass from the answer position to the audio")
    report.heading("3. Which decoder heads read the audio")
    report.paragraph(f"Mean attention from the answer position to the audio tokens over {len(probe)} audio-only probe "
                     f"questions ({', '.join(probe_tasks())}). Top {n_heads}: {', '.join(results['heads']['top'])}.")
    report.image(png, "Audio attention per decoder head")
    progress.update()

    # 4. Ablation: top heads versus random heads, two ways.
    clean = accuracy(model, processor, probe)
    controls = [random_heads(model.cfg.n_layers, model.cfg.n_heads, n_heads, exclude=best, seed=seed + d)
                for d in range(N_RANDOM_DRAWS)]
    results["ablation"] = {"clean": clean, "n_random_draws": N_RANDOM_DRAWS, "heads": results["heads"]["top"],
                           "random_heads": [[f"L{l}H{h}" for l, h in c] for c in controls]}
    for mode in ABLATION_MODES:
        top = ablated_accuracy(model, processor, probe, best, mode)
        draws = [ablated_accuracy(model, processor, probe, heads, mode) for heads in controls]
        results["ablation"][mode] = {"top_heads": top, "random_heads_mean": {k: float(np.mean([d[k] for d in draws])) for k in clean},
                                     "random_heads_overall": [d["overall"] for d in draws]}
    resample, zero = results["ablation"]["resample"], results["ablation"]["zero"]
    png = plots.plot_ablation(
        {"clean": clean["overall"],
         f"top {n_heads} heads, resampled": resample["top_heads"]["overall"],
         f"{n_heads} random heads, resampled": resample["random_heads_mean"]["overall"],
         f"top {n_heads} heads, zeroed": zero["top_heads"]["overall"],
         f"{n_heads} random heads, zeroed": zero["random_heads_mean"]["overall"]},
        plot_dir / "ablation.png", f"Accuracy on audio-only questions (random: mean of {N_RANDOM_DRAWS} draws)",
        chance=float(np.mean([1 / len(tasks.TASKS_BY_NAME[s.task].answers) for s in probe])))
    report.heading("4. Ablating the audio heads")
    report.paragraph(ablation_summary(n_heads, clean["overall"], resample, zero))
    report.image(png, "Accuracy under head ablation")
    report.table(["task", "clean", "top resampled", "random resampled", "top zeroed", "random zeroed"],
                 [[t, f"{clean[t]:.2f}", f"{resample['top_heads'][t]:.2f}", f"{resample['random_heads_mean'][t]:.2f}",
                   f"{zero['top_heads'][t]:.2f}", f"{zero['random_heads_mean'][t]:.2f}"] for t in clean])
    progress.update()

    # 5. Where in time the top head looks, on a "when" clip.
    when = [s for s in probe if s.task == "when"][:3]
    if when:
        layer, head = best[0]
        when_batch = model.to_inputs(evaluate.encode(processor, when))
        _, c = model.run_with_cache(when_batch, names_filter=[f"blocks.{layer}.attn.hook_pattern"])
        report.heading(f"5. Where L{layer}H{head} listens")
        results["attention_in_time"] = []
        for i, sample in enumerate(when):
            span = when_batch.audio_spans[i][0]
            attn = c["pattern", layer][i, head, when_batch.last_positions[i], span.start:span.end].numpy()
            peak = float((attn.argmax() + 0.5) * model.cfg.seconds_per_audio_token)
            results["attention_in_time"].append({"answer": sample.answer, "peak_seconds": round(peak, 2)})
            png = plots.plot_attention_over_time(sample.waveform, 16000, attn, model.cfg.seconds_per_audio_token,
                                                 plot_dir / f"attention_time_{i}.png",
                                                 f"beep at the {sample.answer}: L{layer}H{head} attention peaks at {peak:.2f} s")
            report.image(png, f"Waveform (grey) and the head's attention over audio tokens (red); answer: {sample.answer}")
    progress.update()

    # 6. Text dominance.
    stats = evaluate.evaluate(lambda inputs: model(inputs), processor, hinted)
    results["text_dominance"] = stats
    overall = stats["overall"]
    report.heading("6. Text dominance: does a wrong hint beat the audio?")
    report.paragraph(
        f"Audio only: {overall['accuracy']:.2f} correct. With a correct hint: {overall['accuracy_correct_hint']:.2f}. "
        f"With a wrong hint: {overall['accuracy_wrong_hint']:.2f} correct, and the model repeats the wrong hint "
        f"{overall['text_dominance_rate']:.2f} of the time; among clips it answers right without a hint, the wrong "
        f"hint flips {overall['flip_rate'] or 0:.2f} of them. " + text_dominance_summary(stats)
    )
    order = [t for t in stats if t != "overall" and "/" not in t] + ["overall"]
    report.table(["task", "audio only", "correct hint", "wrong hint", "wrong hint wins", "flip rate", "hint effect"],
                 [[t, stats[t]["accuracy"], stats[t]["accuracy_correct_hint"], stats[t]["accuracy_wrong_hint"],
                   stats[t]["text_dominance_rate"], stats[t]["flip_rate"], stats[t]["hint_effect"]] for t in order])
    progress.update()

    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    report.write(out_dir / "report.html")
    progress.close()
    print(f"wrote {out_dir / 'report.html'}, {out_dir / 'results.json'} and {len(list(plot_dir.glob('*.png')))} plots")
    return results
