"""Neighbouring wrong values for the audio inputs (``load_waveform``, ``build_inputs``): each is refused with a
message that says the fix, or read as what it is; a valid neighbour still gives the right waveform."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import soxr
import torch
from conftest import sine

from hooked_audio.audio import load_waveform

PCM16 = (sine(440, 0.25) * 32767).astype(np.int16)


def test_big_endian_integer_samples_get_the_native_checks():
    # np.frombuffer(raw, ">i8") / ">i4": the dtype checks compared against native int64/int32 and missed them,
    # so 16-bit values were divided by 2**63 or 2**31: a near-silent clip, no error
    with pytest.raises(ValueError, match=r"int64 samples .* are ambiguous.*astype\(np\.int16\)"):
        load_waveform(PCM16.astype(">i8"), sampling_rate=16000)
    with pytest.raises(ValueError, match=r"int32 samples whose values all fit in int16"):
        load_waveform(PCM16.astype(">i4"), sampling_rate=16000)
    # control: big-endian int16 and float32 are the same waveform as their native twins
    native = load_waveform(PCM16, sampling_rate=16000)
    np.testing.assert_array_equal(load_waveform(PCM16.astype(">i2"), sampling_rate=16000), native)
    np.testing.assert_array_equal(load_waveform(native.astype(">f4"), sampling_rate=16000), native)


def test_all_zero_uint8_is_refused_not_passed_as_silence():
    # np.zeros(n, np.uint8) / torch.zeros(n, dtype=torch.uint8) came out as a constant -1.0 (offset binary),
    # while the docstring promised silence for all-zero integers
    with pytest.raises(ValueError, match=r"uint8 samples that are all 0 .* not silence.*np\.full\(n, 128, np\.uint8\)"):
        load_waveform(np.zeros(800, np.uint8), sampling_rate=16000)
    with pytest.raises(ValueError, match=r"uint8 samples that are all 0"):
        load_waveform(torch.zeros(800, dtype=torch.uint8), sampling_rate=16000)
    # controls: uint8 silence is 128, signed all-zero is silence
    assert not load_waveform(np.full(800, 128, np.uint8), sampling_rate=16000).any()
    assert not load_waveform(np.zeros(800, np.int16), sampling_rate=16000).any()


def test_a_clip_that_resamples_or_truncates_to_nothing_is_refused():
    # one sample at 44.1 kHz resampled to 0 samples, and a tiny max_seconds truncated to 0: returned empty
    with pytest.raises(ValueError, match=r"empty after resampling 44100 Hz -> 16000 Hz"):
        load_waveform(np.array([0.1], np.float32), sampling_rate=44100)
    with pytest.raises(ValueError, match=r"empty after truncating to max_seconds=1e-05.*larger max_seconds"), \
            pytest.warns(UserWarning, match="truncated"):
        load_waveform(sine(440, 0.1), sampling_rate=16000, max_seconds=1e-5, on_too_long="truncate")
    assert load_waveform(np.array([0.1, 0.2, 0.1], np.float32), sampling_rate=44100).shape == (1,)  # control


@pytest.mark.parametrize("max_seconds", [0, -1.0, float("nan"), True, "4"])
def test_max_seconds_must_be_a_positive_number(max_seconds):
    # NaN silently disabled the limit, 0 truncated to an empty clip, -1 read "over the limit of -1 s"
    with pytest.raises(ValueError, match=r"max_seconds must be a positive number of seconds"):
        load_waveform(sine(440, 0.5), sampling_rate=16000, max_seconds=max_seconds, on_too_long="truncate")


def test_max_seconds_control():
    with pytest.warns(UserWarning, match="truncated to the first 0.25 s"):
        wave = load_waveform(sine(440, 0.5), sampling_rate=16000, max_seconds=np.float64(0.25), on_too_long="truncate")
    assert wave.shape == (4000,)


def _wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_undecoded_datasets_dict_reads_its_bytes():
    # datasets' Audio(decode=False) (or no torchcodec) gives {"bytes": encoded, "path": "name.wav"} with a path that
    # does not exist here: it was refused as "No audio file at 'clip.wav'" (and {"bytes"} alone as an unknown dict)
    wave44 = sine(440, 0.3, 44100)
    encoded = _wav_bytes(wave44, 44100)
    expected = soxr.resample(soundfile.read(io.BytesIO(encoded), dtype="float32")[0], 44100, 16000, quality="HQ")
    for audio in ({"bytes": encoded, "path": "clip.wav"}, {"bytes": encoded}, {"bytes": encoded, "path": None}):
        np.testing.assert_allclose(load_waveform(audio), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"audio dict says sampling_rate=16000 but sampling_rate=8000"):
        load_waveform({"bytes": encoded, "sampling_rate": 16000}, sampling_rate=8000)
    with pytest.raises(ValueError, match=r"recorded at 44100 Hz but sampling_rate=16000"):
        load_waveform({"bytes": encoded, "sampling_rate": 16000})  # the dict's rate is checked against the file's
    with pytest.raises(TypeError, match=r'"bytes" is a str; it must be the encoded file'):
        load_waveform({"bytes": "clip.wav"})
    with pytest.raises(ValueError, match=r"Cannot decode the audio dict's bytes as audio.*ffmpeg"):
        load_waveform({"bytes": b"not audio", "path": "clip.wav"})


def test_path_dict_rate_is_checked_against_the_file(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, sine(440, 0.3, 22050), 22050)
    with pytest.raises(ValueError, match=r"recorded at 22050 Hz but sampling_rate=8000"):
        load_waveform({"path": str(path), "array": None, "sampling_rate": 8000})
    assert load_waveform({"path": str(path), "sampling_rate": 22050}).shape == (4800,)  # control


def test_undecodable_file_and_urls_say_what_to_do(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("hello")
    with pytest.raises(ValueError, match=r"Cannot decode .*bad\.wav.* as audio.*convert it to WAV or FLAC"):
        load_waveform(bad)
    with pytest.raises(FileNotFoundError, match=r"reads local files only and downloads nothing"):
        load_waveform("https://example.com/clip.wav")
    good = tmp_path / "good.wav"
    soundfile.write(good, sine(440, 0.3), 16000)
    with pytest.raises(FileNotFoundError, match=r"for a file:// URL pass its path"):
        load_waveform(good.as_uri())
    assert load_waveform(good).shape == (4800,)  # control


def test_scipy_rate_waveform_pair_is_refused(model):
    # scipy.io.wavfile.read returns (rate, data): taken as two clips (a count mismatch, or "cannot load an int")
    question = "<|audio_bos|><|AUDIO|><|audio_eos|> what is said ?"
    with pytest.raises(ValueError, match=r"\(rate, waveform\) pair .*scipy.*audio=waveform, sampling_rate=rate"):
        model.build_inputs(question, (16000, PCM16))
    inputs = model.build_inputs(question, PCM16, sampling_rate=16000)  # control
    assert len(inputs.audio_spans[0]) == 1
