"""Qwen3-Omni thinker (``Qwen3OmniMoeThinkerForConditionalGeneration``): audio + text only.

Differences from Qwen2.5-Omni (``qwen2_5_omni.py``, itself read as a difference from Qwen2-Audio):
- Encoder: a 2-D conv stem (3 x stride 2 over mel and time, then a linear) per 1 s chunk of 100 mel frames
  (HF ``n_window`` = 50) giving 13 frames; attention windows of ``n_window_infer`` mel frames (8 chunks,
  104 frames); k has a bias; no pooling. ``encoders/qwen_omni.py``. HF's token count hard-codes
  13 tokens per chunk, so HF itself only runs with ``n_window`` = 50 (every published config); this
  library computes the count from the stem and works for any chunk size.
- The encoder's head ``ln_post -> proj1 -> GELU -> proj2`` maps to ``ln_post`` + a two-layer GELU projector.
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
from dataclasses import replace

from ..components.conv2d_stem import Conv2dStem
from ..components.projector import MLPProjectorConfig
from ..config import AudioEncoderConfig, HookedAudioConfig
from .base import decoder_fields_from_hf, decoder_rules, tied_embeddings, whisper_block_rules
from .base import WHISPER_AUDIO
from .qwen2_5_omni import AUDIO_INPUTS, QWEN2_5_OMNI, check_output_dim, thinker_config

TEXT = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_parameters", "head_dim",
    "sliding_window", "tie_word_embeddings",  # no layer uses the window; HF reads tying from the thinker
    "attention_bias", "decoder_sparse_step", "mlp_only_layers", "moe_intermediate_size", "norm_topk_prob",
    "num_experts", "num_experts_per_tok",
})
AUDIO = WHISPER_AUDIO | {"n_window", "n_window_infer", "output_dim", "downsample_hidden_size", "conv_chunksize"}


def encoder_config_from_hf(audio) -> AudioEncoderConfig:
    chunk = 2 * audio.n_window
    if audio.n_window_infer % chunk:
        raise NotImplementedError(f"n_window_infer={audio.n_window_infer} is not a whole number of {chunk}-frame chunks")
    if audio.scale_embedding:
        raise NotImplementedError("scale_embedding=True is not supported")
    chunk_frames = Conv2dStem.output_lengths(chunk)
    return AudioEncoderConfig(
        n_layers=audio.encoder_layers,
        d_model=audio.d_model,
        n_heads=audio.encoder_attention_heads,
        d_mlp=audio.encoder_ffn_dim,
        n_mels=audio.num_mel_bins,
        act_fn=audio.activation_function,
        qkv_bias=(True, True, True),
        encoder="qwen3_omni",
        pooling=None,
        window_frames=None,
        stem_channels=audio.downsample_hidden_size,
        chunk_mel_frames=chunk,
        attention_window_frames=chunk_frames * (audio.n_window_infer // chunk),
        seconds_per_frame=chunk * 0.01 / chunk_frames,  # 10 ms mel hop
    )


def config_from_hf(hf_config) -> HookedAudioConfig:
    thinker = thinker_config(hf_config)
    text, audio = thinker.text_config, thinker.audio_config
    check_output_dim(audio, text)
    if getattr(text, "mlp_only_layers", None) or getattr(text, "decoder_sparse_step", 1) != 1:
        raise NotImplementedError("dense (mlp_only_layers / decoder_sparse_step) decoder layers are not supported")
    if getattr(text, "attention_bias", False):
        raise NotImplementedError("attention biases are not supported for Qwen3-Omni")
    fields = dict(decoder_fields_from_hf(text, tied_embeddings(thinker)), d_mlp=text.moe_intermediate_size)
    return HookedAudioConfig(
        **fields,
        qkv_bias=(False, False, False),
        use_qk_norm=True,
        num_experts=text.num_experts,
        experts_per_token=text.num_experts_per_tok,
        norm_topk_prob=text.norm_topk_prob,
        audio=encoder_config_from_hf(audio),
        projector=MLPProjectorConfig(d_hidden=audio.d_model, act_fn=audio.activation_function),  # HF: proj1 -> act -> proj2
        audio_inputs=AUDIO_INPUTS,
        audio_token_id=thinker.audio_token_id,
        family="qwen3_omni",
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


QWEN3_OMNI = replace(
    QWEN2_5_OMNI,
    name="qwen3_omni",
    hf_model_types=("qwen3_omni_moe_thinker", "qwen3_omni_moe"),
    hf_class_name="Qwen3OmniMoeThinkerForConditionalGeneration",
    config_from_hf=config_from_hf,
    handled={**QWEN2_5_OMNI.handled, "text_config": TEXT, "audio_config": AUDIO},
    rename_rules=[*encoder_rules("model.audio_tower"), *decoder_moe_rules("model.language_model")],
    ignored_hf_keys=(r"model\.visual\..*",),
)
