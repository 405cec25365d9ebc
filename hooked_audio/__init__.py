"""hooked_audio: TransformerLens-style hooked re-implementations of audio-language models.

Axis names, used in every shape annotation (``Float[torch.Tensor, "batch pos d_model"]``) and docstring:

    batch      a row of the decoder input (one prompt)
    pos        a decoder position (text token or audio token); ``q_pos`` / ``k_pos`` in attention patterns
    audio_tok  one audio token of the whole batch, rows in order (``hook_audio_embeds``)
    clip       one audio clip = one run of audio placeholders in the decoder input (``AudioSpan.clip``)
    window     one feature row of the encoder input: a clip, or one fixed window of a long clip
    mel        a log-mel bin; ``frame`` an encoder time step after the stem (``mel frame`` before it)
    token      an audio token of one window, after pooling or stacking frames
    head / kv_head, d_head, d_model, d_mlp, d_vocab, layer   as in TransformerLens
"""

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
