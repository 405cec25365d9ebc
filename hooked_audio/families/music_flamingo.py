"""Music Flamingo (``MusicFlamingoForConditionalGeneration``): Audio Flamingo 3 plus a rotary time embedding.

The encoder output of every window is rotated by its tokens' timestamps in the clip before the projector
(``components/time_rotary.py``; hooks ``audio_time_rotary.hook_timestamps`` / ``.hook_out``). Placeholder
runs are wrapped in ``<|sound_bos|>`` / ``<|sound_eos|>`` by the processor, and up to 40 windows (1200 s)
make one clip. Weights are AF3's: the time embedding has none.
"""

from __future__ import annotations

from dataclasses import replace

from ..components.time_rotary import TimeRotaryConfig
from ..config import HookedAudioConfig
from .audioflamingo3 import HANDLED, RENAME_RULES
from .audioflamingo3 import config_from_hf as audioflamingo3_config_from_hf
from .base import ModelFamily


def time_rotary_config_from_hf(hf_config, frames_per_token: int) -> TimeRotaryConfig:
    rope = hf_config.rope_parameters
    if rope.get("rope_type", "default") != "default":
        raise NotImplementedError(f"time embedding RoPE type {rope['rope_type']!r} is not supported")
    # HF: head_dim = the audio width; rotary_dim = int(head_dim * partial_rotary_factor); positions = theta.
    # The mel frame step times 4 (stride-2 conv, then AvgPool 2) is the token step, multiplied as HF does.
    return TimeRotaryConfig(
        rotary_dim=int(hf_config.head_dim * rope.get("partial_rotary_factor", 1.0)),
        theta=float(rope["rope_theta"]),
        n_positions=int(hf_config.max_position_embeddings),
        seconds_per_token=hf_config.audio_frame_step * 2 * frames_per_token,
    )


def config_from_hf(hf_config) -> HookedAudioConfig:
    cfg = audioflamingo3_config_from_hf(hf_config)
    time_rotary = time_rotary_config_from_hf(hf_config, cfg.audio.frames_per_token)
    return replace(cfg, audio_time_rotary=time_rotary, family="musicflamingo")


MUSIC_FLAMINGO = ModelFamily(
    name="musicflamingo",
    hf_model_types=("musicflamingo",),
    hf_class_name="MusicFlamingoForConditionalGeneration",
    config_from_hf=config_from_hf,
    handled={
        **HANDLED,
        "": HANDLED[""] | {"audio_bos_token_id", "audio_eos_token_id", "audio_frame_step", "head_dim",
                           "max_position_embeddings", "rope_parameters"},
    },
    rename_rules=RENAME_RULES,
)
