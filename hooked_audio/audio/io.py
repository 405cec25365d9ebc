"""Waveform in, clean waveform out: the first step of every model's data path.

Every model in the library consumes 16 kHz mono float32 waveforms. Users hand in file paths, numpy arrays
or torch tensors at any rate, mono or stereo, float or integer PCM, or a ``datasets`` audio dict
(``{"array": ..., "sampling_rate": ...}``). :func:`load_waveform` turns any of those into a 1-D float32
numpy array at the target rate, or raises an error that says what was wrong and how to fix it. Feature
extraction (log-mel) is not done here; it belongs to the HF feature extractor.

Integer samples are scaled by the range of their dtype, so the dtype must be the PCM format the numbers
are in. Containers that cannot be right are refused rather than guessed (see :func:`load_waveform`).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any, Union

import numpy as np
import soundfile
import soxr
from jaxtyping import Float

DEFAULT_SAMPLING_RATE = 16000
MAX_CHANNELS = 8  # the smaller axis of a 2-D array is taken as channels only if it is at most this long
ON_TOO_LONG = ("error", "truncate")

WaveformSource = Union[str, os.PathLike, np.ndarray, Any]  # Any: a torch.Tensor (torch is not imported here)


def load_waveform(
    source: WaveformSource,
    sampling_rate: int | None = None,
    target_rate: int = DEFAULT_SAMPLING_RATE,
    max_seconds: float | None = None,
    on_too_long: str = "error",
) -> Float[np.ndarray, "samples"]:
    """Load a file, numpy array or torch tensor as a mono float32 waveform at ``target_rate``.

    Files carry their own rate (``sampling_rate``, if given, must agree), and so does a ``datasets``
    audio dict ``{"array": ..., "sampling_rate": ...}`` (or an undecoded ``{"bytes": ..., "path": ...}``,
    read from its bytes when present, else from its path); arrays and tensors do not, so ``sampling_rate``
    is required for them. Only local files are read (a ``file://`` or http(s) URL is refused). Multichannel
    audio is averaged to mono (with a warning), and a different rate is resampled with soxr. NaN/inf, empty input and clips longer than ``max_seconds`` raise
    ``ValueError`` (or, for length, truncate with ``on_too_long="truncate"``).

    Sample values, by dtype:

    - float: taken as is, nominally in [-1, 1]; a peak above 1 warns. Floats that are all whole numbers
      with a peak of 2 or more are integer PCM stored as float (e.g. ``np.array(int16_samples, float)``)
      and are refused: cast them to their integer type or divide by the format's full scale.
    - int16, int8, int32: PCM, scaled by the dtype's range (int16: -32768 -> -1.0). int32 whose values
      all fit in int16 is refused (as 32-bit PCM it would be below -96 dBFS, i.e. silence: it is almost
      surely 16-bit audio in a wider container); int32 whose peak fits in 24 bits warns (24-bit audio
      in an int32 container must be divided by 2**23, not 2**31).
    - int64: refused (no audio format stores 64-bit samples; ``torch.tensor(list_of_ints)`` and
      ``np.array(list_of_ints)`` make int64 from 16-bit samples). The error says which cast fits the values.
    - uint8: 8-bit offset-binary PCM (128 is zero). Wider unsigned types are refused.
    - bool, complex and other dtypes: refused.

    All-zero signed integer input is silence in every container and is accepted; all-zero uint8 (a constant
    -1.0 in offset binary, not silence) is refused. Big-endian dtypes are read as their values.
    """
    if on_too_long not in ON_TOO_LONG:
        raise ValueError(f"on_too_long={on_too_long!r} is not allowed; use one of {ON_TOO_LONG}.")
    _check_rate(target_rate, "target_rate")
    if max_seconds is not None and (
        isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float, np.integer, np.floating))
        or not max_seconds > 0  # NaN too
    ):
        raise ValueError(f"max_seconds must be a positive number of seconds (or None for no limit), got {max_seconds!r}.")

    if isinstance(source, Mapping):
        source, sampling_rate = _from_mapping(source, sampling_rate)
    if isinstance(source, (str, os.PathLike, _EncodedBytes)):
        data, in_rate = _read_file(source, sampling_rate)
        channels_axis: int | None = 1 if data.ndim == 2 else None  # soundfile gives (samples, channels)
    else:
        data = _to_numpy(source)
        if sampling_rate is None:
            raise ValueError(
                f"A {type(source).__name__} has no sampling rate of its own; pass it explicitly, "
                "e.g. load_waveform(array, sampling_rate=44100)."
            )
        _check_rate(sampling_rate, "sampling_rate")
        in_rate = int(sampling_rate)
        channels_axis = None
    if not data.dtype.isnative:  # big-endian samples (np.frombuffer(raw, ">i2")): the dtype checks below compare native types
        data = data.astype(data.dtype.newbyteorder("="))

    is_float_input = np.issubdtype(data.dtype, np.floating)
    if is_float_input:
        _check_float_is_not_integer_pcm(data)
    wave = _downmix(pcm_to_float32(data), channels_axis)
    if wave.size == 0:
        raise ValueError("The waveform is empty (0 samples); pass at least one sample of audio.")
    _check_finite(wave, in_rate)
    if is_float_input:
        peak = float(np.max(np.abs(wave)))
        if peak > 1.0:
            warnings.warn(
                f"Float waveform has peak amplitude {peak:.3g} > 1.0; it is passed on as is "
                "(normalize it first if the model expects audio in [-1, 1]).",
                stacklevel=2,
            )

    n_keep = None
    if max_seconds is not None:
        seconds = wave.shape[0] / in_rate
        if seconds > max_seconds:
            if on_too_long == "error":
                raise ValueError(
                    f"The clip is {seconds:.2f} s long ({wave.shape[0]} samples at {in_rate} Hz), over the limit of "
                    f"max_seconds={max_seconds} s ({math.floor(max_seconds * in_rate)} samples). "
                    'Pass on_too_long="truncate" to keep the first max_seconds, or split the clip into '
                    "shorter pieces and process them one by one."
                )
            warnings.warn(
                f"The clip is {seconds:.2f} s long; truncated to the first {max_seconds} s "
                "(max_seconds).",
                stacklevel=2,
            )
            n_keep = int(round(max_seconds * target_rate))
            # Cut at the input rate first (plus a margin for the resampler), the exact cut comes after.
            wave = wave[: math.ceil(max_seconds * in_rate) + in_rate // 100 + 1]

    if in_rate != target_rate:
        wave = soxr.resample(wave, in_rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    if n_keep is not None:
        wave = wave[:n_keep]
    if wave.size == 0:
        steps = ([f"resampling {in_rate} Hz -> {target_rate} Hz"] if in_rate != target_rate else []) + (
            [f"truncating to max_seconds={max_seconds}"] if n_keep is not None else []
        )
        raise ValueError(
            f"The waveform is empty after {' and '.join(steps)}: 0 samples at {target_rate} Hz. Pass a longer clip"
            + (" or a larger max_seconds." if n_keep is not None else ".")
        )
    return np.ascontiguousarray(wave, dtype=np.float32)


def duration_seconds(
    waveform: Float[np.ndarray, "samples"], sampling_rate: int = DEFAULT_SAMPLING_RATE
) -> float:
    """Length of a waveform in seconds (the last axis is time)."""
    return np.shape(waveform)[-1] / sampling_rate


def silence(seconds: float, sampling_rate: int = DEFAULT_SAMPLING_RATE) -> Float[np.ndarray, "samples"]:
    """Digital silence (all zeros): a baseline probe for interpretability studies."""
    _check_seconds(seconds)
    _check_rate(sampling_rate, "sampling_rate")
    return np.zeros(int(round(seconds * sampling_rate)), dtype=np.float32)


def tone(
    freq_hz: float,
    seconds: float,
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    amplitude: float = 0.5,
) -> Float[np.ndarray, "samples"]:
    """A pure sine ``amplitude * sin(2π f t)``: a simple probe with a known spectrum."""
    _check_seconds(seconds)
    _check_rate(sampling_rate, "sampling_rate")
    if not 0 <= freq_hz < sampling_rate / 2:
        raise ValueError(
            f"freq_hz={freq_hz} must be in [0, {sampling_rate / 2}) (below Nyquist for "
            f"sampling_rate={sampling_rate}); higher frequencies alias."
        )
    t = np.arange(int(round(seconds * sampling_rate))) / sampling_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


# --- helpers -------------------------------------------------------------------------------------------


class _EncodedBytes(bytes):
    """The encoded file of a ``datasets`` ``{"bytes": ...}`` dict (read like a file), with its name for messages."""

    name = "the audio dict's bytes"


def _from_mapping(source: Mapping, sampling_rate: int | None) -> tuple[Any, int | None]:
    """A ``datasets`` audio dict: ``{"array": samples, "sampling_rate": rate}``, or an undecoded one,
    ``{"bytes": encoded_file, "path": name}`` / ``{"path": file}`` (``Audio(decode=False)``): as ``datasets``
    decodes it, the bytes when present, else the file; a ``"sampling_rate"`` in it must be the file's."""
    if "array" in source and source["array"] is not None:
        own_rate = source.get("sampling_rate")
        if own_rate is None:
            raise ValueError(
                'This audio dict has an "array" but no "sampling_rate"; add it, e.g. '
                '{"array": samples, "sampling_rate": 16000}.'
            )
        if sampling_rate is not None and sampling_rate != own_rate:
            raise ValueError(
                f"The audio dict says sampling_rate={own_rate} but sampling_rate={sampling_rate} was also "
                "given; leave sampling_rate out (the dict's own rate is used)."
            )
        return source["array"], own_rate
    if source.get("bytes") is not None or source.get("path"):
        own_rate = source.get("sampling_rate")
        if sampling_rate is not None and own_rate is not None and sampling_rate != own_rate:
            raise ValueError(
                f"The audio dict says sampling_rate={own_rate} but sampling_rate={sampling_rate} was also "
                "given; leave sampling_rate out (the file's own rate is used)."
            )
        rate = sampling_rate if sampling_rate is not None else own_rate
        encoded = source.get("bytes")
        if encoded is not None:
            if not isinstance(encoded, (bytes, bytearray, memoryview)):
                raise TypeError(f'The audio dict\'s "bytes" is a {type(encoded).__name__}; it must be the encoded file as bytes.')
            return _EncodedBytes(encoded), rate
        return source["path"], rate
    raise TypeError(
        f"Cannot load a waveform from a dict with keys {sorted(map(str, source))}; pass a file path, an "
        'array or tensor, or a datasets-style {"array": samples, "sampling_rate": rate} or {"bytes": encoded_file}.'
    )


def _check_seconds(seconds: Any) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)) or not seconds > 0:
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")


def _check_rate(rate: Any, name: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{name} must be a positive integer number of Hz, got {rate!r}.")


def _read_file(path: str | os.PathLike | _EncodedBytes, sampling_rate: int | None) -> tuple[np.ndarray, int]:
    if isinstance(path, _EncodedBytes):
        name, file = path.name, io.BytesIO(path)
    else:
        name = repr(os.fspath(path))
        if not os.path.isfile(path):
            if "://" in os.fspath(path):
                raise FileNotFoundError(
                    f"No audio file at {name}: load_waveform reads local files only and downloads nothing; for a "
                    "file:// URL pass its path, for an http(s) URL download the file first."
                )
            raise FileNotFoundError(f"No audio file at {name}.")
        file = path
    try:
        data, file_rate = soundfile.read(file, dtype="float32", always_2d=False)
    except soundfile.LibsndfileError as error:
        raise ValueError(
            f"Cannot decode {name} as audio ({error}); convert it to WAV or FLAC (e.g. ffmpeg -i IN OUT.wav), "
            "or pass the decoded samples as an array with sampling_rate=."
        ) from error
    if sampling_rate is not None and sampling_rate != file_rate:
        raise ValueError(
            f"{name} is recorded at {file_rate} Hz but sampling_rate={sampling_rate} was "
            "given; leave sampling_rate out for files (their own rate is used)."
        )
    return data, int(file_rate)


def _to_numpy(source: Any) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source
    if hasattr(source, "detach") and hasattr(source, "cpu"):  # torch.Tensor, without importing torch
        tensor = source.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()  # bfloat16/float16 -> float32 (numpy has no bfloat16)
        return tensor.numpy()
    raise TypeError(
        f"Cannot load a waveform from a {type(source).__name__}; pass a file path, a numpy array or a "
        "torch tensor."
    )


def pcm_to_float32(data: np.ndarray) -> np.ndarray:
    """Float arrays to float32; integer PCM scaled to [-1, 1] (int16: -32768 -> -1.0, 32767 -> ~1.0)."""
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    if np.issubdtype(data.dtype, np.integer):
        _check_integer_container(data)
    if np.issubdtype(data.dtype, np.signedinteger):
        return (data.astype(np.float64) / -np.iinfo(data.dtype).min).astype(np.float32)
    if np.issubdtype(data.dtype, np.unsignedinteger):  # unsigned PCM (8-bit wav) is offset-binary
        half = (int(np.iinfo(data.dtype).max) + 1) // 2
        return ((data.astype(np.float64) - half) / half).astype(np.float32)
    raise TypeError(
        f"Unsupported sample dtype {data.dtype}; pass float samples in [-1, 1] or integer PCM "
        "(int16, int32, uint8)."
    )


_INT16_FULL_SCALE = 2**15
_INT24_FULL_SCALE = 2**23


def _integer_cast_hint(low: int, high: int) -> str:
    """Which PCM dtype the values ``low..high`` fit, as the cast to write."""
    if low >= 0 and high <= 255:
        return "if they are 8-bit samples (0..255, 128 = zero), pass x.astype(np.uint8)"
    if -(2**15) <= low and high < 2**15:
        return "if they are 16-bit samples, pass x.astype(np.int16) (or x / 32768 as float32)"
    if -(2**23) <= low and high < 2**23:
        return "if they are 24-bit samples, pass x / 2**23 as float32; if 32-bit, x.astype(np.int32)"
    if -(2**31) <= low and high < 2**31:
        return "if they are 32-bit samples, pass x.astype(np.int32)"
    return "they exceed every PCM range: rescale them to float32 in [-1, 1]"


def _check_integer_container(data: np.ndarray) -> None:
    """Refuse integer dtypes whose range is not the PCM format the values are in (see ``load_waveform``)."""
    if data.size == 0:
        return
    low, high = int(data.min()), int(data.max())
    if low == 0 and high == 0 and data.dtype == np.uint8:
        raise ValueError(
            "uint8 samples that are all 0 (e.g. np.zeros(n, np.uint8)) are not silence: uint8 is 8-bit offset-binary "
            "PCM, where 128 is zero and 0 is full-scale negative, so this is a constant -1.0. For silence pass "
            "np.full(n, 128, np.uint8) or np.zeros(n, np.float32); for a constant -1.0 pass it as float32."
        )
    if low == 0 and high == 0:
        return  # silence is silence in any signed container
    peak = max(abs(low), abs(high))
    dtype = data.dtype
    fix = "Or pass float32 samples in [-1, 1]."
    if dtype in (np.int64, np.uint64):
        raise ValueError(
            f"{dtype} samples (values {low}..{high}) are ambiguous: no audio format stores 64-bit samples, "
            f"and dividing by the {dtype} range would make this clip near-silent. (torch.tensor(list_of_ints) "
            f"and np.array(list_of_ints) give int64.) Say which format the numbers are in: "
            f"{_integer_cast_hint(low, high)}. {fix}"
        )
    if np.issubdtype(dtype, np.unsignedinteger) and dtype != np.uint8:
        raise ValueError(
            f"{dtype} samples (values {low}..{high}) are not a PCM format (only 8-bit audio is unsigned); "
            f"{_integer_cast_hint(low, high)}. {fix}"
        )
    if dtype == np.int32 and peak <= _INT16_FULL_SCALE:
        raise ValueError(
            f"int32 samples whose values all fit in int16 (peak {peak} of 2147483647): as 32-bit PCM this clip "
            "is below -96 dBFS, i.e. silence, so these are almost surely 16-bit samples in a wider container. "
            "Pass x.astype(np.int16) if they are 16-bit; if this really is near-silent 32-bit audio, pass "
            f"x.astype(np.float32) / 2**31. {fix}"
        )
    if dtype == np.int32 and peak <= _INT24_FULL_SCALE:
        warnings.warn(
            f"int32 samples peak at {peak}, within 24 bits: taken as 32-bit PCM (peak "
            f"{20 * math.log10(peak / 2**31):.0f} dBFS). If these are 24-bit samples in an int32 container, "
            "pass x / 2**23 as float32 instead.",
            stacklevel=4,
        )


def _check_float_is_not_integer_pcm(data: np.ndarray) -> None:
    """Refuse float arrays that hold integer PCM values (whole numbers with a peak of 2 or more)."""
    if data.size == 0 or not np.all(np.isfinite(data)):
        return  # empty and NaN/inf get their own errors
    peak = float(np.max(np.abs(data)))
    if peak >= 2.0 and np.array_equal(data, np.round(data)):
        low, high = int(data.min()), int(data.max())
        raise ValueError(
            f"Float samples that are all whole numbers up to {peak:.0f} look like integer PCM stored as "
            f"float, not a waveform in [-1, 1]; {_integer_cast_hint(low, high)}."
        )


def _downmix(data: np.ndarray, channels_axis: int | None) -> np.ndarray:
    """1-D passes through; 2-D is averaged over its channel axis (the short one, ≤ MAX_CHANNELS)."""
    if data.ndim == 1:
        return data
    if data.ndim != 2:
        raise ValueError(
            f"Expected a 1-D (samples) or 2-D (channels, samples)/(samples, channels) waveform, got shape "
            f"{data.shape}; pass one clip at a time."
        )
    if channels_axis is None:
        rows, cols = data.shape
        if min(rows, cols) > MAX_CHANNELS:
            raise ValueError(
                f"Cannot tell channels from samples in shape {data.shape}: neither axis has at most "
                f"{MAX_CHANNELS} entries. Pass a 1-D waveform or a (channels, samples) array."
            )
        channels_axis = 0 if rows <= cols else 1  # the shorter axis; a tie counts as (channels, samples)
    n_channels = data.shape[channels_axis]
    if n_channels > 1:
        warnings.warn(
            f"Downmixed {n_channels} channels to mono by averaging (input shape {data.shape}).",
            stacklevel=3,
        )
    return data.mean(axis=channels_axis, dtype=np.float32)


def _check_finite(wave: np.ndarray, rate: int) -> None:
    bad = ~np.isfinite(wave)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"The waveform has {int(bad.sum())} non-finite samples (NaN or inf); the first is at sample "
            f"{first} ({first / rate:.3f} s at {rate} Hz). Clean or replace them (e.g. np.nan_to_num)."
        )
