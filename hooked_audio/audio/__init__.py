"""The first stage of the data path: waveforms in, decoder inputs out.

- ``io``: load / downmix / resample a clip to a clean 16 kHz mono waveform (files, arrays, tensors).
- ``prompting``: text or chat messages plus clips -> the checkpoint's processor -> ``AudioTextInput``.
- ``inputs``: ``AudioTextInput``, one batch with its audio placeholders expanded, and where the audio is.
"""

from .inputs import AudioSpan, AudioTextInput, as_tensor_dict
from .io import DEFAULT_SAMPLING_RATE, duration_seconds, load_waveform, silence, tone

__all__ = [
    "DEFAULT_SAMPLING_RATE",
    "AudioSpan",
    "AudioTextInput",
    "as_tensor_dict",
    "duration_seconds",
    "load_waveform",
    "silence",
    "tone",
]
