"""Configuration of a hooked audio-language model.

The decoder half uses TransformerLens's field names (``n_layers``, ``d_model``, ``n_heads``, ``d_head``,
``n_key_value_heads``, ``d_mlp``, ``normalization_type``, ...) because ``transformer_lens.ActivationCache``
and ``transformer_lens.patching`` read them from ``model.cfg``. The audio half names its encoder class
(``encoders.ENCODERS``) and holds typed parts: a pooling object and a projector config, each of which
knows its own shapes. Only numbers and parts live here; how a family behaves lives in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .components.pooling import AvgPooling, FramePooling
from .components.projector import LinearProjectorConfig, ProjectorConfig
from .components.time_rotary import TimeRotaryConfig

__all__ = ["AudioEncoderConfig", "AudioInputSpec", "HookedAudioConfig", "TimeRotaryConfig"]


@dataclass
class AudioEncoderConfig:
    """The audio tower: a stem, pre-norm transformer blocks, a pooling and a final norm.

    ``encoder`` names the class in ``encoders.ENCODERS`` that builds it; the fields after ``pooling`` are
    read only by the encoders that need them (each says so)."""

    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    n_mels: int = 128
    encoder: str = "whisper"
    pooling: FramePooling | None = field(default_factory=AvgPooling)  # None: one token per frame
    seconds_per_frame: float = 0.02  # after the stem (10 ms hop x stride 2)
    act_fn: str = "gelu"
    normalization_type: str = "LN"
    eps: float = 1e-5
    qkv_bias: tuple[bool, bool, bool] = (True, False, True)  # Whisper: no bias on k
    o_bias: bool = True
    mlp_bias: bool = True
    n_key_value_heads: int | None = None  # None: one per head
    # Whisper-style encoders with a fixed input window (Whisper, Voxtral, GLM-ASR): encoder frames per
    # window after the stem (HF ``max_source_positions``); the features hold twice as many mel frames.
    window_frames: int | None = 1500
    # Qwen-Omni encoders: the stem runs on chunks of ``chunk_mel_frames`` mel frames, and attention stays
    # inside windows of ``attention_window_frames`` encoder frames; ``stem_channels`` is Qwen3-Omni's
    # conv2d width (HF ``downsample_hidden_size``).
    chunk_mel_frames: int | None = None
    attention_window_frames: int | None = None
    stem_channels: int | None = None
    # GLM-ASR: rotary positions on the first ``rotary_dim`` features of each head.
    rotary_dim: int | None = None
    rotary_base: float = 10000.0

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def frames_per_token(self) -> int:
        """Encoder frames merged into one audio token by the pooling."""
        return 1 if self.pooling is None else self.pooling.frames_per_token

    @property
    def d_out(self) -> int:
        """Width of each audio token the encoder hands to the projector (stacking multiplies it)."""
        return self.d_model if self.pooling is None else self.pooling.output_width(self.d_model)

    @property
    def seconds_per_token(self) -> float:
        return self.seconds_per_frame * self.frames_per_token


@dataclass(frozen=True)
class AudioInputSpec:
    """What the family's HF forward calls its audio inputs, and how it numbers decoder positions.

    ``position_ids``: ``"index"`` numbers every position ``0..pos-1`` (Qwen2-Audio and most families);
    ``"real_tokens"`` counts real tokens only, so a left-padded row starts at 0 (Qwen-Omni's MRoPE
    without images reduces to this).

    ``windowed_clips``: a clip longer than one encoder window comes as several full windows (feature rows)
    whose tokens fill one run of placeholders (Audio Flamingo 3, Voxtral, GLM-ASR); otherwise every
    feature row is one clip with its own run."""

    features: str = "input_features"
    frame_mask: str | None = "feature_attention_mask"  # per-mel-frame validity; None: every frame is real
    position_ids: Literal["index", "real_tokens"] = "index"
    windowed_clips: bool = False


@dataclass
class HookedAudioConfig:
    """The whole model. Decoder fields follow ``HookedTransformerConfig`` names."""

    # decoder (TransformerLens names)
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_key_value_heads: int | None = None
    n_ctx: int = 32768  # longest decoder sequence (HF ``max_position_embeddings``)
    act_fn: str = "silu"
    gated_mlp: bool = True
    normalization_type: str = "RMS"
    eps: float = 1e-6
    rotary_base: float = 10000.0
    rotary_dim: int | None = None
    qkv_bias: tuple[bool, bool, bool] = (True, True, True)
    o_bias: bool = False
    mlp_bias: bool = False
    use_qk_norm: bool = False  # Qwen3: RMSNorm on each head's q and k before rotary (eps = ``eps``)
    num_experts: int | None = None  # mixture-of-experts MLPs (components/moe.py); None: dense MLPs
    experts_per_token: int | None = None
    norm_topk_prob: bool = True  # renormalise the chosen experts' router probabilities to sum to 1
    tie_word_embeddings: bool = False
    attn_only: bool = False  # always False here; read by TransformerLens's ActivationCache
    positional_embedding_type: str = "rotary"  # every supported decoder rotates q and k (TransformerLens's field)
    default_prepend_bos: bool = False  # the supported tokenizers add no BOS (read by TransformerLens's utilities)
    # TransformerLens's switches (read by its patching and attribution code); set them with model.set_use_*.
    use_attn_result: bool = False
    use_split_qkv_input: bool = False
    use_hook_mlp_in: bool = False
    use_attn_in: bool = False
    device: str = "cpu"
    dtype: Any = None
    # audio side
    audio: AudioEncoderConfig | None = None
    projector: ProjectorConfig = field(default_factory=LinearProjectorConfig)
    audio_time_rotary: TimeRotaryConfig | None = None  # Music Flamingo: rotate encoder output by time
    audio_inputs: AudioInputSpec = field(default_factory=AudioInputSpec)
    audio_token_id: int = 151646
    pad_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    # provenance
    family: str = "qwen2_audio"
    model_name: str = "custom"
    fold_ln: bool = False  # set by weight processing: decoder norm weights folded into the next linear maps

    def __post_init__(self) -> None:
        if self.n_key_value_heads is None:
            self.n_key_value_heads = self.n_heads
        if self.n_heads % self.n_key_value_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must be a multiple of n_key_value_heads={self.n_key_value_heads}"
            )
        if self.rotary_dim is None:
            self.rotary_dim = self.d_head

    @property
    def seconds_per_audio_token(self) -> float:
        """How much audio one decoder audio token covers (0.04 s for Qwen2-Audio: 25 tokens/s)."""
        if self.audio is None:
            raise ValueError("this model has no audio encoder")
        return self.audio.seconds_per_token
