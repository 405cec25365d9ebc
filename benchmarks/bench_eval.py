"""Evaluation throughput (items/s) of ``hooked_audio.evaluation.evaluate`` against the loop a user would write
with the raw HF model, in one run, on the bundled toy organism.

    python benchmarks/bench_eval.py [--items 96] [--batch-size 16] [--repeats 3] [--threads 2] [--out benchmarks/results_eval.md]

A manifest of toy clips (wav files, tone tasks, choices given) is written to a temporary folder. Both sides read
the wavs, build the chat prompt with the checkpoint's processor, run one batched forward per batch and take the
restricted argmax over the choices' first tokens; ours also writes one JSON line per item (resumable), a
summary with bootstrap intervals and the run's settings. The predictions must agree (asserted). Rows:
1. ``evaluate`` (restricted scoring, no hooks) vs the hand-written HF loop            (target <= 1.2x)
2. the same with a steering hook (``--steer``) active, for scale
Peak resident memory of the process is printed too (``resource.getrusage``; monotonic, so it is the whole run's).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile
import torch

from hooked_audio import HookedAudioTransformer
from report import verdict, write_report
from hooked_audio.datasets import load_dataset
from hooked_audio.evaluation.runner import evaluate
from hooked_audio.toy import tasks
from hooked_audio.toy.signals import SAMPLE_RATE

TONE_TASKS = ["pitch", "noise", "beeps", "when"]


def write_manifest(folder: Path, n_items: int) -> Path:
    """``n_items`` clips, the tone tasks in turn (a probe set comes grouped by task: its first items are one task)."""
    per_task = -(-n_items // len(TONE_TASKS))
    samples = [s for s in tasks.make_probe_set(seed=3, n_per_task=per_task, task_names=TONE_TASKS) if s.hint is None]
    by_task = [[s for s in samples if s.task == task] for task in TONE_TASKS]
    interleaved = [group[i] for i in range(per_task) for group in by_task if i < len(group)]
    rows = []
    for index, sample in enumerate(interleaved[:n_items]):
        path = folder / f"clip_{index:04d}.wav"
        soundfile.write(path, sample.waveform, SAMPLE_RATE)
        choices = list(tasks.TASKS_BY_NAME[sample.task].answers)
        rows.append({"id": f"item{index}", "audio": path.name, "question": sample.question, "answer": sample.answer,
                     "choices": choices, "task": sample.task})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


@torch.no_grad()
def hf_loop(hf_model, processor, manifest: Path, batch_size: int) -> list[str]:
    """What a user writes without the library: read, template, process, forward, restricted argmax."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    predictions = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        clips = [soundfile.read(manifest.parent / r["audio"], dtype="float32")[0] for r in batch]
        texts = [processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": r["question"]}]}],
            add_generation_prompt=True, tokenize=False) for r in batch]
        inputs = processor(text=texts, audio=clips, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
        logits = hf_model(**inputs).logits[:, -1]
        for row, last in zip(batch, logits):
            ids = [tokenizer.encode(c, add_special_tokens=False)[0] for c in row["choices"]]
            predictions.append(row["choices"][int(last[ids].argmax())])
    return predictions


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_eval.md")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = HookedAudioTransformer.from_pretrained("toy-qwen2-audio")
    from transformers import Qwen2AudioForConditionalGeneration

    from hooked_audio.loading import resolve_checkpoint

    hf_model = Qwen2AudioForConditionalGeneration.from_pretrained(resolve_checkpoint("toy-qwen2-audio")).eval()
    folder = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    manifest = write_manifest(folder, args.items)
    dataset = load_dataset(f"manifest:{manifest}")
    direction = folder / "direction.pt"
    torch.save(torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 1e-3, direction)
    runs = {"ours": [], "ours_steer": [], "hf": []}
    ours_predictions = hf_predictions = None
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name in runs:
            start = time.perf_counter()
            if name == "hf":
                hf_predictions = hf_loop(hf_model, model.processor, manifest, args.batch_size)
            else:
                out = folder / f"{name}_{repeat}.jsonl"
                steer = [f"layer=2,file={direction},scale=1"] if name == "ours_steer" else None
                evaluate(model, dataset, str(out), batch_size=args.batch_size, steer=steer, progress=False)
                if name == "ours":
                    ours_predictions = [json.loads(l)["prediction"] for l in out.read_text().splitlines()]
            if repeat:
                runs[name].append(time.perf_counter() - start)
    assert ours_predictions == hf_predictions, "the evaluation runner and the HF loop disagree"
    rate = {name: args.items / statistics.median(times) for name, times in runs.items()}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "# hooked_audio evaluation throughput",
        "",
        f"`python benchmarks/bench_eval.py --items {args.items} --batch-size {args.batch_size} --repeats {args.repeats} "
        f"--threads {args.threads}` on {platform.machine()}, torch {torch.__version__}, CPU float32, toy-qwen2-audio, "
        f"the tone tasks ({', '.join(TONE_TASKS)}) in turn, restricted scoring over each item's choices; medians of {args.repeats} interleaved runs after a warm-up. "
        f"Same predictions as the HF loop asserted. Peak resident memory of the whole run: {peak_mb:.0f} MB.",
        "",
        "| measurement | ours (items/s) | reference | reference (items/s) | time ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, what, target in [("ours", "evaluate (manifest, restricted)", 1.2),
                               ("ours_steer", "evaluate + --steer (one layer)", None)]:
        ratio = rate["hf"] / rate[name]
        lines.append(f"| {what} | {rate[name]:.1f} | hand-written HF loop | {rate['hf']:.1f} | {ratio:.2f}x | {verdict(ratio, target)} |")
    return write_report(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
