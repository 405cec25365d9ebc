"""Temporal attention, localisation, overlap scores and instruction steering: by hand on a tiny model."""

import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis import (
    instruction_steering_hooks, instruction_steering_vector, interval_overlap, localise, random_window_baseline,
    temporal_attention,
)


@pytest.fixture(scope="module")
def run(model):
    inputs = model.to_inputs(make_inputs([[100], [60]], seed=5))
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_pattern"))
    return inputs, cache


def test_temporal_attention_by_hand(model, run):
    inputs, cache = run
    profile, seconds = temporal_attention(cache, layers=[1], heads=[0, 2])
    for row in range(2):
        audio = torch.nonzero(inputs.audio_mask[row]).flatten()
        last = int(inputs.last_positions[row])
        by_hand = cache["pattern", 1][row, [0, 2]][:, last, audio].sum(0)
        torch.testing.assert_close(profile[row, : len(audio)], by_hand)
        assert torch.isnan(profile[row, len(audio):]).all()
        spt = inputs.seconds_per_token
        torch.testing.assert_close(seconds[row, : len(audio)], (torch.arange(len(audio)) + 0.5) * spt)
    everything, _ = temporal_attention(cache)  # all layers and heads: the sum of the parts
    parts = sum(temporal_attention(cache, layers=[l], heads=[h])[0] for l in range(2) for h in range(4))
    torch.testing.assert_close(everything, parts, equal_nan=True)
    # query mask: the mean over the query positions
    query = torch.zeros(inputs.shape, dtype=torch.bool)
    query[:, -2:] = True
    two, _ = temporal_attention(cache, layers=[0], query=query)
    audio = inputs.audio_mask[0]
    by_hand = cache["pattern", 0][0].sum(0)[-2:][:, audio].mean(0)
    torch.testing.assert_close(two[0, : int(audio.sum())], by_hand)


def test_temporal_attention_refusals(model, run):
    inputs, cache = run
    with pytest.raises(ValueError, match="lacks"):
        _, resid = model.run_with_cache(inputs, names_filter="blocks.0.hook_resid_post")
        temporal_attention(resid)
    with pytest.raises(ValueError, match="heads"):
        temporal_attention(cache, heads=[9])
    bad = inputs.audio_mask.clone()
    with pytest.raises(ValueError, match="audio positions"):
        temporal_attention(cache, query=bad)


def test_localise_finds_the_bump_and_ignores_padding():
    seconds = (torch.arange(50) + 0.5) * 0.04
    change = torch.zeros(50)
    change[30:35] = 1.0  # 1.20-1.40 s
    start, end = localise(change, seconds, window_s=0.2)
    assert start == pytest.approx(1.2) and end == pytest.approx(1.4)
    padded = torch.cat([change, torch.full((5,), float("nan"))])
    assert localise(padded, torch.cat([seconds, torch.full((5,), float("nan"))]), 0.2) == (start, end)
    with pytest.raises(ValueError, match="positive"):
        localise(change, seconds, 0)
    with pytest.raises(ValueError, match="increase"):
        localise(change, seconds.flip(0), 0.2)
    # a bump at the very end: the window stays inside the audio (as the random-window baseline's do)
    late = torch.zeros(50)
    late[-1], late[-5:-1] = 1.0, -0.1  # a window from the last token alone would hang 0.16 s past the end
    assert localise(late, seconds, 0.2) == (pytest.approx(1.8), pytest.approx(2.0))
    with pytest.raises(ValueError, match="longer than the audio"):
        localise(change, seconds, 2.5)


def test_overlap_scores_and_the_random_baseline():
    assert interval_overlap((1.0, 2.0), (1.5, 2.5), "hit") == 1.0
    assert interval_overlap((1.0, 2.0), (2.0, 3.0), "hit") == 0.0
    assert interval_overlap((1.0, 2.0), (1.5, 2.5), "iou") == pytest.approx(0.5 / 1.5)
    # uniform window start in [0, D - w]: a hit when the start falls in (c - w, d)
    duration, window, truth = 4.0, 0.5, (1.0, 1.6)
    exact = (truth[1] - (truth[0] - window)) / (duration - window)
    assert random_window_baseline(duration, window, truth, n=20000) == pytest.approx(exact, abs=0.01)


@torch.no_grad()
def test_instruction_steering_vector_and_hooks_by_hand(model):
    raw = make_inputs([[100], [100]], seed=6)
    a = model.to_inputs(raw)
    b_ids = raw["input_ids"].clone()
    b_ids[:, 1] = 12  # another instruction word, the same audio
    b = model.to_inputs(dict(raw, input_ids=b_ids))
    vector = instruction_steering_vector(model, a, b, layer=1)
    _, ca = model.run_with_cache(a, names_filter="blocks.1.hook_resid_post")
    _, cb = model.run_with_cache(b, names_filter="blocks.1.hook_resid_post")
    by_hand = (ca["blocks.1.hook_resid_post"][:, -1] - cb["blocks.1.hook_resid_post"][:, -1]).mean(0)
    torch.testing.assert_close(vector, by_hand)
    seen = {}
    hooks = instruction_steering_hooks(vector, [0], alpha=2.0, inputs=a)
    hooks.append(("blocks.0.hook_resid_post", lambda x, hook: seen.setdefault("x", x.clone())))
    model.run_with_hooks(a, fwd_hooks=hooks)
    _, plain = model.run_with_cache(a, names_filter="blocks.0.hook_resid_post")
    change = seen["x"] - plain["blocks.0.hook_resid_post"]
    text = a.text_mask
    torch.testing.assert_close(change[text], (2.0 * vector).expand(int(text.sum()), -1))
    assert torch.equal(change[~text], torch.zeros_like(change[~text]))
    other = model.to_inputs(make_inputs([[100], [100]], seed=7))
    with pytest.raises(ValueError, match="different audio"):
        instruction_steering_vector(model, a, other, layer=1)
    with pytest.raises(ValueError, match="same prompts"):
        instruction_steering_vector(model, a, model.to_inputs(raw), layer=1)
    with pytest.raises(TypeError, match="AudioTextInput"):
        instruction_steering_hooks(vector, [0], 1.0, raw)
    # normalize=True: alpha is the norm added at every text position
    seen.clear()
    hooks = instruction_steering_hooks(vector, [0], alpha=2.0, inputs=a, normalize=True)
    hooks.append(("blocks.0.hook_resid_post", lambda x, hook: seen.setdefault("x", x.clone())))
    model.run_with_hooks(a, fwd_hooks=hooks)
    added = (seen["x"] - plain["blocks.0.hook_resid_post"])[text]
    torch.testing.assert_close(added.norm(dim=-1), torch.full((int(text.sum()),), 2.0))
    torch.testing.assert_close(added[0], 2.0 * vector / vector.norm())
    with pytest.raises(ValueError, match="zero"):
        instruction_steering_hooks(torch.zeros_like(vector), [0], 1.0, a, normalize=True)
