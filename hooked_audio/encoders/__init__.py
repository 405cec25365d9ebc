"""Audio encoders: ``whisper.WhisperEncoder`` and its relatives, each a subclass that states only its difference.

    WhisperEncoder            Qwen2-Audio, Audio Flamingo 3, Music Flamingo
    ├── VoxtralEncoder        no frame mask; norm each frame, then stack frames
    │   └── GlmAsrEncoder     rotary positions, grouped-query attention
    └── Qwen2_5OmniEncoder    chunked stem, sinusoids per chunk, windowed attention
        └── Qwen3OmniEncoder  2-D conv stem

``AudioEncoderConfig.encoder`` names one of ``ENCODERS``; a family outside the package registers its own
class with ``register_encoder``.
"""

from __future__ import annotations

from torch import nn

from ..config import AudioEncoderConfig
from .glm_asr import GlmAsrEncoder
from .qwen_omni import Qwen2_5OmniEncoder, Qwen3OmniEncoder
from .voxtral import VoxtralEncoder
from .whisper import WhisperEncoder

ENCODERS: dict[str, type[nn.Module]] = {
    "whisper": WhisperEncoder,
    "voxtral": VoxtralEncoder,
    "glm_asr": GlmAsrEncoder,
    "qwen2_5_omni": Qwen2_5OmniEncoder,
    "qwen3_omni": Qwen3OmniEncoder,
}


def register_encoder(name: str, encoder_class: type[nn.Module]) -> None:
    """Make ``AudioEncoderConfig(encoder=name)`` build ``encoder_class`` (a ``WhisperEncoder`` subclass, or any
    module taking ``(features, mel_lengths)`` with ``output_lengths``)."""
    if name in ENCODERS and ENCODERS[name] is not encoder_class:
        raise ValueError(f"an encoder named {name!r} is already registered ({ENCODERS[name].__name__})")
    ENCODERS[name] = encoder_class


def build_encoder(cfg: AudioEncoderConfig) -> nn.Module:
    if cfg.encoder not in ENCODERS:
        raise ValueError(f"unknown audio encoder {cfg.encoder!r}; registered: {sorted(ENCODERS)}")
    return ENCODERS[cfg.encoder](cfg)
