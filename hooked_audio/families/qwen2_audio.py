"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``): the reference family.

Whisper-large-style encoder (masked padded frames, AvgPool 2, final LayerNorm) -> one linear projector
-> Qwen2 decoder. 25 audio tokens per second of audio; a 30 s window (3000 mel frames, 750 tokens).
"""

from __future__ import annotations

from ..config import HookedAudioConfig
from .base import QWEN2_TEXT, WHISPER_AUDIO, ModelFamily, decoder_fields_from_hf, decoder_rules, tied_embeddings
from .base import whisper_encoder_config_from_hf, whisper_encoder_rules


def config_from_hf(hf_config) -> HookedAudioConfig:
    return HookedAudioConfig(
        **decoder_fields_from_hf(hf_config.text_config, tied_embeddings(hf_config)),
        audio=whisper_encoder_config_from_hf(hf_config.audio_config),
        audio_token_id=hf_config.audio_token_id,
        family="qwen2_audio",
    )


QWEN2_AUDIO = ModelFamily(
    name="qwen2_audio",
    hf_model_types=("qwen2_audio",),
    hf_class_name="Qwen2AudioForConditionalGeneration",
    config_from_hf=config_from_hf,
    handled={"": frozenset({"audio_token_index"}), "text_config": QWEN2_TEXT, "audio_config": WHISPER_AUDIO},
    rename_rules=[
        *whisper_encoder_rules("model.audio_tower"),
        (r"model\.multi_modal_projector\.linear\.(weight|bias)", r"projector.linear.\1"),
        *decoder_rules("model.language_model"),
    ],
)
