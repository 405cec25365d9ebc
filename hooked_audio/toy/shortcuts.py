"""Shortcut tests: vary one nuisance variable alone and see whether the answer follows it.

Each function returns the model's accuracy per value of the nuisance variable (with 95 % Wilson
intervals from `evaluate.rate`), so a model that listens for the right reason is equally right at every
value, and a model using the nuisance as a shortcut is right at some values and wrong at others.

- ``beep_duration``: beep counts 1-4 at set beep durations from 0.08 to 0.4 s (each beep within the
  generator's +-15 % jitter of it; gaps, frequency, placement still random). The old toy counted total beep time: one 0.4 s beep was "two".
- ``language_words``: language on words seen in training versus held-out words never heard.
- ``tone_duration``: low / high tones of fixed duration, 0.3 s versus 1.5 s.
- ``noise_band``: noise colour with the clip's lowest frequencies filtered out (high-pass at 50, 100, 200 Hz).
  Brown noise is brown across the audible band; a model that names it from sub-audible rumble alone loses it
  once the rumble is gone, while pink (whose colour sits higher) is kept.
- ``event_order``: "when does the X happen ?" on two-event clips, X in one third and another event in a
  different third, with X first or second. A model answering the position of the first (or any) event
  instead of X's is right on one order only, and answers the other event's third.
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


NOISE_HIGHPASS_HZ = (0, 50, 100, 200)


def noise_band(model, processor, n_per_task: int = 60, seed: int = SEED) -> dict:
    """Noise-colour accuracy per colour with everything below each cutoff removed (8th-order Butterworth
    high-pass; 0: the clips as they are)."""
    from dataclasses import replace

    from scipy.signal import butter, sosfilt

    samples = [s for s in tasks.make_probe_set(seed, n_per_task, ["noise"]) if s.hint is None]
    result = {}
    for cutoff in NOISE_HIGHPASS_HZ:
        if cutoff:
            sos = butter(8, cutoff, "highpass", fs=signals.SAMPLE_RATE, output="sos")
            filtered = [replace(s, waveform=sosfilt(sos, s.waveform).astype(np.float32)) for s in samples]
        else:
            filtered = samples
        hits = _score(model, processor, filtered)["hits"]
        result[str(cutoff)] = {colour: rate([h for h, s in zip(hits, filtered) if s.answer == colour])
                               for colour in tasks.TASKS_BY_NAME["noise"].answers}
    return result


def _centred_in(third: int, length: int, taken: list[tuple[int, int]], rng, gap: int) -> int | None:
    """``tasks.centred_start`` clear of ``taken`` by ``gap``; None if 200 draws find no room."""
    for _ in range(200):
        start = tasks.centred_start(third, length, rng)
        if start is not None and tasks.clear_of(start, length, taken, gap):
            return start
    return None


def event_order_samples(n_per_cell: int = 20, seed: int = SEED) -> list[tuple[tasks.Sample, str]]:
    """(sample, the other event's third) for two-event clips, every (queried third, other event's third) pair
    of different thirds; ``kind`` says whether the queried event comes "first" or "second"."""
    rng = np.random.default_rng([seed, 200])
    gap = int(0.15 * signals.SAMPLE_RATE)
    samples = []
    for asked in range(3):
        for other in (t for t in range(3) if t != asked):
            made = 0
            while made < n_per_cell:
                names = [str(e) for e in rng.choice(tasks.EVENT_NAMES, 2, replace=False)]
                waves = [tasks._event(name, rng, "test") for name in names]
                first = _centred_in(asked, len(waves[0]), [], rng, gap)
                second = None if first is None else _centred_in(other, len(waves[1]), [(first, first + len(waves[0]))], rng, gap)
                if second is None:
                    continue
                clip = tasks._finish(signals.place_at([(waves[0], first), (waves[1], second)]), rng, "test", min_snr=10.0)
                events = tuple(sorted(((n, s / signals.SAMPLE_RATE, (s + len(w)) / signals.SAMPLE_RATE)
                                       for n, s, w in zip(names, (first, second), waves)), key=lambda e: e[1]))
                samples.append((tasks.Sample("events_when", clip, f"when does the {names[0]} happen ?",
                                             signals.POSITIONS[asked], kind="first" if asked < other else "second",
                                             events=events, item=made), signals.POSITIONS[other]))
                made += 1
    return samples


def event_order(model, processor, n_per_cell: int = 20, seed: int = SEED) -> dict:
    """Accuracy with the queried event first and second, and how often the other event's third is answered
    (chance: 1/3)."""
    samples, other_third = zip(*event_order_samples(n_per_cell, seed))
    scored = _score(model, processor, list(samples))
    result = {kind: rate([h for h, s in zip(scored["hits"], samples) if s.kind == kind]) for kind in ("first", "second")}
    result["answered_the_other_events_third"] = rate([p == o for p, o in zip(scored["predictions"], other_third)])
    return result


def run_all(model, processor) -> dict:
    """Every shortcut test, as reported on the card."""
    return {"beep_duration": beep_duration(model, processor), "language_words": language_words(model, processor),
            "tone_duration": tone_duration(model, processor), "event_order": event_order(model, processor)}
