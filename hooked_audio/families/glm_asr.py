"""GLM-ASR (``GlmAsrForConditionalGeneration``), as the difference from Voxtral.

- Encoder (``encoders/glm_asr.py``): Voxtral's (Whisper conv stem, no padding mask, final LayerNorm, then 4
  frames stacked per token: 12.5 tokens per second), with Llama-style blocks: RoPE on part of each head's
  features instead of learned positions, optional grouped-query attention, q/v/o biases.
- Projector: two layers with biases, ``linear_1 -> GELU -> linear_2``, hidden width twice the decoder's.
- Decoder: Llama, ``lm_head`` tied to the embeddings when the top-level config says so (the published
  checkpoint does).
- Inputs: ``input_features`` plus ``input_features_mask`` (required: it decides how many tokens each window
  keeps); the placeholder is ``<|pad|>``. Audio longer than one window is cut by the processor into 30 s
  windows (one feature row each) whose tokens fill one run of placeholders in order.
"""

from __future__ import annotations

import re

from ..components.projector import MLPProjectorConfig
from ..config import AudioEncoderConfig, AudioInputSpec, HookedAudioConfig
from .base import LLAMA_TEXT, ModelFamily, check_frame_stacking, check_gelu_projector, decoder_rules
from .base import llama_decoder_fields_from_hf, tied_embeddings
from .voxtral import STACKING

AUDIO = frozenset({
    "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "num_mel_bins", "max_position_embeddings", "hidden_act", "rope_parameters", "head_dim",
})


def encoder_config_from_hf(audio) -> AudioEncoderConfig:
    d_head = getattr(audio, "head_dim", None) or audio.hidden_size // audio.num_attention_heads
    if d_head * audio.num_attention_heads != audio.hidden_size:
        raise NotImplementedError(f"encoder head_dim={d_head} x heads != hidden_size={audio.hidden_size}")
    rope = audio.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise NotImplementedError(f"encoder RoPE type {rope.get('rope_type')!r} is not supported")
    check_frame_stacking(audio.hidden_size, audio.intermediate_size, STACKING)  # window length: checked per forward
    return AudioEncoderConfig(
        n_layers=audio.num_hidden_layers,
        d_model=audio.hidden_size,
        n_heads=audio.num_attention_heads,
        n_key_value_heads=audio.num_key_value_heads,
        d_mlp=audio.intermediate_size,
        n_mels=audio.num_mel_bins,
        window_frames=audio.max_position_embeddings,  # frames per 30 s window (the processor's padding)
        act_fn=audio.hidden_act,
        encoder="glm_asr",
        pooling=STACKING,
        rotary_dim=int(d_head * rope.get("partial_rotary_factor", 1.0)),
        rotary_base=float(rope.get("rope_theta", 10000.0)),
    )


def config_from_hf(hf_config) -> HookedAudioConfig:
    check_gelu_projector(hf_config)
    text = hf_config.text_config
    return HookedAudioConfig(
        **llama_decoder_fields_from_hf(text, tied_embeddings(hf_config)),
        audio=encoder_config_from_hf(hf_config.audio_config),
        projector=MLPProjectorConfig(d_hidden=2 * text.hidden_size),
        audio_inputs=AudioInputSpec(frame_mask="input_features_mask", windowed_clips=True),
        audio_token_id=hf_config.audio_token_id,
        family="glm_asr",
    )


_TOWER = re.escape("model.audio_tower")

GLM_ASR = ModelFamily(
    name="glm_asr",
    hf_model_types=("glmasr",),
    hf_class_name="GlmAsrForConditionalGeneration",
    config_from_hf=config_from_hf,
    handled={
        "": frozenset({"audio_token_id", "projector_hidden_act", "tie_word_embeddings"}),
        "text_config": LLAMA_TEXT,
        "audio_config": AUDIO,
    },
    rename_rules=[
        (rf"{_TOWER}\.conv([12])\.(weight|bias)", r"audio_encoder.stem.conv\1.\2"),
        (rf"{_TOWER}\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)", r"audio_encoder.blocks.\1.attn.\2.\3"),
        (rf"{_TOWER}\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"audio_encoder.blocks.\1.mlp.fc_in.\2"),
        (rf"{_TOWER}\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"audio_encoder.blocks.\1.mlp.fc_out.\2"),
        (rf"{_TOWER}\.layers\.(\d+)\.input_layernorm\.weight", r"audio_encoder.blocks.\1.ln1.w"),
        (rf"{_TOWER}\.layers\.(\d+)\.input_layernorm\.bias", r"audio_encoder.blocks.\1.ln1.b"),
        (rf"{_TOWER}\.layers\.(\d+)\.post_attention_layernorm\.weight", r"audio_encoder.blocks.\1.ln2.w"),
        (rf"{_TOWER}\.layers\.(\d+)\.post_attention_layernorm\.bias", r"audio_encoder.blocks.\1.ln2.b"),
        (rf"{_TOWER}\.norm\.weight", "audio_encoder.ln_post.w"),
        (rf"{_TOWER}\.norm\.bias", "audio_encoder.ln_post.b"),
        (r"model\.multi_modal_projector\.linear_([12])\.(weight|bias)", r"projector.linear_\1.\2"),
        *decoder_rules("model.language_model"),
    ],
)
