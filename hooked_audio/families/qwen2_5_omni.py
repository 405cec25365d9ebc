"""Qwen2.5-Omni thinker (``Qwen2_5OmniThinkerForConditionalGeneration``): audio + text only.

Differences from Qwen2-Audio:
- Encoder: the Whisper-style tower runs on 2 s chunks (HF ``n_window``) with windowed attention and fixed
  sinusoidal positions (``encoders/qwen_omni_encoder.py``); it takes any number of mel frames (the
  processor pads to 30 s, the feature mask says what is real). Still 25 audio tokens per second. Its block
  hooks are per attention window: ``[clip * windows, frame_in_window, ...]`` (see the encoder's docstring).
- The encoder's output projection (HF ``audio_tower.proj``) is mapped to this library's ``projector``.
- Decoder: Qwen2 with MRoPE. Without images or video the three MRoPE streams are equal, so it is plain RoPE,
  but HF numbers positions by real tokens (``cumsum(attention_mask) - 1``), not by index: with left padding
  a row's first real token is position 0. ``default_position_ids`` reproduces that (padding gets 1, as HF).
- Word embeddings are tied when the *thinker* config says so (HF ignores the text config's flag).

Not supported: images and video (``pixel_values*`` inputs are rejected as unknown inputs) and the talker /
token2wav speech output. A full Omni checkpoint (``model_type`` ``qwen2_5_omni``, weights under
``thinker.``) loads through its ``thinker_config``: ``HookedAudioTransformer.from_pretrained(dir)`` keeps
only the thinker's weights (HF's thinker class skips ``talker.*`` and ``token2wav.*``).
"""

from __future__ import annotations

import torch
from jaxtyping import Int

from ..config import AudioEncoderConfig, HookedAudioConfig
from .base import ModelFamily, decoder_fields_from_hf, decoder_rules, whisper_encoder_rules


def thinker_config(hf_config):
    """The thinker part of a full Omni config (``thinker_config``), or the config itself."""
    return getattr(hf_config, "thinker_config", None) or hf_config


def real_token_positions(
    input_ids: Int[torch.Tensor, "batch pos"], attention_mask: Int[torch.Tensor, "batch pos"] | None
) -> Int[torch.Tensor, "batch pos"]:
    """HF's text-and-audio MRoPE positions: count real tokens only; padding positions are 1."""
    if attention_mask is None:
        return torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand(input_ids.shape[0], -1)
    attention_mask = attention_mask.to(input_ids.device)
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def check_plain_rope(text_config) -> None:
    rope = getattr(text_config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise NotImplementedError(f"RoPE type {rope.get('rope_type')!r} is not supported")
    if getattr(text_config, "use_sliding_window", False):
        raise NotImplementedError("sliding-window decoder layers are not supported")


def config_from_hf(hf_config) -> HookedAudioConfig:
    thinker = thinker_config(hf_config)
    text, audio = thinker.text_config, thinker.audio_config
    check_plain_rope(text)
    if audio.output_dim != text.hidden_size:
        raise ValueError(f"audio output_dim {audio.output_dim} != text hidden_size {text.hidden_size}")
    if audio.scale_embedding:
        raise NotImplementedError("scale_embedding=True is not supported")
    fields = decoder_fields_from_hf(text)
    fields["tie_word_embeddings"] = bool(getattr(thinker, "tie_word_embeddings", False))
    return HookedAudioConfig(
        **fields,
        audio=AudioEncoderConfig(
            n_layers=audio.encoder_layers,
            d_model=audio.d_model,
            n_heads=audio.encoder_attention_heads,
            d_mlp=audio.encoder_ffn_dim,
            n_mels=audio.num_mel_bins,
            n_ctx=audio.n_window,  # frames per chunk after the stride-2 stem
            act_fn=audio.activation_function,
            encoder_type="qwen2_5_omni",
            stem="whisper_conv",
            pooling="avg2",
            chunk_mel_frames=2 * audio.n_window,
            attention_window_frames=audio.n_window,
        ),
        projector="linear",
        audio_token_id=thinker.audio_token_id,
        audio_bos_token_id=thinker.audio_start_token_id,
        audio_eos_token_id=thinker.audio_end_token_id,
        family="qwen2_5_omni",
    )


QWEN2_5_OMNI = ModelFamily(
    name="qwen2_5_omni",
    hf_model_types=("qwen2_5_omni_thinker", "qwen2_5_omni"),
    hf_class_name="Qwen2_5OmniThinkerForConditionalGeneration",
    config_from_hf=config_from_hf,
    rename_rules=[
        (r"model\.audio_tower\.ln_post\.weight", "audio_encoder.ln_post.w"),
        (r"model\.audio_tower\.ln_post\.bias", "audio_encoder.ln_post.b"),
        (r"model\.audio_tower\.proj\.(weight|bias)", r"projector.linear.\1"),
        *whisper_encoder_rules("model.audio_tower"),
        *decoder_rules("model.language_model"),
    ],
    audio_feature_kwarg="input_features",
    audio_mask_kwarg="feature_attention_mask",
    # the vision tower is not re-implemented; the encoder's bos/eos embedding is never used by HF's forward
    ignored_hf_keys=(r"model\.visual\..*", r"model\.audio_tower\.audio_bos_eos_token\.weight"),
    default_position_ids=real_token_positions,
)
