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

LAYER, TARGETS, ALPHA, WINDOW_S = 1, [1, 2, 3, 4], 32.0, 0.4  # chosen on a dev split (seed 103) for an earlier listener
WHOLE = "listen to the whole clip . "


def _items(seed, n_clips):
    clips = [s for s in tasks.make_probe_set(seed=seed, n_per_task=n_clips, task_names=["events_when"]) if s.hint is None]
    return [(c, name, (a, b)) for c in clips for name, a, b in c.events]


def _steered_profiles(model, test, base_batch, vectors, targets, alpha, profile_layers):
    """Temporal profiles of ``test`` (rows grouped by queried event, ``it[1]``) unsteered, steered with each event's
    vector and with an equal-norm random vector per event."""
    g = torch.Generator().manual_seed(0)
    random_vectors = {e: (lambda r: r / r.norm() * v.norm())(torch.randn(v.shape, generator=g)) for e, v in vectors.items()}
    profiles = {}
    for name, table in [("base", None), ("steered", vectors), ("random", random_vectors)]:
        out = torch.full((len(test), 100), float("nan"))
        for e in tasks.EVENT_NAMES:
            rows = [i for i, it in enumerate(test) if it[1] == e]
            batch = base_batch([test[i] for i in rows])
            hooks = [] if table is None else instruction_steering_hooks(table[e], targets, alpha, batch)
            with model.hooks(hooks):
                _, cache = model.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_pattern"))
            out[rows], seconds = temporal_attention(cache, layers=profile_layers)
        profiles[name] = out
    return profiles, seconds[0]


def _mass_and_hits(profiles, seconds, intervals):
    """Per row: the share of audio attention inside its interval (each profile), and whether the window of largest
    change from the unsteered profile overlaps it (steered, random)."""
    inside = torch.stack([(seconds >= a) & (seconds < b) for a, b in intervals])
    mass = {k: ((p * inside).sum(-1) / p.sum(-1)).numpy() for k, p in profiles.items()}
    hits = {k: np.array([interval_overlap(localise(profiles[k][r] - profiles["base"][r], seconds, WINDOW_S), t)
                         for r, t in enumerate(intervals)]) for k in ("steered", "random")}
    return mass, hits


@pytest.fixture(scope="module")
@torch.no_grad()  # not set_grad_enabled(False): that leaks into the next module on the same xdist worker
def measured():
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
    profiles, seconds = _steered_profiles(model, test, lambda its: batch_of(its, lambda e: WHOLE), vectors, TARGETS, ALPHA,
                                          prof_layers)
    mass, hits = _mass_and_hits(profiles, seconds, [it[-1] for it in test])
    chance = np.mean([random_window_baseline(4.0, WINDOW_S, t, n=1000, seed=i) for i, (_, _, t) in enumerate(test)])
    return test, mass, hits, chance


def _boot_low(x, n=2000):
    rng = np.random.default_rng(0)
    return np.percentile([np.mean(x[rng.integers(0, len(x), len(x))]) for _ in range(n)], 2.5)


# The question-naming design on the current listener, which was trained on "focus on the X . when does it happen ?"
# as well and so reads the event from the question whenever the question names it. Measured on this split (64 items,
# 25 clips): the unsteered profile puts 0.293 of its audio attention inside the queried
# event; steering changes that by -0.022, the equal-norm random vector by -0.029 (paired +0.008, bootstrap lower
# bound -0.012); the window of largest change hits the event on 0.30 of items (19 of 64), the random vector's 0.27,
# random 0.4 s windows 0.216. (The listener it replaced: 0.282, -0.015 vs -0.025, paired +0.011, lower bound
# -0.012; hits 0.30 vs 0.28. An earlier one, never trained on the instruction-only form: +0.011 vs -0.008.)


NO_STEERING_EFFECT = (
    "measured (64 items): mass inside the queried event -0.022 steered, -0.029 with the equal-norm random vector "
    "(paired +0.008, bootstrap lower bound -0.012): the "
    "question already names the event, so on this listener 'focus on the X .' adds nothing to steer with (the "
    "instruction-only contrast below does: +0.16 beyond the random vector)")
NOTHING_TO_LOCALISE = (
    "measured (64 items): the steered change's window hits the queried event on 0.30 (19 of 64), the random "
    "vector's on 0.27, random 0.4 s windows 0.216: with no steering effect on mass there is nothing to localise "
    "beyond what any perturbation of the same norm finds")


@pytest.mark.xfail(strict=True, reason=NO_STEERING_EFFECT)
def test_steering_moves_attention_toward_the_events(measured):
    test, mass, _, _ = measured
    assert len(test) == 64
    assert _boot_low(mass["steered"] - mass["base"]) > 0


@pytest.mark.xfail(strict=True, reason=NO_STEERING_EFFECT)
def test_steering_moves_attention_into_the_queried_event_more_than_a_random_vector(measured):
    _, mass, _, _ = measured
    assert _boot_low((mass["steered"] - mass["base"]) - (mass["random"] - mass["base"])) > 0


def test_localisation_beats_random_windows(measured):
    """Measured: the steered change's window hits the queried event on 0.30 (19 of 64) against 0.216 for random
    0.4 s windows, a thin pass (the listener it replaced: 0.30 too). The equal-norm random vector's change hits 0.27
    too, so this says any perturbation of that norm finds the events, not that steering does: the test below,
    against the random vector, is the one that decides (and fails)."""
    _, _, hits, chance = measured
    assert hits["steered"].mean() > chance + 0.05


@pytest.mark.xfail(strict=True, reason=NOTHING_TO_LOCALISE)
def test_localisation_beats_the_random_vector(measured):
    _, _, hits, _ = measured
    assert hits["steered"].mean() > hits["random"].mean() + 0.1


# The same method with a contrast the instruction carries alone: v_X = mean h_last("focus on the X . when does it
# happen ?") - h_last("focus on the Y . ..."), Y another event of the same clip, and the steered prompt focuses on Y.
# Layer 1 into layers 1-5 at alpha 8 was chosen on the dev split (seed 103: layers 0-2, alpha 1-8) with tutorial 05's
# random draw (its section 4a). With this file's random vectors the dev split ranks layer 0 at alpha 4 first on this
# listener, steered-minus-random +0.186 in mass and +0.295 in hit, against +0.168 and +0.161 at layer 1, alpha 8
# (the listener it replaced: layer 0 at alpha 8, +0.169 and +0.259, against +0.139 and +0.179).
SHIFT_LAYER, SHIFT_ALPHA = 1, 8.0
FOCUS = "focus on the {} . when does it happen ?"


@pytest.fixture(scope="module")
@torch.no_grad()  # not set_grad_enabled(False): that leaks into the next module on the same xdist worker
def shifted():
    model = HookedAudioTransformer.from_pretrained("toy-qwen2-audio")
    targets = list(range(SHIFT_LAYER, model.cfg.n_layers))

    def pairs(seed, n_clips):  # (clip, X, Y, X's interval) for every ordered pair of events of a clip
        return [(c, x, y, t) for c, x, t in _items(seed, n_clips) for y, _, _ in c.events if y != x]

    def batch_of(items, column):
        samples = [replace(it[0], question=FOCUS.format(it[column])) for it in items]
        return model.to_inputs(evaluate.encode(model.processor, samples))

    fit, test = pairs(101, 30), pairs(202, 40)
    vectors = {e: instruction_steering_vector(model, batch_of(sub, 1), batch_of(sub, 2), SHIFT_LAYER)
               for e in tasks.EVENT_NAMES for sub in [[it for it in fit if it[1] == e]]}
    profiles, seconds = _steered_profiles(model, test, lambda its: batch_of(its, 2), vectors, targets, SHIFT_ALPHA,
                                          list(range(SHIFT_LAYER + 1, model.cfg.n_layers)))
    mass, hits = _mass_and_hits(profiles, seconds, [it[-1] for it in test])
    # direct prompting: the model's own answer to "when does the X happen ?" (beginning / middle / end) as that third
    ids = [model.to_single_token(p) for p in tasks.signals.POSITIONS]
    direct = model.to_inputs(evaluate.encode(model.processor, [replace(it[0], question=f"when does the {it[1]} happen ?") for it in test]))
    third = model(direct)[torch.arange(len(test)), direct.last_positions][:, ids].argmax(-1)
    hits["direct"] = np.array([interval_overlap((4 / 3 * int(k), 4 / 3 * (int(k) + 1)), it[3]) for k, it in zip(third, test)])
    chance = {w: np.mean([random_window_baseline(4.0, w, it[3], n=1000, seed=i) for i, it in enumerate(test)])
              for w in (WINDOW_S, 4 / 3)}
    return test, mass, hits, chance


# Measured on this split (148 pairs, 40 clips): while the prompt focuses on Y, 0.185 of the audio attention is inside X;
# steering toward X adds +0.115, the equal-norm random vector -0.045 (paired +0.160, bootstrap lower bound +0.137;
# tutorial 05 section 4 uses another random draw). The window of largest change hits X on 0.541 of pairs, the
# random vector's change on 0.284, random 0.4 s windows 0.212: the paper's 60.87 % vs 27.74 %. Direct prompting
# ("when does the X happen ?" -> that third) hits 0.953 with 1.33 s windows (random thirds 0.439). The listener it
# replaced: 0.191, +0.087 vs -0.050 (paired +0.137, lower bound +0.114); hits 0.554 vs 0.243; direct 0.899.


def test_steering_from_one_event_to_another_moves_attention_into_it_beyond_a_random_vector(shifted):
    test, mass, _, _ = shifted
    assert len(test) == 148
    assert _boot_low((mass["steered"] - mass["base"]) - (mass["random"] - mass["base"])) > 0.05


def test_steering_from_one_event_to_another_localises_beyond_random_windows(shifted):
    _, _, hits, chance = shifted
    assert hits["steered"].mean() > chance[WINDOW_S] + 0.15


def test_steering_from_one_event_to_another_localises_beyond_the_random_vector(shifted):
    _, _, hits, _ = shifted
    assert hits["steered"].mean() > hits["random"].mean() + 0.15


@pytest.mark.xfail(strict=True, reason=(
    "measured (148 pairs): steering's 0.4 s window hits X on 0.541, direct prompting's 1.33 s third on 0.953 "
    "(random 0.212 / 0.439): the listener answers 'when does the X happen ?' well (events_when 0.92 on its card), so "
    "the paper's steering > direct prompting (60.87 % vs 31.84 %) is absent here"))
def test_steering_localises_better_than_direct_prompting(shifted):
    _, _, hits, _ = shifted
    assert hits["steered"].mean() > hits["direct"].mean()
