"""Held-out evaluation of the toy model: per-task accuracy and text-dominance statistics.

The model's answer is the argmax over the full vocabulary of the next-token logits at the last prompt
position (right after `<|im_start|>assistant\\n`). `evaluate` accepts either an HF model or any callable
`logits_fn(inputs) -> logits [batch, pos, vocab]`, so a hooked re-implementation can be scored on
exactly the same inputs.
"""

from collections import defaultdict
from typing import Callable

import torch

from .signals import SAMPLE_RATE
from .tasks import Sample, make_probe_set
from .tokenizer import IM_END

EVAL_SEED = 20_240_917  # any seed other than the training seed gives held-out clips
EVAL_CLIPS_PER_TASK = 100


def make_eval_set(seed: int = EVAL_SEED, n_per_task: int = EVAL_CLIPS_PER_TASK) -> list[Sample]:
    """The fixed held-out set: n_per_task clips per task, each with no hint, a right hint, a wrong hint."""
    return make_probe_set(seed, n_per_task)


def render_prompt(processor, sample: Sample) -> str:
    """The chat prompt up to and including `<|im_start|>assistant\\n` (one unexpanded `<|AUDIO|>`)."""
    messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": sample.text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(processor, samples: list[Sample], with_answers: bool = False) -> dict:
    """Processor inputs for a batch; with_answers appends `answer<|im_end|>` for teacher forcing."""
    texts = [render_prompt(processor, s) + (f"{s.answer}{IM_END}" if with_answers else "") for s in samples]
    waveforms = [s.waveform for s in samples]
    return processor(text=texts, audio=waveforms, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, for left or right padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.bool() * positions).max(dim=1).values


def _as_logits_fn(model_or_callable) -> Callable[[dict], torch.Tensor]:
    if isinstance(model_or_callable, torch.nn.Module) and hasattr(model_or_callable, "generate"):
        return lambda inputs: model_or_callable(**inputs).logits
    return model_or_callable


@torch.no_grad()
def predict(model_or_callable, processor, samples: list[Sample], batch_size: int = 64) -> list[str]:
    """The predicted next token (as a string) after each sample's prompt."""
    logits_fn = _as_logits_fn(model_or_callable)
    predictions: list[str] = []
    for start in range(0, len(samples), batch_size):
        inputs = encode(processor, samples[start : start + batch_size])
        logits = logits_fn(dict(inputs))
        rows = torch.arange(logits.shape[0])
        next_ids = logits[rows, last_positions(inputs["attention_mask"])].argmax(-1)
        predictions += processor.tokenizer.convert_ids_to_tokens(next_ids.tolist())
    return predictions


def _rate(hits: list[bool]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


def evaluate(model_or_callable, processor, samples: list[Sample], batch_size: int = 64) -> dict:
    """Per-task and overall statistics.

    accuracy: audio-only prompts. accuracy_correct_hint: prompts whose hint is right.
    accuracy_wrong_hint and text_dominance_rate: prompts whose hint is wrong, and the rate at which the
    model outputs the hinted (wrong) answer there.
    """
    predictions = predict(model_or_callable, processor, samples, batch_size)
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for sample, predicted in zip(samples, predictions):
        for scope in (sample.task, "overall"):
            group = groups[scope]
            correct = predicted == sample.answer
            if sample.hint_kind == "none":
                group["accuracy"].append(correct)
            elif sample.hint_kind == "correct":
                group["accuracy_correct_hint"].append(correct)
            else:
                group["accuracy_wrong_hint"].append(correct)
                group["text_dominance_rate"].append(predicted == sample.hint)
    names = ("accuracy", "accuracy_correct_hint", "accuracy_wrong_hint", "text_dominance_rate")
    return {
        scope: {name: _rate(group[name]) for name in names} | {"n_audio_only": len(group["accuracy"])}
        for scope, group in groups.items()
    }
