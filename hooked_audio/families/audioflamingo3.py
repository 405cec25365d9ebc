"""Audio Flamingo 3 (``AudioFlamingo3ForConditionalGeneration``), as the difference from Qwen2-Audio.

Same Whisper-large-style encoder (padded frames masked, AvgPool 2, final LayerNorm: 25 tokens per second,
750 per 30 s window) and a Qwen2.5 decoder (grouped-query attention, RoPE base 1e6). What differs:

- the projector is two layers, ``linear_1 -> GELU -> linear_2``, both as wide as the decoder;
- the forward's frame mask is called ``input_features_mask`` (and is required);
- the placeholder is ``<sound>``; audio longer than one window is cut by the processor into up to 20
  windows (600 s), one feature row each, whose tokens fill *one* run of placeholders in window order.
  The generic splice handles this as it is: windows are encoded separately, their valid tokens are
  concatenated in row order, and a full window is exactly 30 s of tokens, so the time map stays linear.
"""

from __future__ import annotations

from ..config import HookedAudioConfig
from .base import ModelFamily, decoder_fields_from_hf, decoder_rules, whisper_encoder_config_from_hf, whisper_encoder_rules


def config_from_hf(hf_config) -> HookedAudioConfig:
    return HookedAudioConfig(
        **decoder_fields_from_hf(hf_config.text_config),
        audio=whisper_encoder_config_from_hf(hf_config.audio_config, pooling="avg2", mask_padded_frames=True),
        projector="mlp_gelu",
        audio_token_id=hf_config.audio_token_id,
        family="audioflamingo3",
        extra=projector_extra(hf_config),
    )


def projector_extra(hf_config) -> dict:
    """The two-layer projector's settings (hidden width = the decoder's width, as in HF)."""
    if hf_config.projector_hidden_act != "gelu":
        raise NotImplementedError(f"projector activation {hf_config.projector_hidden_act!r} is not supported")
    return {"projector_hidden": hf_config.text_config.hidden_size, "projector_bias": bool(hf_config.projector_bias)}


RENAME_RULES = [
    *whisper_encoder_rules("model.audio_tower"),
    (r"model\.multi_modal_projector\.linear_([12])\.(weight|bias)", r"projector.linear_\1.\2"),
    *decoder_rules("model.language_model"),
]

AUDIOFLAMINGO3 = ModelFamily(
    name="audioflamingo3",
    hf_model_types=("audioflamingo3",),
    hf_class_name="AudioFlamingo3ForConditionalGeneration",
    config_from_hf=config_from_hf,
    rename_rules=RENAME_RULES,
    audio_feature_kwarg="input_features",
    audio_mask_kwarg="input_features_mask",
)
