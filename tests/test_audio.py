"""Tests for hooked_audio.audio: waveform loading, downmix, PCM scaling, resampling and error messages."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile
import torch

from hooked_audio.audio import (
    DEFAULT_SAMPLING_RATE,
    duration_seconds,
    load_waveform,
    silence,
    tone,
)


def _dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def test_resample_tone_keeps_frequency_and_length():
    x = tone(440.0, 1.0, sampling_rate=44100)
    y = load_waveform(x, sampling_rate=44100)
    assert DEFAULT_SAMPLING_RATE == 16000
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == 16000
    assert abs(_dominant_hz(y, 16000) - 440.0) <= 5.0
    # Amplitude survives resampling (away from the edges).
    assert np.max(np.abs(y[1000:-1000])) == pytest.approx(0.5, abs=0.02)
    assert duration_seconds(y) == pytest.approx(1.0)


def test_same_rate_is_unchanged_and_float64_becomes_float32():
    x = np.linspace(-0.5, 0.5, 1600)  # float64
    y = load_waveform(x, sampling_rate=16000)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x.astype(np.float32))


@pytest.mark.parametrize("channels_first", [True, False])
def test_stereo_downmixes_to_channel_mean_and_warns(channels_first):
    left = tone(300.0, 0.1)
    right = 0.25 * np.ones_like(left)
    stereo = np.stack([left, right]) if channels_first else np.stack([left, right], axis=1)
    with pytest.warns(UserWarning, match="Downmixed 2 channels"):
        y = load_waveform(stereo, sampling_rate=16000)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)


def test_single_channel_2d_is_mono_without_warning():
    x = tone(300.0, 0.1)[None, :]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = load_waveform(x, sampling_rate=16000)
    np.testing.assert_array_equal(y, x[0])


def test_torch_tensor_input():
    x = tone(300.0, 0.1)
    y = load_waveform(torch.from_numpy(x).to(torch.bfloat16), sampling_rate=16000)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=4e-3)  # bfloat16 precision


def test_int16_pcm_scaling():
    pcm = np.array([0, 32767, -32768, 16384], dtype=np.int16)
    y = load_waveform(pcm, sampling_rate=16000)
    np.testing.assert_allclose(y, [0.0, 32767 / 32768, -1.0, 0.5])
    assert y[1] == pytest.approx(1.0, abs=1e-4)


def test_int32_and_uint8_pcm_scaling():
    y32 = load_waveform(np.array([2**31 - 1, -(2**31), 0], dtype=np.int32), sampling_rate=16000)
    np.testing.assert_allclose(y32, [1.0, -1.0, 0.0], atol=1e-6)
    y8 = load_waveform(np.array([0, 128, 255], dtype=np.uint8), sampling_rate=16000)
    np.testing.assert_allclose(y8, [-1.0, 0.0, 127 / 128])


def test_file_round_trip_resamples(tmp_path):
    path = tmp_path / "clip.wav"
    x = tone(440.0, 0.5, sampling_rate=22050, amplitude=0.3)
    soundfile.write(path, x, 22050, subtype="FLOAT")
    y = load_waveform(path)
    assert len(y) == 8000
    assert abs(_dominant_hz(y, 16000) - 440.0) <= 5.0
    np.testing.assert_allclose(y[500:-500], tone(440.0, 0.5, amplitude=0.3)[500:-500], atol=0.01)
    # Same file at its own rate, string path, stated rate agrees: values come back unchanged.
    np.testing.assert_allclose(load_waveform(str(path), sampling_rate=22050, target_rate=22050), x)


def test_stereo_int16_file_downmixes(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = tone(200.0, 0.1, amplitude=0.5), np.full(1600, 0.25, dtype=np.float32)
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    with pytest.warns(UserWarning, match="Downmixed"):
        y = load_waveform(path)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-4)


def test_file_rate_mismatch_raises(tmp_path):
    path = tmp_path / "clip.wav"
    soundfile.write(path, tone(440.0, 0.1, sampling_rate=22050), 22050)
    with pytest.raises(ValueError, match="22050 Hz.*sampling_rate=16000"):
        load_waveform(path, sampling_rate=16000)


def test_missing_file_raises_with_path(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_waveform(path)


def test_array_without_rate_raises():
    with pytest.raises(ValueError, match="sampling_rate="):
        load_waveform(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="sampling_rate="):
        load_waveform(torch.zeros(100))


def test_nan_and_inf_raise_with_count_and_position():
    x = np.zeros(1000, dtype=np.float32)
    x[[10, 20]] = np.nan
    x[30] = np.inf
    with pytest.raises(ValueError, match=r"3 non-finite.*NaN.*sample 10\b"):
        load_waveform(x, sampling_rate=16000)


def test_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        load_waveform(np.zeros(0, dtype=np.float32), sampling_rate=16000)


def test_too_many_dims_and_ambiguous_layout_raise():
    with pytest.raises(ValueError, match="1-D"):
        load_waveform(np.zeros((1, 2, 100), dtype=np.float32), sampling_rate=16000)
    with pytest.raises(ValueError, match="channels"):
        load_waveform(np.zeros((100, 100), dtype=np.float32), sampling_rate=16000)


def test_unsupported_type_raises():
    with pytest.raises(TypeError, match="file path"):
        load_waveform([0.0, 0.1], sampling_rate=16000)


def test_silence_is_allowed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = load_waveform(silence(0.5), sampling_rate=16000)
    assert len(y) == 8000 and not np.any(y)


def test_unnormalized_float_warns_but_passes_as_is():
    x = 2.0 * tone(440.0, 0.1, amplitude=1.0)
    with pytest.warns(UserWarning, match="passed on as is") as record:
        y = load_waveform(x, sampling_rate=16000)
    assert len(record) == 1
    np.testing.assert_array_equal(y, x)


def test_too_long_error_names_limit_and_remedies():
    x = tone(440.0, 3.0)
    with pytest.raises(ValueError, match=r"3\.00 s.*max_seconds=2.*truncate.*split"):
        load_waveform(x, sampling_rate=16000, max_seconds=2)


@pytest.mark.parametrize("in_rate", [16000, 44100])
def test_truncate_keeps_exactly_max_seconds_and_warns(in_rate):
    x = tone(440.0, 3.0, sampling_rate=in_rate)
    with pytest.warns(UserWarning, match="truncated"):
        y = load_waveform(x, sampling_rate=in_rate, max_seconds=1.5, on_too_long="truncate")
    assert len(y) == int(1.5 * 16000)
    if in_rate == 16000:
        np.testing.assert_array_equal(y, x[:24000])
    assert abs(_dominant_hz(y, 16000) - 440.0) <= 5.0


def test_short_clip_under_limit_is_untouched():
    x = tone(440.0, 1.0)
    np.testing.assert_array_equal(load_waveform(x, sampling_rate=16000, max_seconds=2), x)


def test_bad_on_too_long_lists_allowed_values():
    with pytest.raises(ValueError, match="'error'.*'truncate'"):
        load_waveform(tone(440.0, 0.1), sampling_rate=16000, on_too_long="drop")


def test_tone_and_silence_helpers():
    t = tone(1000.0, 0.25, sampling_rate=8000, amplitude=0.2)
    assert len(t) == 2000
    assert np.max(np.abs(t)) == pytest.approx(0.2, abs=1e-6)
    assert _dominant_hz(t, 8000) == pytest.approx(1000.0, abs=4.0)
    assert t[0] == 0.0 and t[2] == pytest.approx(0.2)  # sin(2π·1000·2/8000) = sin(π/2)
    s = silence(0.25, sampling_rate=8000)
    assert s.dtype == np.float32 and len(s) == 2000 and not np.any(s)
    assert duration_seconds(s, 8000) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="Nyquist"):
        tone(9000.0, 0.1, sampling_rate=16000)


@pytest.mark.parametrize("seconds", [0, -0.5, float("nan")])
def test_probe_helpers_refuse_lengths_that_give_no_audio(seconds):
    with pytest.raises(ValueError, match="seconds must be a positive number"):
        tone(440.0, seconds)
    with pytest.raises(ValueError, match="seconds must be a positive number"):
        silence(seconds)
