"""Held-out evaluation of the toy model: per-task accuracy with confidence intervals and text dominance.

The model's answer is the argmax over the full vocabulary of the next-token logits at the last prompt
position (right after `<|im_start|>assistant\\n`). `evaluate` accepts either an HF model or any callable
`logits_fn(inputs) -> logits [batch, pos, vocab]`, so a hooked re-implementation can be scored on
exactly the same inputs.

Text dominance is measured three ways on prompts whose hint is wrong (each paired with the same clip asked
without a hint):
- ``text_dominance_rate``: the share of wrong-hint prompts answered with the hinted word;
- ``flip_rate``: among clips answered right without the hint, the share answered with the hinted word
  once the wrong hint is added;
- ``hint_effect``: the mean change, caused by adding the wrong hint, of logit(hinted word) minus
  logit(true answer).
"""

from __future__ import annotations

import hashlib

from collections import defaultdict
from typing import Callable

import numpy as np
import torch
from scipy.stats import binomtest

from ..audio.processing import chat_templater, process, takes_no_audio
from .signals import SAMPLE_RATE
from .tasks import HINT_POSITIONS, HINT_TEMPLATES, SHIFT_FACTORS, Sample, make_probe_set, shifted_split
from .tokenizer import IM_END

EVAL_SEED = 20_240_917  # any seed other than the training seed gives held-out clips
EVAL_CLIPS_PER_TASK = 100


def make_eval_set(seed: int = EVAL_SEED, n_per_task: int = EVAL_CLIPS_PER_TASK, split: str = "test",
                  task_names: list[str] | None = None) -> list[Sample]:
    """The fixed held-out set: n_per_task clips per task, each with no hint, a right hint, a wrong hint."""
    return make_probe_set(seed, n_per_task, task_names=task_names, split=split)


def evaluate_shift_factors(model_or_callable, processor, seed: int = EVAL_SEED,
                           n_per_task: int = EVAL_CLIPS_PER_TASK) -> dict[str, dict]:
    """``evaluate`` on audio-only clips that shift one of ``SHIFT_FACTORS`` alone (the rest in distribution), per
    factor and scope (task, question type, overall): accuracy, its interval and count. Which shift of the
    ``"shifted"`` split costs which task its accuracy."""
    out = {}
    for factor in SHIFT_FACTORS:
        samples = [s for s in make_eval_set(seed, n_per_task, split=shifted_split(factor)) if s.hint is None]
        out[factor] = {scope: {"accuracy": r["accuracy"], "n_audio_only": r["n_audio_only"],
                               "intervals": {"accuracy": r["intervals"]["accuracy"]}}
                       for scope, r in evaluate(model_or_callable, processor, samples).items()}
    return out


def render_prompt(processor, sample: Sample) -> str:
    """The chat prompt up to and including `<|im_start|>assistant\\n` (one unexpanded `<|AUDIO|>`); for the
    Voxtral toy, up to `[/INST]` (one unexpanded `[AUDIO]`, from its tokenizer's chat template)."""
    content = [{"type": "text", "text": sample.text_before_audio + " "}] if sample.text_before_audio else []
    content += [{"type": "audio"}, {"type": "text", "text": sample.text}]
    messages = [{"role": "user", "content": content}]
    return chat_templater(processor).apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(processor, samples: list[Sample], with_answers: bool = False) -> dict:
    """Processor inputs for a batch; with_answers appends `answer<|im_end|>` (Voxtral: `answer</s>`) for
    teacher forcing."""
    end = processor.tokenizer.eos_token if takes_no_audio(processor) else IM_END
    texts = [render_prompt(processor, s) + (f"{s.answer}{end}" if with_answers else "") for s in samples]
    waveforms = [s.waveform for s in samples]
    return process(processor, texts, waveforms, SAMPLE_RATE)


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, for left or right padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.bool() * positions).max(dim=1).values


def _as_logits_fn(model_or_callable) -> Callable[[dict], torch.Tensor]:
    """An HF model (its output's ``.logits``), a ``HookedAudioTransformer`` (logits itself) or a callable."""
    if isinstance(model_or_callable, torch.nn.Module):
        def logits_fn(inputs):
            out = model_or_callable(**inputs)
            return out.logits if hasattr(out, "logits") else out
        return logits_fn
    return model_or_callable


def _clip_key(sample: Sample) -> tuple:
    """The same clip asked with and without a hint: ``item`` numbers clips within one probe set only, so sets
    joined together (two seeds, two splits) are told apart by the waveform itself."""
    return sample.task, sample.item, hashlib.sha1(np.ascontiguousarray(sample.waveform).tobytes()).hexdigest()


def _instruction(question: str) -> str:
    """The leading instruction of a multi-event question: none, whole, focus (the event named again in the
    question) or focus_only (named in the instruction only: "focus on the X . when does it happen ?")."""
    if question.startswith("listen"):
        return "whole"
    if question.startswith("focus"):
        return "focus_only" if "when does it happen" in question else "focus"
    return "none"


@torch.no_grad()
def next_token_logits(model_or_callable, processor, samples: list[Sample], batch_size: int = 64) -> torch.Tensor:
    """[n_samples, vocab] logits of the token after each sample's prompt."""
    logits_fn = _as_logits_fn(model_or_callable)
    out = []
    for start in range(0, len(samples), batch_size):
        inputs = encode(processor, samples[start : start + batch_size])
        logits = logits_fn(dict(inputs))
        out.append(logits[torch.arange(logits.shape[0]), last_positions(inputs["attention_mask"])].float())
    return torch.cat(out) if out else torch.zeros(0, 0)


def predict(model_or_callable, processor, samples: list[Sample], batch_size: int = 64) -> list[str]:
    """The predicted next token (as a string) after each sample's prompt."""
    logits = next_token_logits(model_or_callable, processor, samples, batch_size)
    return processor.tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())


def rate(hits: list[bool]) -> dict | None:
    """Share of True with its 95 % Wilson score interval (scipy), or None for no trials."""
    if not hits:
        return None
    if any(h not in (0, 1) for h in hits):  # True / False (or 0 / 1): a count of 2 would be a rate above one
        raise ValueError(f"hits must be True / False per trial, got {sorted({h for h in hits if h not in (0, 1)})[:3]}")
    k, n = int(sum(hits)), len(hits)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"rate": round(k / n, 4), "n": n, "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 3) if values else None


def evaluate(model_or_callable, processor, samples: list[Sample], batch_size: int = 64) -> dict:
    """Per-task and overall statistics (rates as floats; ``intervals`` holds counts and 95 % CIs).

    accuracy: audio-only prompts. accuracy_correct_hint: prompts whose hint is right.
    accuracy_wrong_hint, text_dominance_rate, flip_rate, hint_effect: prompts whose hint is wrong (see the
    module docstring). Also per question type (``by_kind``: the multi-event task's when / first / last, and
    with which leading instruction) and per hint phrasing and position (``by_hint``).
    """
    logits = next_token_logits(model_or_callable, processor, samples, batch_size)
    tokenizer = processor.tokenizer
    predictions = tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
    audio_only = {}  # clip -> (correct?, logits row)
    for sample, predicted, row in zip(samples, predictions, logits):
        if sample.hint is None:
            audio_only[_clip_key(sample)] = (predicted == sample.answer, row)

    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for sample, predicted, row in zip(samples, predictions, logits):
        scopes = [sample.task, "overall"]
        if sample.kind and sample.kind != sample.task:
            scopes += [f"{sample.task}/{sample.kind}", f"{sample.task}/{sample.kind}/{_instruction(sample.question)}"]
        if sample.hint is not None:
            scopes += [f"hint_template/{sample.hint_template}", f"hint_position/{sample.hint_position}"]
        correct = predicted == sample.answer
        for scope in scopes:
            group = groups[scope]
            if sample.hint_kind == "none":
                group["accuracy"].append(correct)
            elif sample.hint_kind == "correct":
                group["accuracy_correct_hint"].append(correct)
            else:
                group["accuracy_wrong_hint"].append(correct)
                group["text_dominance_rate"].append(predicted == sample.hint)
                paired = audio_only.get(_clip_key(sample))
                if paired is not None:
                    was_right, plain = paired
                    hint_id, answer_id = tokenizer.convert_tokens_to_ids([sample.hint, sample.answer])
                    if was_right:
                        group["flip_rate"].append(predicted == sample.hint)
                    group["hint_effect"].append(float((row[hint_id] - row[answer_id]) - (plain[hint_id] - plain[answer_id])))
    names = ("accuracy", "accuracy_correct_hint", "accuracy_wrong_hint", "text_dominance_rate", "flip_rate")
    results = {}
    for scope, group in groups.items():
        intervals = {name: rate(group[name]) for name in names}
        results[scope] = {name: (v["rate"] if v else None) for name, v in intervals.items()} | {
            "hint_effect": _mean(group["hint_effect"]), "n_audio_only": len(group["accuracy"]), "intervals": intervals}
    return results


def hint_style_names() -> dict[str, str]:
    """Readable labels of the ``hint_template/i`` and ``hint_position/p`` scopes."""
    labels = {f"hint_template/{i}": t.format(answer="X") for i, t in enumerate(HINT_TEMPLATES)}
    labels |= {f"hint_position/{p}": p.replace("_", " ") for p in HINT_POSITIONS}
    return labels
