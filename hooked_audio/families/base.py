"""What a model family is: how to read its HF config, rename its weights and read its audio inputs.

A family file states only what differs; the shared pieces (Qwen2/Llama-style decoder, Whisper-style
encoder) are mapped by the helpers below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..config import AudioEncoderConfig, HookedAudioConfig

RenameRules = list[tuple[str, str]]


@dataclass(frozen=True)
class ModelFamily:
    name: str
    hf_model_types: tuple[str, ...]  # HF ``config.model_type`` values this family loads
    hf_class_name: str
    config_from_hf: Callable[[object], HookedAudioConfig]
    rename_rules: RenameRules  # regex -> replacement over HF state-dict keys, first match wins
    audio_feature_kwarg: str  # forward kwarg carrying the log-mel features
    audio_mask_kwarg: str | None  # forward kwarg carrying the per-frame validity mask (if any)
    ignored_hf_keys: tuple[str, ...] = ()
    # Decoder positions when none are passed: ``(input_ids, attention_mask or None) -> [batch, pos]``.
    # None: ``arange(pos)`` for every row (Qwen2-Audio). Qwen-Omni counts real tokens only (left padding).
    default_position_ids: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None

    def state_dict_from_hf(self, hf_state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename every HF weight to this library's name; an unmapped key is an error, never dropped."""
        renamed, unmapped = {}, []
        for key, value in hf_state_dict.items():
            if any(re.fullmatch(pattern, key) for pattern in self.ignored_hf_keys):
                continue
            for pattern, replacement in self.rename_rules:
                if re.fullmatch(pattern, key):
                    renamed[re.sub(pattern, replacement, key)] = value
                    break
            else:
                unmapped.append(key)
        if unmapped:
            raise KeyError(f"{self.name}: no mapping for HF weights {unmapped[:5]} ({len(unmapped)} in all)")
        return renamed


def decoder_rules(prefix: str) -> RenameRules:
    """Qwen2/Llama decoder weights under ``prefix`` (e.g. ``model.language_model``) plus ``lm_head``."""
    p = re.escape(prefix)
    return [
        (rf"{p}\.embed_tokens\.weight", "embed.weight"),
        (rf"{p}\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
        (rf"{p}\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
        (rf"{p}\.layers\.(\d+)\.input_layernorm\.weight", r"blocks.\1.ln1.w"),
        (rf"{p}\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.ln2.w"),
        (rf"{p}\.norm\.weight", "ln_final.w"),
        (r"lm_head\.weight", "unembed.weight"),
    ]


def whisper_block_rules(prefix: str) -> RenameRules:
    """Whisper-named encoder blocks (``layers.{l}.self_attn``, ``fc1``/``fc2``, two LayerNorms) under ``prefix``."""
    p = re.escape(prefix)
    return [
        (rf"{p}\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", r"audio_encoder.blocks.\1.attn.\2.\3"),
        (rf"{p}\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"audio_encoder.blocks.\1.attn.o.\2"),
        (rf"{p}\.layers\.(\d+)\.self_attn_layer_norm\.weight", r"audio_encoder.blocks.\1.ln1.w"),
        (rf"{p}\.layers\.(\d+)\.self_attn_layer_norm\.bias", r"audio_encoder.blocks.\1.ln1.b"),
        (rf"{p}\.layers\.(\d+)\.final_layer_norm\.weight", r"audio_encoder.blocks.\1.ln2.w"),
        (rf"{p}\.layers\.(\d+)\.final_layer_norm\.bias", r"audio_encoder.blocks.\1.ln2.b"),
        (rf"{p}\.layers\.(\d+)\.fc1\.(weight|bias)", r"audio_encoder.blocks.\1.mlp.fc_in.\2"),
        (rf"{p}\.layers\.(\d+)\.fc2\.(weight|bias)", r"audio_encoder.blocks.\1.mlp.fc_out.\2"),
    ]


def whisper_encoder_rules(prefix: str) -> RenameRules:
    """Whisper-style encoder weights under ``prefix`` (e.g. ``model.audio_tower``)."""
    p = re.escape(prefix)
    return [
        (rf"{p}\.conv([12])\.(weight|bias)", r"audio_encoder.stem.conv\1.\2"),
        (rf"{p}\.embed_positions\.weight", "audio_encoder.W_pos"),
        *whisper_block_rules(prefix),
        (rf"{p}\.layer_norm\.weight", "audio_encoder.ln_post.w"),
        (rf"{p}\.layer_norm\.bias", "audio_encoder.ln_post.b"),
    ]


def decoder_fields_from_hf(text_config) -> dict:
    """``HookedAudioConfig`` decoder fields from a Qwen2/Llama-style HF text config."""
    d_head = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    rope = getattr(text_config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise NotImplementedError(f"RoPE type {rope.get('rope_type')!r} is not supported yet")
    eos = text_config.eos_token_id
    return dict(
        n_layers=text_config.num_hidden_layers,
        d_model=text_config.hidden_size,
        n_heads=text_config.num_attention_heads,
        d_head=d_head,
        d_mlp=text_config.intermediate_size,
        d_vocab=text_config.vocab_size,
        n_key_value_heads=text_config.num_key_value_heads,
        n_ctx=text_config.max_position_embeddings,
        act_fn=text_config.hidden_act,
        eps=text_config.rms_norm_eps,
        rotary_base=float(rope.get("rope_theta", getattr(text_config, "rope_theta", 10000.0))),
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
        pad_token_id=text_config.pad_token_id,
        eos_token_ids=tuple(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])),
    )


def llama_decoder_fields_from_hf(text_config) -> dict:
    """``decoder_fields_from_hf`` for a Llama-style text config, whose biases are off unless
    ``attention_bias`` (q, k, v and o together) or ``mlp_bias`` say otherwise (Qwen2 has q/k/v biases)."""
    attention_bias = bool(getattr(text_config, "attention_bias", False))
    return dict(
        decoder_fields_from_hf(text_config),
        qkv_bias=(attention_bias,) * 3,
        o_bias=attention_bias,
        mlp_bias=bool(getattr(text_config, "mlp_bias", False)),
    )


def whisper_encoder_config_from_hf(audio_config, **overrides) -> AudioEncoderConfig:
    """``AudioEncoderConfig`` from a Whisper-style HF encoder config."""
    if getattr(audio_config, "scale_embedding", False):
        raise NotImplementedError("scale_embedding=True encoders are not supported yet")
    fields = dict(
        n_layers=audio_config.encoder_layers,
        d_model=audio_config.d_model,
        n_heads=audio_config.encoder_attention_heads,
        d_mlp=audio_config.encoder_ffn_dim,
        n_mels=audio_config.num_mel_bins,
        n_ctx=audio_config.max_source_positions,
        act_fn=audio_config.activation_function,
    )
    fields.update(overrides)
    return AudioEncoderConfig(**fields)
