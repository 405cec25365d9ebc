"""Voxtral (``VoxtralForConditionalGeneration``), as the difference from Qwen2-Audio.

Same Whisper-large-style encoder weights and names, but:

- no frame mask: every clip row is one full 30 s chunk (3000 mel frames) and all of it is encoded and
  kept, padding included, so the forward takes ``input_features`` only and a chunk always gives 375 tokens;
- no average pooling: the final LayerNorm runs on each frame, then 4 consecutive frames are concatenated
  (``stack4``, width 4 x 1280 = HF's ``audio_config.intermediate_size``): 12.5 audio tokens per second;
- a two-layer GELU projector without biases (``linear_1 -> GELU -> linear_2``, decoder-wide hidden layer);
- a Llama decoder (no attention biases, explicit ``head_dim``, RoPE base 1e8, untied ``lm_head``).

Audio longer than 30 s: the processor pads each clip to a multiple of 30 s and cuts it into 3000-frame
chunks, one feature row each; their tokens fill one run of placeholders (after ``[BEGIN_AUDIO]``) in chunk
order. The generic splice does exactly this: rows are encoded separately and concatenated in row order,
and since a chunk is exactly 30 s of tokens the time map stays linear across chunks.

HF quirk: HF stacks frames by flattening the whole batch, so a window whose frame count is not a multiple
of 4 would mix frames of two clips. Every real config has 1500 frames; other sizes are refused here.
"""

from __future__ import annotations

from ..config import HookedAudioConfig
from .base import ModelFamily, decoder_rules, llama_decoder_fields_from_hf, whisper_encoder_config_from_hf, whisper_encoder_rules

FRAMES_PER_TOKEN = 4


def config_from_hf(hf_config) -> HookedAudioConfig:
    audio = whisper_encoder_config_from_hf(
        hf_config.audio_config,
        pooling=f"stack{FRAMES_PER_TOKEN}",
        ln_post_before_pooling=True,
        mask_padded_frames=False,
    )
    check_frame_stacking(audio.d_model, hf_config.audio_config.intermediate_size, window_frames=audio.n_ctx)
    if hf_config.projector_hidden_act != "gelu":
        raise NotImplementedError(f"projector activation {hf_config.projector_hidden_act!r} is not supported")
    fields = llama_decoder_fields_from_hf(hf_config.text_config)
    return HookedAudioConfig(
        **dict(fields, tie_word_embeddings=False),  # HF Voxtral never ties lm_head to the embeddings
        audio=audio,
        projector="mlp_gelu",
        audio_token_id=hf_config.audio_token_id,
        family="voxtral",
        extra={"projector_hidden": hf_config.text_config.hidden_size, "projector_bias": False},
    )


def check_frame_stacking(d_audio: int, stacked_width: int, window_frames: int | None = None) -> None:
    """HF reshapes encoder frames to rows of ``audio_config.intermediate_size``: refuse configs where that is
    not 4 whole frames, or (Voxtral, which flattens the whole batch) where a window of ``window_frames``
    frames does not split into whole tokens (HF would then silently mix windows or fail)."""
    if stacked_width != FRAMES_PER_TOKEN * d_audio:
        raise NotImplementedError(
            f"audio_config.intermediate_size={stacked_width} must be {FRAMES_PER_TOKEN} x hidden_size={d_audio}: "
            "HF stacks frames to that width"
        )
    if window_frames is not None and window_frames % FRAMES_PER_TOKEN:
        raise NotImplementedError(
            f"an encoder window of {window_frames} frames is not a multiple of {FRAMES_PER_TOKEN} (HF would stack frames "
            "across windows); real checkpoints have 1500"
        )


VOXTRAL = ModelFamily(
    name="voxtral",
    hf_model_types=("voxtral",),
    hf_class_name="VoxtralForConditionalGeneration",
    config_from_hf=config_from_hf,
    rename_rules=[
        *whisper_encoder_rules("model.audio_tower"),
        (r"model\.multi_modal_projector\.linear_([12])\.weight", r"projector.linear_\1.weight"),
        *decoder_rules("model.language_model"),
    ],
    audio_feature_kwarg="input_features",
    audio_mask_kwarg=None,
)
