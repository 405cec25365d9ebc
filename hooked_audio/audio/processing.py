"""Running an HF processor on texts and clips, including processors whose ``__call__`` takes no audio and
processors that take exactly one clip per text.

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


# Pad the texts of a batch to one length, and only the texts: a bare ``padding=True`` reaches the feature extractor
# too, which then pads each clip to the batch's longest instead of to its window (HF's default), and the encoders
# without a padding mask (GLM-ASR's) or with fixed windows (Audio Flamingo 3's) then compute something else.
TEXT_PADDING = {"padding": True}


def one_clip_per_text(processor) -> bool:
    """Whether the processor refuses any text that does not hold exactly one clip (HF's Audio Flamingo 3, Music
    Flamingo and GLM-ASR processors; their models take any number of clips per row)."""
    return type(processor).__name__ in ("AudioFlamingo3Processor", "MusicFlamingoProcessor", "GlmAsrProcessor")


def chat_templater(processor):
    """What renders a chat to text: the processor, or its tokenizer where the processor's template tokenizes
    audio itself (Voxtral's, through mistral_common)."""
    return processor.tokenizer if takes_no_audio(processor) else processor


def process(processor, texts: list[str], waveforms: list[np.ndarray], sampling_rate: int) -> dict[str, Any]:
    """``input_ids``, ``attention_mask`` and the audio features for texts holding one placeholder per clip."""
    token = processor.audio_token
    if one_clip_per_text(processor) and waveforms and any(text.count(token) != 1 for text in texts):
        return _process_clip_by_clip(processor, texts, waveforms, sampling_rate)
    if not takes_no_audio(processor):
        return processor(text=texts, audio=waveforms or None, sampling_rate=sampling_rate, return_tensors="pt",
                         text_kwargs=TEXT_PADDING)
    extractor, token = processor.feature_extractor, processor.audio_token
    window = extractor.n_samples
    clips = iter(waveforms)
    pieces, expected = [], []
    for text in texts:
        parts = text.split(token)
        expanded, count = parts[0], 0
        for part in parts[1:]:
            wave = next(clips)
            n = -(-len(wave) // window) * window // extractor.hop_length // 8
            expanded, count = expanded + token * n + part, count + n
        pieces.append(expanded)
        expected.append(count)
    batch = processor.tokenizer(pieces, padding=True, return_tensors="pt")
    audio_id = processor.tokenizer.convert_tokens_to_ids(token)
    found = (batch["input_ids"] == audio_id).sum(-1).tolist()
    if found != expected:
        raise ValueError(
            f"the tokenizer turned the expanded {token!r} placeholders into {found} audio tokens per row, not {expected}: "
            f"it does not split {token!r}{token!r} into two tokens (a word-level tokenizer). Build the inputs with "
            "the expansion done in token ids (for the toy: hooked_audio.toy.evaluate.encode), or use a tokenizer that "
            "knows the placeholder as a special token")
    out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if waveforms:
        out["input_features"] = processor._retrieve_input_features(
            waveforms, extractor.nb_max_frames, sampling_rate=sampling_rate, padding=True, truncation=False,
            pad_to_multiple_of=window, return_tensors="pt",
        )
    return out


def _process_clip_by_clip(processor, texts: list[str], waveforms: list[np.ndarray], sampling_rate: int) -> dict[str, Any]:
    """Texts with any number of clips, for a processor that takes one per text: the processor expands a bare
    placeholder for each clip (features and that clip's tokens, wrappers included), and each text, tokenized as
    it is, has its placeholder tokens replaced by those expansions, in order."""
    import torch

    tokenizer, token = processor.tokenizer, processor.audio_token
    added = tokenizer("").input_ids  # tokens the tokenizer adds to every text (none for the supported ones)
    if added:
        raise NotImplementedError(
            f"{type(processor).__name__} takes one clip per text and its tokenizer adds {added} to every text: "
            "several clips per text cannot be assembled; give each clip its own prompt"
        )
    bare = processor(text=[token] * len(waveforms), audio=waveforms, sampling_rate=sampling_rate, return_tensors="pt",
                     text_kwargs=TEXT_PADDING)
    expansions = [ids[mask.bool()].tolist() for ids, mask in zip(bare["input_ids"], bare["attention_mask"])]
    placeholder = tokenizer.convert_tokens_to_ids(token)
    clips = iter(expansions)
    rows = []
    for text in texts:
        ids = tokenizer(text).input_ids
        if ids.count(placeholder) != text.count(token):
            raise ValueError(f"{text!r} does not tokenize its {token!r} placeholders as one token each")
        rows.append([t for i in ids for t in (next(clips) if i == placeholder else [i])])
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    audio = {k: v for k, v in bare.items() if k not in ("input_ids", "attention_mask")}
    return {"input_ids": input_ids, "attention_mask": attention_mask, **audio}
