"""Build model inputs from text or chat messages plus real audio.

Audio may be file paths, numpy arrays or torch tensors at any sample rate, mono or stereo; each clip is
validated and resampled by ``audio.load_waveform`` and turned into log-mel features by the checkpoint's
own HF processor, which also expands every audio placeholder to the clip's number of audio tokens. A
clip longer than the encoder's window raises (``on_too_long="truncate"`` keeps its start, with a warning).
Batches are left-padded, as generation needs.
"""

from __future__ import annotations

from typing import Any

from .io import load_waveform
from .inputs import AudioTextInput

Conversation = list[dict[str, Any]]


def build_inputs(
    model,
    prompt: str | list[str] | None = None,
    audio: Any = None,
    *,
    messages: Conversation | list[Conversation] | None = None,
    sampling_rate: int | None = None,
    on_too_long: str = "error",
    add_generation_prompt: bool = True,
) -> AudioTextInput:
    """Inputs for ``model`` from either ``prompt`` (text with the processor's audio placeholder, e.g.
    ``"<|audio_bos|><|AUDIO|><|audio_eos|>What is said?"``) and ``audio`` (one clip or a list, in
    placeholder order), or chat ``messages`` whose content items include ``{"type": "audio", "audio": clip}``.
    ``sampling_rate`` is needed for arrays (files carry their own)."""
    processor = model.processor
    if processor is None or not hasattr(processor, "feature_extractor"):
        raise ValueError(
            "this model has no audio processor; load it with from_pretrained on a checkpoint that has one, "
            "or pass processor= to from_hf_model"
        )
    if (prompt is None) == (messages is None):
        raise ValueError("pass exactly one of prompt= or messages=")
    if messages is not None:
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        texts = [
            processor.apply_chat_template(c, add_generation_prompt=add_generation_prompt, tokenize=False)
            for c in conversations
        ]
        clips = [item["audio"] for c in conversations for m in c for item in _content_items(m) if item.get("type") == "audio"]
        if audio is not None:
            raise ValueError("with messages=, put the audio inside the messages, not in audio=")
    else:
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        clips = [] if audio is None else (list(audio) if isinstance(audio, (list, tuple)) else [audio])

    placeholder = processor.audio_token
    n_placeholders = sum(text.count(placeholder) for text in texts)
    if n_placeholders != len(clips):
        raise ValueError(
            f"the text has {n_placeholders} audio placeholder(s) ({placeholder!r}) but {len(clips)} clip(s) were "
            f"given; put one placeholder where each clip goes, in order"
        )

    feature_extractor = processor.feature_extractor
    waveforms = [
        load_waveform(
            clip,
            sampling_rate=sampling_rate,
            target_rate=feature_extractor.sampling_rate,
            max_seconds=max_audio_seconds(processor),
            on_too_long=on_too_long,
        )
        for clip in clips
    ]
    tokenizer = processor.tokenizer
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = processor(
            text=texts,
            audio=waveforms or None,
            sampling_rate=feature_extractor.sampling_rate,
            return_tensors="pt",
            padding=True,
        )
    finally:
        tokenizer.padding_side = previous_side
    return model.to_inputs(batch)


def max_audio_seconds(processor) -> float:
    """The longest clip the processor accepts: its own limit where it splits audio into windows (Audio
    Flamingo's ``max_audio_len``), else the feature extractor's single window."""
    feature_extractor = processor.feature_extractor
    return float(getattr(processor, "max_audio_len", None) or feature_extractor.n_samples / feature_extractor.sampling_rate)


def _content_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []
