"""Shortcut tests: vary one nuisance variable alone and see whether the answer follows it.

Each function returns the model's accuracy per value of the nuisance variable (with 95 % Wilson
intervals from `evaluate.rate`), so a model that listens for the right reason is equally right at every
value, and a model using the nuisance as a shortcut is right at some values and wrong at others.

- ``beep_duration``: beep counts 1-4 at fixed beep durations from 0.08 to 0.4 s (gaps, frequency,
  placement still random). The old toy counted total beep time: one 0.4 s beep was "two".
- ``language_words``: language on words seen in training versus held-out words never heard.
- ``tone_duration``: low / high tones of fixed duration, 0.3 s versus 1.5 s.
"""

from __future__ import annotations

import numpy as np

from . import signals, tasks
from .evaluate import predict, rate

BEEP_DURATIONS = (0.08, 0.16, 0.24, 0.32, 0.4)
TONE_DURATIONS = (0.3, 1.5)
SEED = 31_337


def _score(model, processor, samples) -> dict:
    predictions = predict(model, processor, samples)
    return {"hits": [p == s.answer for p, s in zip(predictions, samples)], "predictions": predictions}


def beep_duration_samples(n_per_count: int = 10, seed: int = SEED) -> dict[float, list[tasks.Sample]]:
    task = tasks.TASKS_BY_NAME["beeps"]
    out = {}
    for d_index, seconds in enumerate(BEEP_DURATIONS):
        rng = np.random.default_rng([seed, d_index])
        out[seconds] = [tasks.Sample("beeps", tasks.beep_clip(count, rng, "test", beep_seconds=seconds), task.question,
                                     tasks.DIGIT_WORDS[count], kind="beeps", item=i)
                        for count in range(1, 5) for i in range(n_per_count)]
    return out


def beep_duration(model, processor, n_per_count: int = 10, seed: int = SEED) -> dict:
    """Accuracy per beep duration, and how often a single beep is answered "one" per duration."""
    result = {}
    for seconds, samples in beep_duration_samples(n_per_count, seed).items():
        scored = _score(model, processor, samples)
        singles = [p == "one" for p, s in zip(scored["predictions"], samples) if s.answer == "one"]
        result[str(seconds)] = {"accuracy": rate(scored["hits"]), "single_beep_answered_one": rate(singles)}
    return result


def language_words(model, processor, n_per_task: int = 100, seed: int = SEED) -> dict:
    """Language accuracy on training words versus held-out words (same voices and conditions)."""
    result = {}
    for split, label in (("test", "training_words"), ("unseen_words", "held_out_words")):
        samples = [s for s in tasks.make_probe_set(seed, n_per_task, ["language"], split=split) if s.hint is None]
        result[label] = rate(_score(model, processor, samples)["hits"])
    return result


def tone_duration(model, processor, n_per_answer: int = 20, seed: int = SEED) -> dict:
    """Pitch accuracy per tone duration (frequency in the training ranges, placement random)."""
    task = tasks.TASKS_BY_NAME["pitch"]
    result = {}
    for d_index, seconds in enumerate(TONE_DURATIONS):
        rng = np.random.default_rng([seed, 100 + d_index])
        samples = []
        for answer, (low, high) in (("low", (120, 350)), ("high", (900, 2500))):
            for i in range(n_per_answer):
                clip = tasks._place(signals.tone(rng.uniform(low, high), seconds), rng, "test")
                samples.append(tasks.Sample("pitch", clip, task.question, answer, kind="pitch", item=i))
        result[str(seconds)] = rate(_score(model, processor, samples)["hits"])
    return result


def run_all(model, processor) -> dict:
    """Every shortcut test, as reported on the card."""
    return {"beep_duration": beep_duration(model, processor), "language_words": language_words(model, processor),
            "tone_duration": tone_duration(model, processor)}
