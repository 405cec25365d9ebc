"""Audio Flamingo 3 (``AudioFlamingo3ForConditionalGeneration``), as the difference from Qwen2-Audio.

Same Whisper-large-style encoder (padded frames masked, AvgPool 2, final LayerNorm: 25 tokens per second,
750 per 30 s window; HF names its attributes Llama-style) and a Qwen2.5 decoder. What differs:

- the projector is two layers, ``linear_1 -> GELU -> linear_2``, both as wide as the decoder;
- the forward's frame mask is called ``input_features_mask`` (and is required);
- the placeholder is ``<sound>``; audio longer than one window is cut by the processor into up to 20
  windows (600 s), one feature row each, whose tokens fill *one* run of placeholders in window order.
  The generic splice handles this as it is: windows are encoded separately, their valid tokens are
  concatenated in row order, and a full window is exactly 30 s of tokens, so the time map stays linear.
"""

from __future__ import annotations

from dataclasses import replace

from ..components.projector import MLPProjectorConfig
from ..config import AudioInputSpec, HookedAudioConfig
from .base import QWEN2_TEXT, WHISPER_AUDIO_RENAMED, ModelFamily, check_gelu_projector
from .qwen2_audio import QWEN2_AUDIO
from .qwen2_audio import config_from_hf as qwen2_audio_config_from_hf

AUDIO_INPUTS = AudioInputSpec(frame_mask="input_features_mask", windowed_clips=True)
HANDLED = {
    "": frozenset({"audio_token_id", "projector_hidden_act", "projector_bias"}),
    "text_config": QWEN2_TEXT,
    "audio_config": WHISPER_AUDIO_RENAMED,
}


def projector_from_hf(hf_config) -> MLPProjectorConfig:
    """Two GELU layers, the hidden one as wide as the decoder (as in HF)."""
    check_gelu_projector(hf_config)
    return MLPProjectorConfig(d_hidden=hf_config.text_config.hidden_size, bias=bool(hf_config.projector_bias))


def config_from_hf(hf_config) -> HookedAudioConfig:
    return replace(
        qwen2_audio_config_from_hf(hf_config),
        projector=projector_from_hf(hf_config), audio_inputs=AUDIO_INPUTS, family="audioflamingo3",
    )


RENAME_RULES = [
    (r"model\.multi_modal_projector\.linear_([12])\.(weight|bias)", r"projector.linear_\1.\2"),
    *QWEN2_AUDIO.rename_rules,
]

AUDIOFLAMINGO3 = ModelFamily(
    name="audioflamingo3",
    hf_model_types=("audioflamingo3",),
    hf_class_name="AudioFlamingo3ForConditionalGeneration",
    config_from_hf=config_from_hf,
    handled=HANDLED,
    rename_rules=RENAME_RULES,
)
