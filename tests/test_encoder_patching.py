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
