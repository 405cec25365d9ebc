"""Music Flamingo (HF ``MusicFlamingoForConditionalGeneration``): its contract spec and what is special about
it, the rotary time embedding on the encoder output (its config, that parity depends on it, its timestamps,
HF's numbers at real size) and ``<|sound_bos|>`` / ``<|sound_eos|>`` around each clip's run.

The tiny builders come from ``test_family_audioflamingo3``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from functools import partial

from family_harness import (
    assert_several_clips_per_text_match_hf, TOL, assert_logits_match, build_pair, first_windows, max_diff, n_audio_tokens, noise_clips,
    real_config,
)
from test_family_audioflamingo3 import SPEC as AF3_SPEC
from test_family_audioflamingo3 import (
    CASES, HOOKS, SOUND, SOUND_BOS, SOUND_EOS, make_hf_model, make_inputs, make_processor,
)
from transformers import MusicFlamingoForConditionalGeneration
from transformers.models.musicflamingo.modeling_musicflamingo import MusicFlamingoRotaryEmbedding, apply_rotary_time_emb

from hooked_audio import HookedAudioTransformer
from hooked_audio.components.projector import MLPProjectorConfig
from hooked_audio.components.time_rotary import TimeRotaryEmbedding, rotate_pairs


SPEC = dataclasses.replace(  # Audio Flamingo 3's spec, with the time rotary's hooks and wrapped placeholders
    AF3_SPEC,
    name="musicflamingo",
    hf_class=MusicFlamingoForConditionalGeneration,
    make_hf_model=partial(make_hf_model, "musicflamingo"),
    variants={"gqa": dict(seed=11)},
    make_inputs=partial(make_inputs, wrap=True),
    real_configs={"nvidia/music-flamingo-2601-hf": 8_267_215_360},
    expected_hooks=HOOKS | {"audio_time_rotary.hook_timestamps", "audio_time_rotary.hook_out"},
    make_processor=partial(make_processor, "musicflamingo"),
)


@pytest.fixture(scope="module")
def pair():
    return build_pair(SPEC)


def test_config_is_audioflamingo3_plus_time_rotary(pair):
    hf, model = pair
    cfg = model.cfg
    assert (cfg.family, cfg.projector, cfg.audio_token_id) == ("musicflamingo", MLPProjectorConfig(d_hidden=64), SOUND)
    time = cfg.audio_time_rotary
    assert (time.rotary_dim, time.theta, time.n_positions) == (int(64 * 0.2), 1200.0, 1200)
    assert time.seconds_per_token == pytest.approx(cfg.seconds_per_audio_token) == pytest.approx(0.04)
    torch.testing.assert_close(model.audio_time_rotary.inv_freq, hf.model.pos_emb.inv_freq, rtol=0, atol=0)


def test_the_time_embedding_is_what_makes_parity(pair):
    """Freezing every timestamp at 0 (no rotation) must break parity, or the rotation is untested."""
    hf, model = pair
    inputs = make_inputs(CASES["multi_window_clip_batched_with_a_short_clip"], seed=2, wrap=True)
    with torch.no_grad():
        theirs = hf(**inputs).logits
        frozen = model.run_with_hooks(**inputs, fwd_hooks=[("audio_time_rotary.hook_timestamps", lambda t, hook: 0 * t)])
    assert max_diff(frozen, theirs, inputs["attention_mask"]) > 100 * TOL


def test_timestamps_are_the_time_map(pair):
    """HF's per-window timestamps, at real tokens, equal the time map of ``AudioTextInput`` (40 ms/token)."""
    _, model = pair
    inputs = make_inputs([[[100, 100, 37], [64]], [[100, 23]]], wrap=True)
    _, cache = model.run_with_cache(**inputs, names_filter="audio_time_rotary.hook_timestamps")
    timestamps = cache["audio_time_rotary.hook_timestamps"]  # [window, 25]
    lengths = torch.tensor([n_audio_tokens(m) for m in (100, 100, 37, 64, 100, 23)])
    valid = torch.arange(timestamps.shape[1])[None] < lengths[:, None]
    times = cache.inputs.token_times()[..., 0]
    expected = times[cache.inputs.audio_mask]  # row-major, clip by clip, as the windows are
    torch.testing.assert_close(timestamps[valid], expected, atol=1e-5, rtol=0)
    assert timestamps[2, 0].item() == pytest.approx(2.0)  # third window of the first clip starts at 2 s
    assert timestamps[3, 0].item() == 0.0 and timestamps[5, 0].item() == pytest.approx(1.0)  # new clips restart


def test_time_rotary_matches_hf_at_real_size():
    """The real checkpoint's sizes (rotary_dim 256, 750 tokens per window, windows up to the 40th):
    float32 angles for timestamps up to 20 minutes, rotated in float64, match HF."""
    hf_config, _, cfg = real_config("nvidia/music-flamingo-2601-hf")
    assert cfg.audio_time_rotary.rotary_dim == 256
    ours, theirs = TimeRotaryEmbedding(cfg.audio_time_rotary), MusicFlamingoRotaryEmbedding(hf_config)
    windows = torch.tensor([0, 1, 17, 39])
    timestamps = windows[:, None] * 750 * 0.04 + torch.arange(750, dtype=torch.float32) * 0.04
    hidden = torch.randn(4, 750, 2 * 256 + 8, generator=torch.Generator().manual_seed(0))
    cos, sin = theirs(timestamps, seq_len=750)
    expected = apply_rotary_time_emb(hidden, cos, sin)
    ours_cos, ours_sin = ours.cos_sin(timestamps, 750)
    assert torch.equal(ours_cos, cos) and torch.equal(ours_sin, sin)
    assert torch.equal(rotate_pairs(hidden, ours_cos, ours_sin), expected)
    assert torch.equal(expected[..., 512:], hidden[..., 512:])  # features past 2 x rotary_dim pass through


def test_processor_wraps_clips_and_matches_hf():
    """Real Music Flamingo processor: 2.3 s -> 3 windows in one bos/eos-wrapped run; logits match HF."""
    hf = make_hf_model("musicflamingo", seed=7)
    processor = make_processor("musicflamingo")
    model = HookedAudioTransformer.from_hf_model(hf, processor=processor)
    clips = noise_clips(1, [36800, 9000])
    batch = processor(text=["hello <sound> what is played ?", "<sound> yes"], audio=clips, return_tensors="pt")
    assert batch["input_features"].shape[0] == 4
    ids = batch["input_ids"][0].tolist()
    start = ids.index(SOUND_BOS)
    assert ids[start + 1 : start + 1 + 57] == [SOUND] * 57 and ids[start + 1 + 57] == SOUND_EOS
    with torch.no_grad():
        assert_logits_match(model(batch), hf(**batch).logits, batch["attention_mask"])


def test_several_clips_per_prompt_match_hf(pair):
    """HF's processor takes one clip per text; build_inputs assembles several from its per-clip output."""
    assert_several_clips_per_text_match_hf(pair[0], make_processor("musicflamingo"))


def test_window_and_placeholder_mismatch_fails_clearly(pair):
    _, model = pair
    inputs = make_inputs([[[100, 100]]], wrap=True)
    with pytest.raises(ValueError, match=r"50 audio placeholders \(runs of \[50\]\) but the audio windows give 25"):
        model(**first_windows(inputs, 1))
