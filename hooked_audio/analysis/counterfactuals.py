"""Counterfactual audio for an input: the same prompt with every clip silenced, replaced by noise, or removed.

These are the references the listening analyses compare against (Glazer et al. 2026): what the model does when
the audio carries nothing.

- ``silence_like``: the same inputs (same token layout) with every clip's features those of digital silence.
- ``matched_noise``: Gaussian noise waveforms with each clip's length and RMS (as the model hears it, at 16 kHz);
  build inputs from them with the same prompt (equal lengths give the same token layout).
- ``without_audio``: the same tokens with each clip's placeholder run (and its marker tokens) cut out and no
  audio, re-padded. Other text a chat template writes around a clip stays (Qwen's newline after
  ``<|audio_eos|>``, Qwen2-Audio-Instruct's "Audio 1:" label), so it is not the prompt rendered without the clip:
  for that, build the inputs again from the conversation with the audio items left out.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import soxr
import torch
from jaxtyping import Float

from ..audio.inputs import AudioTextInput
from ..audio.io import DEFAULT_SAMPLING_RATE, pcm_to_float32

# Whisper-style log-mel of an all-zero waveform: log10(1e-10) = -10, clamped, then (x + 4) / 4.
WHISPER_SILENCE = -1.5


def silence_like(inputs: AudioTextInput, silence_value: float = WHISPER_SILENCE, features_key: str | None = None) -> AudioTextInput:
    """The same inputs (token ids, masks, frame mask, spans) with every clip's features replaced by those of
    digital silence of the same length. ``silence_value`` is the feature value of an all-zero waveform:
    -1.5 for Whisper-style log-mel features (every family here uses them); ``features_key`` defaults to
    the only floating-point audio tensor."""
    if not inputs.has_audio:
        raise ValueError("the inputs have no audio to replace with silence")
    if features_key is None:
        floats = [k for k, v in inputs.audio.items() if v.is_floating_point()]
        if len(floats) != 1:
            raise ValueError(f"pass features_key= (audio tensors: {sorted(inputs.audio)})")
        features_key = floats[0]
    elif features_key not in inputs.audio:
        raise ValueError(f"features_key {features_key!r} is not one of the audio tensors {sorted(inputs.audio)}")
    audio = dict(inputs.audio)
    audio[features_key] = torch.full_like(audio[features_key], silence_value)
    return replace(inputs, audio=audio)


def matched_noise(clips, seed: int = 0, sampling_rate: int = DEFAULT_SAMPLING_RATE) -> list[Float[np.ndarray, " sample"]]:
    """White Gaussian noise of each clip's length and RMS as the model hears it (float32 waveforms at the clips'
    rate ``sampling_rate``), seeded. The level is matched at the model's 16 kHz: a clip at another rate is
    measured after resampling, as ``build_inputs`` reads it, and the noise is made there and brought to the clip's
    rate, so resampling it back does not lose the share of white noise above 8 kHz that the clip did not have.
    Integer PCM clips are measured as ``build_inputs`` reads them (int16 / 32768), the noise is float.
    A silent clip gives silence. Gaussian peaks reach about 4 x RMS, so a loud clip's noise can exceed 1.0
    (``build_inputs`` warns; it is passed on unclipped to keep the RMS). Build the counterfactual with the same prompt:
    ``model.build_inputs(prompt, matched_noise(clips, sampling_rate=sr), sampling_rate=sr)``."""
    if isinstance(clips, (np.ndarray, torch.Tensor)) and clips.ndim == 1:
        raise TypeError("clips is one waveform: pass a list of clips, e.g. matched_noise([clip])")
    if isinstance(clips, (str, os.PathLike)) or any(isinstance(c, (str, os.PathLike)) for c in clips):
        raise TypeError("matched_noise takes waveforms (arrays or tensors), not paths: load them first, e.g. "
                        "hooked_audio.load_waveform(path) (16 kHz)")
    rng = np.random.default_rng(seed)
    out = []
    for index, clip in enumerate(clips):
        wave = np.asarray(clip.numpy() if isinstance(clip, torch.Tensor) else clip)
        wave = pcm_to_float32(wave).astype(np.float64)  # integer PCM at the level the model hears (int16 / 32768)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"clip {index}: matched_noise needs mono waveforms (1-D, non-empty), got shape {wave.shape}")
        heard = _resampled(wave, sampling_rate, DEFAULT_SAMPLING_RATE)
        noise = rng.standard_normal(heard.size)
        noise *= _rms(heard) / max(_rms(noise), 1e-30)
        if sampling_rate != DEFAULT_SAMPLING_RATE:  # at the clip's rate, rescaled so that its resampling is matched
            noise = _resampled(noise, DEFAULT_SAMPLING_RATE, sampling_rate, wave.size)
            noise *= _rms(heard) / max(_rms(_resampled(noise, sampling_rate, DEFAULT_SAMPLING_RATE)), 1e-30)
        out.append(noise.astype(np.float32))
    return out


def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))


def _resampled(wave: np.ndarray, rate: int, target: int, length: int | None = None) -> np.ndarray:
    """``wave`` at ``target`` Hz with the resampler ``load_waveform`` uses (and cut or zero-padded to ``length``)."""
    if rate != target:
        wave = soxr.resample(wave, rate, target, quality="HQ")
    if length is not None:
        wave = np.pad(wave[:length], (0, max(0, length - len(wave))))
    return wave


# Marker tokens that templates put before a clip where the processor names none (Voxtral's Mistral template).
KNOWN_AUDIO_MARKERS = ("[BEGIN_AUDIO]",)


def audio_marker_tokens(processor) -> list[str]:
    """The tokens a processor puts right around each clip's placeholders: its ``audio_bos_token`` /
    ``audio_eos_token`` (Qwen's ``<|audio_bos|>``, Music Flamingo's ``<|sound_bos|>``), else the known markers
    its tokenizer has (Voxtral's ``[BEGIN_AUDIO]``); empty where there are none."""
    named = [t for t in (getattr(processor, "audio_bos_token", None), getattr(processor, "audio_eos_token", None)) if t]
    if named:
        return named
    vocab = processor.tokenizer.get_vocab() if getattr(processor, "tokenizer", None) is not None else {}
    return [t for t in KNOWN_AUDIO_MARKERS if t in vocab]


def without_audio(model, inputs, markers: list[str] | None = None) -> AudioTextInput:
    """``inputs`` with every clip removed: each row's audio placeholder runs are cut out together with the marker
    tokens directly next to them, the audio tensors dropped, and the rows re-padded on the same side. Every other
    token is kept, so the last position is still the answer position; text the template put around the clip
    (a newline, an "Audio 1:" label) is kept too, so this differs from the conversation rendered without the clip.
    ``markers`` (token strings) defaults to ``audio_marker_tokens(model.processor)``; for a family whose template
    wraps clips in other tokens, pass them."""
    inputs = model.to_inputs(inputs)
    if not inputs.has_audio:
        raise ValueError("the inputs have no audio to remove")
    tokenizer = model.tokenizer
    if markers is None:
        markers = audio_marker_tokens(model.processor) if model.processor is not None else []
    if markers and tokenizer is None:
        raise ValueError("markers are token strings, and this model has no tokenizer to look them up: pass markers=[]")
    marker_ids = set()
    for marker in markers:
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"marker {marker!r} is not a token of this tokenizer")
        marker_ids.add(int(token_id))
    rows = []
    for ids in inputs.real_token_rows():
        audio = [t == inputs.audio_token_id for t in ids]
        drop = [
            a or (t in marker_ids and ((p > 0 and audio[p - 1]) or (p + 1 < len(ids) and audio[p + 1])))
            for p, (t, a) in enumerate(zip(ids, audio))
        ]
        rows.append([t for t, d in zip(ids, drop) if not d])
    pad = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else (model.cfg.pad_token_id or 0)
    return inputs.with_token_rows(rows, pad, keep_audio=False)
