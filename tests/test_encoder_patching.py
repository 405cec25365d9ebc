"""Activation patching inside the audio encoder, by time window and by head."""

from __future__ import annotations

import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis.encoder_patching import encoder_frame_times, encoder_patching


def _clean_and_silence(model, mel_frames: int = 60):
    raw = make_inputs([[mel_frames]], seed=2)
    clean = model.to_inputs(**raw)
    corrupted = model.to_inputs(**dict(raw, input_features=torch.full_like(raw["input_features"], -0.8)))
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n.startswith("audio_encoder.blocks"))
    answer = int(model(clean)[0, -1].argmax())
    return clean, corrupted, cache, lambda logits: logits[0, -1].log_softmax(-1)[answer]


def test_time_cells_restore_the_clip_and_padding_frames_do_nothing(model):
    clean, corrupted, cache, metric = _clean_and_silence(model)
    result = encoder_patching(model, corrupted, cache, metric, window_s=0.2)
    assert result.values.shape == (model.cfg.audio.n_layers, 5)  # 50 frames of 20 ms in 0.2 s cells
    torch.testing.assert_close(result.start_s, torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8]))
    assert abs(result.clean - result.corrupted) > 1e-3
    # 60 mel frames are 30 encoder frames (0.6 s): the cells after them hold padding, masked as keys and
    # dropped after pooling, so patching them leaves the corrupted run as it is
    torch.testing.assert_close(result.values[:, 3:], torch.full_like(result.values[:, 3:], result.corrupted), atol=1e-5, rtol=0)
    assert (result.values[:, :3] - result.corrupted).abs().max() > 1e-4
    # every frame at layer 0 is the clean run from there on: full recovery
    whole = encoder_patching(model, corrupted, cache, metric, window_s=1.0, layers=[0])
    assert whole.recovery()[0, 0].item() == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(encoder_frame_times(model, 3)[:, 0], torch.tensor([0.0, 0.02, 0.04]))


def test_head_cells_match_a_hand_written_patch(model):
    clean, corrupted, cache, metric = _clean_and_silence(model)
    result = encoder_patching(model, corrupted, cache, metric, activation="attn.hook_z", by="head", layers=[1])
    name = "audio_encoder.blocks.1.attn.hook_z"

    def patch(x, hook):
        x = x.clone()
        x[:, :, 2] = cache[name][:, :, 2]
        return x

    with torch.no_grad():
        by_hand = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)]))
    assert result.values[0, 2].item() == pytest.approx(by_hand.item(), abs=1e-6)


def test_different_audio_layouts_are_refused(model):
    clean, _, cache, metric = _clean_and_silence(model, 60)
    other = model.to_inputs(**make_inputs([[80]], seed=2))
    with pytest.raises(ValueError, match="different audio layouts"):
        encoder_patching(model, other, cache, metric)
    with pytest.raises(ValueError, match="by must be"):
        encoder_patching(model, clean, cache, metric, by="frame")
    for window_s in (0.0, -0.2, float("nan"), float("inf")):  # each was one frame per cell, or a NaN crash
        with pytest.raises(ValueError, match="window_s must be a positive number of seconds"):
            encoder_patching(model, clean, cache, metric, window_s=window_s)


def test_time_cells_follow_clip_time_across_feature_windows():
    """A clip longer than one feature window (here Audio Flamingo 3: 1 s windows) has one row per window. Was: the
    cells covered one window's time and patched those frames of every window at once (so 0-0.2 s also patched
    1.0-1.2 s and 2.0-2.2 s). Now cell [a, b) patches clip time [a, b) of each clip; checked against a patch
    written by hand from the case's known layout (clip 0: rows 0-2, clip 1: row 3)."""
    from dataclasses import replace

    from family_harness import build_pair
    from test_family_contract import SPECS, inputs_of

    spec = SPECS["audioflamingo3"]
    _, model = build_pair(spec)
    clean = model.to_inputs(**inputs_of(spec, "multi_window_clip_batched_with_a_short_clip", seed=1))
    key = model.cfg.audio_inputs.features
    noise = torch.randn(clean.audio[key].shape, generator=torch.Generator().manual_seed(9))
    corrupted = replace(clean, audio={**clean.audio, key: noise})
    name = "audio_encoder.blocks.0.hook_resid_pre"
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=name)
    assert cache[name].shape[:2] == (4, 50) and model.window_clips(clean).tolist() == [0, 0, 0, 1]

    def metric(logits):
        return logits[:, -1, 5].sum()

    result = encoder_patching(model, corrupted, cache, metric, window_s=0.2, layers=[0])
    assert result.values.shape[1] == 15 and result.end_s[-1].item() == pytest.approx(3.0)  # the long clip's 3 s
    offsets = [0, 1, 2, 0]  # each row's window number within its clip

    def by_hand(lo_s, hi_s):
        def hook(x, hook):
            x = x.clone()
            for row, offset in enumerate(offsets):
                for frame in range(x.shape[1]):
                    if lo_s - 1e-9 <= offset * 1.0 + frame * 0.02 < hi_s - 1e-9:
                        x[row, frame] = cache[name][row, frame]
            return x
        return hook

    with torch.no_grad():
        for cell in (0, 6, 12):  # in the first window (both clips), the second and the third (the long clip only)
            lo, hi = result.start_s[cell].item(), result.end_s[cell].item()
            want = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, by_hand(lo, hi))])).item()
            assert result.values[0, cell].item() == pytest.approx(want, abs=1e-5)
        # control: the old reading (frames 0-9 of every window) is another value
        def every_window(x, hook):
            x = x.clone()
            x[:, :10] = cache[name][:, :10]
            return x
        old = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, every_window)])).item()
    assert abs(old - result.values[0, 0].item()) > 1e-5


def test_patterns_are_patched_by_head_on_their_head_axis(model):
    """Was: by='head' on a pattern [row, head, query, key] took its query frames for heads, and by='time' its heads
    for frames. Now heads are axis 1 and a time cell of a pattern is refused."""
    clean, corrupted, cache, metric = _clean_and_silence(model)
    name = "audio_encoder.blocks.1.attn.hook_pattern"
    # a tiny random encoder attends almost uniformly whatever it hears: give head 2 of the "clean" run a pattern
    # of its own (every query on the first frame), so that patching that head, and only it, shows
    pattern = cache.cache_dict[name].clone()
    pattern[:, 2] = 0.0
    pattern[:, 2, :, 0] = 1.0
    cache.cache_dict[name] = pattern
    result = encoder_patching(model, corrupted, cache, metric, activation="attn.hook_pattern", by="head", layers=[1])
    assert result.values.shape == (1, model.cfg.audio.n_heads)

    def patch(x, hook):
        x = x.clone()
        x[:, 2] = cache[name][:, 2]
        return x

    with torch.no_grad():
        by_hand = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)]))
    assert result.values[0, 2].item() == pytest.approx(by_hand.item(), abs=1e-6)
    assert abs(result.values[0, 2].item() - result.corrupted) > 1e-4  # control: the head's pattern matters
    assert result.values[0, [0, 1, 3]].tolist() == pytest.approx([result.corrupted] * 3, abs=1e-4)
    with pytest.raises(ValueError, match="two frame axes"):
        encoder_patching(model, corrupted, cache, metric, activation="attn.hook_pattern", by="time")
