"""hooked_audio: TransformerLens-style hooked re-implementations of audio-language models."""

from .audio.io import load_waveform
from .cache import AudioActivationCache
from .config import AudioEncoderConfig, HookedAudioConfig
from .audio.inputs import AudioSpan, AudioTextInput
from .loading import from_hf_model, from_pretrained
from .model import HookedAudioTransformer

__all__ = [
    "AudioActivationCache",
    "AudioEncoderConfig",
    "AudioSpan",
    "AudioTextInput",
    "HookedAudioConfig",
    "HookedAudioTransformer",
    "from_hf_model",
    "from_pretrained",
    "load_waveform",
]
