"""Voxtral (``VoxtralForConditionalGeneration``), as the difference from Audio Flamingo 3.

Same Whisper-large-style encoder weights and names, but (``encoders/voxtral.py``):

- no frame mask: every clip row is one full 30 s chunk (3000 mel frames) and all of it is encoded and
  kept, padding included, so the forward takes ``input_features`` only and a chunk always gives 375 tokens;
- no average pooling: the final LayerNorm runs on each frame, then 4 consecutive frames are concatenated
  (width 4 x 1280 = HF's ``audio_config.intermediate_size``): 12.5 audio tokens per second;
- the two-layer GELU projector has no biases;
- a Llama decoder (no attention biases, explicit ``head_dim``, RoPE base 1e8, untied ``lm_head``).

Audio longer than 30 s: the processor pads each clip to a multiple of 30 s and cuts it into 3000-frame
chunks, one feature row each; their tokens fill one run of placeholders (after ``[BEGIN_AUDIO]``) in chunk
order, which the generic splice does as it is.

HF quirk: HF stacks frames by flattening the whole batch, so a window whose frame count is not a multiple
of 4 would mix frames of two clips. Every real config has 1500 frames; other sizes are refused here.
"""

from __future__ import annotations

from ..components.pooling import FrameStacking
from ..components.projector import MLPProjectorConfig
from ..config import AudioInputSpec, HookedAudioConfig
from .audioflamingo3 import RENAME_RULES
from .base import LLAMA_TEXT, WHISPER_AUDIO_RENAMED, ModelFamily, check_frame_stacking, check_gelu_projector
from .base import check_whole_tokens_per_window
from .base import llama_decoder_fields_from_hf, tied_embeddings, whisper_encoder_config_from_hf

STACKING = FrameStacking(4)


def config_from_hf(hf_config) -> HookedAudioConfig:
    audio = whisper_encoder_config_from_hf(hf_config.audio_config, encoder="voxtral", pooling=STACKING)
    check_frame_stacking(audio.d_model, hf_config.audio_config.intermediate_size, STACKING)
    check_whole_tokens_per_window(audio.window_frames, STACKING)  # real checkpoints have 1500 frames
    check_gelu_projector(hf_config)
    return HookedAudioConfig(
        **llama_decoder_fields_from_hf(hf_config.text_config, tied_embeddings(hf_config)),
        audio=audio,
        projector=MLPProjectorConfig(d_hidden=hf_config.text_config.hidden_size, bias=False),
        audio_inputs=AudioInputSpec(frame_mask=None, windowed_clips=True),
        audio_token_id=hf_config.audio_token_id,
        family="voxtral",
    )


VOXTRAL = ModelFamily(
    name="voxtral",
    hf_model_types=("voxtral",),
    hf_class_name="VoxtralForConditionalGeneration",
    config_from_hf=config_from_hf,
    handled={
        "": frozenset({"audio_token_id", "projector_hidden_act", "hidden_size"}),
        "text_config": LLAMA_TEXT,
        "audio_config": WHISPER_AUDIO_RENAMED | {"vocab_size"},  # the encoder's vocab_size is never read
    },
    rename_rules=RENAME_RULES,  # AF3's names, the projector without biases
)
