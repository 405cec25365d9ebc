"""Qwen2.5-Omni thinker (``Qwen2_5OmniThinkerForConditionalGeneration``): audio + text only, as the
difference from Qwen2-Audio.

- Encoder (``encoders/qwen_omni.py``): the Whisper-style tower on 2 s chunks (HF ``n_window``) with windowed
  attention and fixed sinusoidal positions; it takes any number of mel frames (the processor pads to 30 s,
  the feature mask says what is real). Still 25 audio tokens per second. Its block hooks are per attention
  window: ``[clip * windows, frame_in_window, ...]`` (see the encoder's docstring).
- The encoder's output projection (HF ``audio_tower.proj``) is this library's linear ``projector``.
- Decoder: Qwen2 with MRoPE. Without images or video the three MRoPE streams are equal, so it is plain RoPE,
  but HF numbers positions by real tokens, not by index (``AudioInputSpec(position_ids="real_tokens")``).
- Word embeddings are tied when the *thinker* config says so (HF ignores the text config's flag).

Not supported: images and video (``pixel_values*`` inputs are rejected as unknown inputs) and the talker /
token2wav speech output. A full Omni checkpoint (``model_type`` ``qwen2_5_omni``, weights under
``thinker.``) loads through its ``thinker_config``: ``HookedAudioTransformer.from_pretrained(dir)`` keeps
only the thinker's weights (HF's thinker class skips ``talker.*`` and ``token2wav.*``).
"""

from __future__ import annotations

from ..config import AudioEncoderConfig, AudioInputSpec, HookedAudioConfig
from .base import QWEN2_TEXT, WHISPER_AUDIO, ModelFamily, decoder_fields_from_hf, decoder_rules, tied_embeddings
from .base import whisper_encoder_rules

AUDIO_INPUTS = AudioInputSpec(position_ids="real_tokens")
THINKER = frozenset({"audio_token_index", "audio_token_id", "audio_start_token_id", "audio_end_token_id",
                     "tie_word_embeddings", "image_token_index", "image_token_id", "video_token_index",
                     "video_token_id", "user_token_id", "position_id_per_seconds", "seconds_per_chunk"})
AUDIO = WHISPER_AUDIO | {"n_window", "output_dim"}


def thinker_config(hf_config):
    """The thinker part of a full Omni config (``thinker_config``), or the config itself."""
    return getattr(hf_config, "thinker_config", None) or hf_config


def check_output_dim(audio, text) -> None:
    """The encoder's last projection writes audio tokens straight into the decoder's embedding space."""
    if audio.output_dim != text.hidden_size:
        raise ValueError(f"audio_config.output_dim {audio.output_dim} != text_config.hidden_size {text.hidden_size}: the "
                         "encoder's output is spliced into the decoder's embeddings unprojected, so the two must match")


def config_from_hf(hf_config) -> HookedAudioConfig:
    thinker = thinker_config(hf_config)
    text, audio = thinker.text_config, thinker.audio_config
    check_output_dim(audio, text)
    if audio.scale_embedding:
        raise NotImplementedError("scale_embedding=True is not supported")
    return HookedAudioConfig(
        **decoder_fields_from_hf(text, tied_embeddings(thinker)),
        audio=AudioEncoderConfig(
            n_layers=audio.encoder_layers,
            d_model=audio.d_model,
            n_heads=audio.encoder_attention_heads,
            d_mlp=audio.encoder_ffn_dim,
            n_mels=audio.num_mel_bins,
            act_fn=audio.activation_function,
            encoder="qwen2_5_omni",
            window_frames=None,  # any length: the stem runs per chunk
            chunk_mel_frames=2 * audio.n_window,
            attention_window_frames=audio.n_window,
        ),
        audio_inputs=AUDIO_INPUTS,
        audio_token_id=thinker.audio_token_id,
        family="qwen2_5_omni",
    )


QWEN2_5_OMNI = ModelFamily(
    name="qwen2_5_omni",
    hf_model_types=("qwen2_5_omni_thinker", "qwen2_5_omni"),
    hf_class_name="Qwen2_5OmniThinkerForConditionalGeneration",
    config_from_hf=config_from_hf,
    config_root=thinker_config,
    handled={"": THINKER, "text_config": QWEN2_TEXT, "audio_config": AUDIO, "vision_config": None},
    rename_rules=[
        (r"model\.audio_tower\.ln_post\.weight", "audio_encoder.ln_post.w"),
        (r"model\.audio_tower\.ln_post\.bias", "audio_encoder.ln_post.b"),
        (r"model\.audio_tower\.proj\.(weight|bias)", r"projector.linear.\1"),
        *whisper_encoder_rules("model.audio_tower"),
        *decoder_rules("model.language_model"),
    ],
    # the vision tower is not re-implemented; the encoder's bos/eos embedding is never used by HF's forward
    ignored_hf_keys=(r"model\.visual\..*", r"model\.audio_tower\.audio_bos_eos_token\.weight"),
)
