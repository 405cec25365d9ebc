"""Instruction steering and temporal localisation on the listener toy's multi-event clips (tutorial 05):
the effect a broken implementation would not show, next to its equal-norm random control."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from hooked_audio import HookedAudioTransformer
from hooked_audio.analysis import (
    instruction_steering_hooks, instruction_steering_vector, interval_overlap, localise, random_window_baseline,
    temporal_attention,
)
from hooked_audio.toy import evaluate, tasks

LAYER, TARGETS, ALPHA, WINDOW_S = 1, [1, 2, 3, 4], 32.0, 0.4  # chosen on a dev split (seed 103)
WHOLE = "listen to the whole clip . "


def _items(seed, n_clips):
    clips = [s for s in tasks.make_probe_set(seed=seed, n_per_task=n_clips, task_names=["events_when"]) if s.hint is None]
    return [(c, name, (a, b)) for c in clips for name, a, b in c.events]


@pytest.fixture(scope="module")
def measured():
    torch.set_grad_enabled(False)
    model = HookedAudioTransformer.from_pretrained("toy-qwen2-audio")
    prof_layers = list(range(TARGETS[0] + 1, model.cfg.n_layers))

    def batch_of(items, instruction):
        samples = [replace(c, question=instruction(e) + f"when does the {e} happen ?") for c, e, _ in items]
        return model.to_inputs(evaluate.encode(model.processor, samples))

    fit, test = _items(101, 20), _items(202, 25)
    vectors = {}
    for e in tasks.EVENT_NAMES:
        sub = [it for it in fit if it[1] == e]
        vectors[e] = instruction_steering_vector(model, batch_of(sub, lambda e: f"focus on the {e} . "), batch_of(sub, lambda e: WHOLE), LAYER)
    g = torch.Generator().manual_seed(0)
    random_vectors = {e: (lambda r: r / r.norm() * v.norm())(torch.randn(v.shape, generator=g)) for e, v in vectors.items()}
    profiles = {}
    for name, table in [("base", None), ("steered", vectors), ("random", random_vectors)]:
        out = torch.full((len(test), 100), float("nan"))
        for e in tasks.EVENT_NAMES:
            rows = [i for i, it in enumerate(test) if it[1] == e]
            batch = batch_of([test[i] for i in rows], lambda e: WHOLE)
            hooks = [] if table is None else instruction_steering_hooks(table[e], TARGETS, ALPHA, batch)
            with model.hooks(hooks):
                _, cache = model.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_pattern"))
            out[rows], seconds = temporal_attention(cache, layers=prof_layers)
        profiles[name] = out
    seconds = seconds[0]
    inside = torch.stack([(seconds >= a) & (seconds < b) for _, _, (a, b) in test])
    mass = {k: ((p * inside).sum(-1) / p.sum(-1)).numpy() for k, p in profiles.items()}
    hits = {k: np.array([interval_overlap(localise(profiles[k][r] - profiles["base"][r], seconds, WINDOW_S), t)
                         for r, (_, _, t) in enumerate(test)]) for k in ("steered", "random")}
    ids = [model.to_single_token(p) for p in tasks.signals.POSITIONS]
    direct = batch_of(test, lambda e: "")
    third = model(direct)[torch.arange(len(test)), direct.last_positions][:, ids].argmax(-1)
    hits["direct"] = np.array([interval_overlap((4 / 3 * int(k), 4 / 3 * (int(k) + 1)), t) for k, (_, _, t) in zip(third, test)])
    chance = {w: np.mean([random_window_baseline(4.0, w, t, n=1000, seed=i) for i, (_, _, t) in enumerate(test)])
              for w in (WINDOW_S, 4 / 3)}
    return test, mass, hits, chance


def _boot_low(x, n=2000):
    rng = np.random.default_rng(0)
    return np.percentile([np.mean(x[rng.integers(0, len(x), len(x))]) for _ in range(n)], 2.5)


# Measured on this split (64 items, 25 clips): mass inside the queried event +0.011 steered vs -0.008 with the
# equal-norm random vector (paired difference +0.019, bootstrap lower bound +0.008); localisation hit 0.17
# steered, 0.30 for the random vector's change, 0.216 for random 0.4 s windows, 0.55 for direct prompting
# (1.33 s thirds; random thirds 0.479). The previous textual organism (git 8a35f54) gave +0.031 / +0.003 and
# hits 0.39 / 0.36.


def test_steering_moves_attention_toward_the_events(measured):
    test, mass, _, _ = measured
    assert len(test) == 64
    steered = mass["steered"] - mass["base"]
    # measured: +0.011, bootstrap lower bound above 0 (a no-op or misplaced hook gives exactly 0)
    assert _boot_low(steered) > 0


def test_steering_moves_attention_into_the_queried_event_more_than_a_random_vector(measured):
    _, mass, _, _ = measured
    assert _boot_low((mass["steered"] - mass["base"]) - (mass["random"] - mass["base"])) > 0


@pytest.mark.xfail(strict=True, reason=(
    "measured (64 items): steering hit 0.17 against 0.216 for random 0.4 s windows (tutorial 05's 97 items: 0.289 "
    "vs 0.212): the steering effect on this organism (+0.011 of mass) is too small for its maximal-change window to "
    "find the queried event"))
def test_localisation_beats_random_windows(measured):
    _, _, hits, chance = measured
    assert hits["steered"].mean() > chance[WINDOW_S] + 0.05


@pytest.mark.xfail(strict=True, reason=(
    "measured (64 items): steering hit 0.17, the equal-norm random vector's change 0.30: any perturbation changes "
    "attention most where events are, so the window of maximal change finds *an* event, not the queried one"))
def test_localisation_beats_the_random_vector(measured):
    _, _, hits, _ = measured
    assert hits["steered"].mean() > hits["random"].mean() + 0.1


@pytest.mark.xfail(strict=True, reason=(
    "measured (64 items): steering hit 0.17 (0.4 s windows), direct prompting 0.55 with 1.33 s thirds (random "
    "0.479). The paper's steering > direct prompting (60.87 % vs 31.84 %) is absent"))
def test_steering_localises_better_than_direct_prompting(measured):
    _, _, hits, _ = measured
    assert hits["steered"].mean() > hits["direct"].mean()
