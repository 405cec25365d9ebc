"""Running an HF processor on texts and clips, including processors whose ``__call__`` takes no audio.

HF's ``VoxtralProcessor`` leaves audio to mistral_common; for a Voxtral checkpoint that ships it with an
ordinary tokenizer (the bundled ``toy-voxtral``), ``process`` does what mistral_common does: each clip is padded
to whole feature-extractor windows, each window is one feature row, and the clip's placeholder becomes one
token per 8 mel hops (2 mel frames per encoder frame, 4 encoder frames stacked per token).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def takes_no_audio(processor) -> bool:
    """Whether the processor's ``__call__`` refuses audio (HF's ``VoxtralProcessor``)."""
    return type(processor).__name__ == "VoxtralProcessor"


def chat_templater(processor):
    """What renders a chat to text: the processor, or its tokenizer where the processor's template tokenizes
    audio itself (Voxtral's, through mistral_common)."""
    return processor.tokenizer if takes_no_audio(processor) else processor


def process(processor, texts: list[str], waveforms: list[np.ndarray], sampling_rate: int) -> dict[str, Any]:
    """``input_ids``, ``attention_mask`` and the audio features for texts holding one placeholder per clip."""
    if not takes_no_audio(processor):
        return processor(text=texts, audio=waveforms or None, sampling_rate=sampling_rate, return_tensors="pt", padding=True)
    extractor, token = processor.feature_extractor, processor.audio_token
    window = extractor.n_samples
    clips = iter(waveforms)
    pieces = []
    for text in texts:
        parts = text.split(token)
        expanded = parts[0]
        for part in parts[1:]:
            wave = next(clips)
            expanded += token * (-(-len(wave) // window) * window // extractor.hop_length // 8) + part
        pieces.append(expanded)
    batch = processor.tokenizer(pieces, padding=True, return_tensors="pt")
    out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if waveforms:
        out["input_features"] = processor._retrieve_input_features(
            waveforms, extractor.nb_max_frames, sampling_rate=sampling_rate, padding=True, truncation=False,
            pad_to_multiple_of=window, return_tensors="pt",
        )
    return out
