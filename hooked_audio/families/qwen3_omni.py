"""Qwen3-Omni thinker (``Qwen3OmniMoeThinkerForConditionalGeneration``): audio + text only.

Differences from Qwen2.5-Omni (``qwen2_5_omni.py``, itself read as a difference from Qwen2-Audio):
- Encoder: a 2-D conv stem (3 x stride 2 over mel and time, then a linear) per 1 s chunk of 100 mel frames
  (HF ``n_window`` = 50) giving 13 frames; attention windows of ``n_window_infer`` mel frames (8 chunks,
  104 frames); k has a bias; no pooling. ``encoders/qwen_omni_encoder.py``. HF's token count hard-codes
  13 tokens per chunk, so HF itself only runs with ``n_window`` = 50 (every published config); this
  library computes the count from the stem and works for any chunk size.
- The encoder's head ``ln_post -> proj1 -> GELU -> proj2`` maps to ``ln_post`` + the ``mlp_gelu`` projector.
- Token rate: 13 audio tokens per whole second (a partial last second gives fewer), so
  ``seconds_per_audio_token`` is 1/13 s and token times are exact at every second boundary.
- Decoder: Qwen3-MoE: per-head q/k RMSNorm (``attn.q_norm`` / ``attn.k_norm``), no attention biases, and
  every MLP a sparse mixture of experts (``components/moe.py``: ``mlp.hook_router_logits``,
  ``hook_expert_weights``, ``hook_expert_indices``, ``hook_expert_out``). MRoPE reduces to RoPE with
  HF's real-token positions, as for Qwen2.5-Omni.

Not supported: images and video (rejected as unknown inputs), the talker / code2wav speech output, dense
(``mlp_only_layers``) decoder layers, which no published checkpoint uses. A full Omni checkpoint
(``model_type`` ``qwen3_omni_moe``) loads through its ``thinker_config``; only the thinker's weights are used.
"""

from __future__ import annotations

import re

from ..components.conv2d_stem import Conv2dStem
from ..config import AudioEncoderConfig, HookedAudioConfig
from .base import ModelFamily, decoder_fields_from_hf, decoder_rules, whisper_block_rules
from .qwen2_5_omni import check_plain_rope, real_token_positions, thinker_config


def encoder_config_from_hf(audio) -> AudioEncoderConfig:
    chunk = 2 * audio.n_window
    if audio.n_window_infer % chunk:
        raise NotImplementedError(f"n_window_infer={audio.n_window_infer} is not a whole number of {chunk}-frame chunks")
    n_ctx = Conv2dStem.output_lengths(chunk)
    return AudioEncoderConfig(
        n_layers=audio.encoder_layers,
        d_model=audio.d_model,
        n_heads=audio.encoder_attention_heads,
        d_mlp=audio.encoder_ffn_dim,
        n_mels=audio.num_mel_bins,
        n_ctx=n_ctx,  # frames per chunk after the stem
        act_fn=audio.activation_function,
        qkv_bias=(True, True, True),
        encoder_type="qwen3_omni",
        stem="conv2d_x3",
        stem_channels=audio.downsample_hidden_size,
        pooling=None,
        chunk_mel_frames=chunk,
        attention_window_frames=n_ctx * (audio.n_window_infer // chunk),
        seconds_per_frame=chunk * 0.01 / n_ctx,  # 10 ms mel hop
    )


def config_from_hf(hf_config) -> HookedAudioConfig:
    thinker = thinker_config(hf_config)
    text, audio = thinker.text_config, thinker.audio_config
    check_plain_rope(text)
    if getattr(text, "mlp_only_layers", None) or getattr(text, "decoder_sparse_step", 1) != 1:
        raise NotImplementedError("dense (mlp_only_layers / decoder_sparse_step) decoder layers are not supported")
    if getattr(text, "attention_bias", False):
        raise NotImplementedError("attention biases are not supported for Qwen3-Omni")
    if audio.scale_embedding:
        raise NotImplementedError("scale_embedding=True is not supported")
    fields = decoder_fields_from_hf(text)
    fields.update(
        d_mlp=text.moe_intermediate_size,
        tie_word_embeddings=bool(getattr(thinker, "tie_word_embeddings", False)),
    )
    return HookedAudioConfig(
        **fields,
        qkv_bias=(False, False, False),
        use_qk_norm=True,
        num_experts=text.num_experts,
        experts_per_token=text.num_experts_per_tok,
        norm_topk_prob=text.norm_topk_prob,
        audio=encoder_config_from_hf(audio),
        projector="mlp_gelu",
        audio_token_id=thinker.audio_token_id,
        audio_bos_token_id=thinker.audio_start_token_id,
        audio_eos_token_id=getattr(thinker, "audio_end_token_id", None),
        family="qwen3_omni",
        extra={"projector_hidden": audio.d_model, "projector_bias": True},
    )


def decoder_moe_rules(prefix: str):
    """Qwen3-MoE decoder weights: q/k norms, router and fused experts, then the shared Qwen2 names."""
    p = re.escape(prefix)
    return [
        (rf"{p}\.layers\.(\d+)\.self_attn\.([qk])_norm\.weight", r"blocks.\1.attn.\2_norm.w"),
        (rf"{p}\.layers\.(\d+)\.mlp\.gate\.weight", r"blocks.\1.mlp.router.weight"),
        (rf"{p}\.layers\.(\d+)\.mlp\.experts\.gate_up_proj", r"blocks.\1.mlp.gate_up"),
        (rf"{p}\.layers\.(\d+)\.mlp\.experts\.down_proj", r"blocks.\1.mlp.down"),
        *decoder_rules(prefix),
    ]


def encoder_rules(prefix: str):
    """The Qwen3-Omni audio tower: conv2d stem, Whisper-named blocks, ln_post, and proj1/proj2 as projector."""
    p = re.escape(prefix)
    return [
        (rf"{p}\.conv2d([123])\.(weight|bias)", r"audio_encoder.stem.conv\1.\2"),
        (rf"{p}\.conv_out\.weight", "audio_encoder.stem.out.weight"),
        *whisper_block_rules(prefix),
        (rf"{p}\.ln_post\.weight", "audio_encoder.ln_post.w"),
        (rf"{p}\.ln_post\.bias", "audio_encoder.ln_post.b"),
        (rf"{p}\.proj([12])\.(weight|bias)", r"projector.linear_\1.\2"),
    ]


QWEN3_OMNI = ModelFamily(
    name="qwen3_omni",
    hf_model_types=("qwen3_omni_moe_thinker", "qwen3_omni_moe"),
    hf_class_name="Qwen3OmniMoeThinkerForConditionalGeneration",
    config_from_hf=config_from_hf,
    rename_rules=[*encoder_rules("model.audio_tower"), *decoder_moe_rules("model.language_model")],
    audio_feature_kwarg="input_features",
    audio_mask_kwarg="feature_attention_mask",
    ignored_hf_keys=(r"model\.visual\..*",),
    default_position_ids=real_token_positions,
)
