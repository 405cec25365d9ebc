"""Configuration of a hooked audio-language model.

The decoder half uses TransformerLens's field names (``n_layers``, ``d_model``, ``n_heads``, ``d_head``,
``n_key_value_heads``, ``d_mlp``, ``normalization_type``, ...) because ``transformer_lens.ActivationCache``
and ``transformer_lens.patching`` read them from ``model.cfg``. The encoder half describes the audio tower
with the same vocabulary, plus the parts (stem, pooling, projector) that differ between families.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class AudioEncoderConfig:
    """The audio tower: a conv stem, pre-norm transformer blocks, an optional pooling and a final norm."""

    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    n_mels: int = 128
    n_ctx: int = 1500  # positions after the stride-2 conv stem (HF ``max_source_positions``)
    act_fn: str = "gelu"
    normalization_type: str = "LN"
    eps: float = 1e-5
    qkv_bias: tuple[bool, bool, bool] = (True, False, True)  # Whisper: no bias on k
    o_bias: bool = True
    mlp_bias: bool = True
    encoder_type: str = "whisper"  # which encoder class builds this config (see audio_encoder.make_audio_encoder)
    stem: str = "whisper_conv"  # conv(k3) -> gelu -> conv(k3, stride 2) -> gelu, + learned positions
    pooling: str | None = "avg2"  # "avg2": AvgPool1d(2, 2); "stack4": concatenate 4 frames; None: none
    ln_post: bool = True
    mask_padded_frames: bool = True  # keys beyond a clip's length are masked (Qwen2-Audio does this)
    seconds_per_frame: float = 0.02  # after the conv stem (10 ms hop x stride 2)
    # Qwen-Omni encoders (encoders/qwen_omni_encoder.py): the stem runs on chunks of ``chunk_mel_frames`` mel
    # frames (``n_ctx`` positions each) and attention stays inside windows of ``attention_window_frames``
    # encoder frames. None: the whole clip at once.
    chunk_mel_frames: int | None = None
    attention_window_frames: int | None = None
    stem_channels: int | None = None  # Qwen3-Omni's conv2d stem width (HF ``downsample_hidden_size``)
    # Voxtral, GLM-ASR: the final norm runs on each frame *before* frames are stacked into tokens.
    ln_post_before_pooling: bool = False
    # GLM-ASR (encoders/glmasr_encoder.py): grouped-query attention and rotary positions on the first
    # ``rotary_dim`` features of each head instead of learned positions. None: as many kv heads as heads.
    n_key_value_heads: int | None = None
    rotary_dim: int | None = None
    rotary_base: float = 10000.0

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_mel_frames(self) -> int:
        """Mel frames the stem expects (the encoder's fixed window)."""
        return 2 * self.n_ctx

    @property
    def frames_per_token(self) -> int:
        """Encoder frames merged into one audio token by the pooling."""
        if self.pooling is None:
            return 1
        if self.pooling == "avg2":
            return 2
        if self.pooling.startswith("stack"):
            return int(self.pooling[len("stack"):])
        raise ValueError(f"unknown pooling {self.pooling!r}")

    @property
    def d_out(self) -> int:
        """Width of each audio token the encoder hands to the projector (stacking multiplies it)."""
        stacked = self.pooling is not None and self.pooling.startswith("stack")
        return self.d_model * self.frames_per_token if stacked else self.d_model

    @property
    def seconds_per_token(self) -> float:
        return self.seconds_per_frame * self.frames_per_token


@dataclass
class TimeRotaryConfig:
    """Music Flamingo's rotary *time* embedding on the encoder output (``components/time_rotary.py``).

    HF's values: ``rotary_dim = int(d_audio * partial_rotary_factor)`` features per axis (window axis and
    time axis, so ``2 * rotary_dim`` features rotate), ``theta`` the RoPE base, ``n_positions`` its
    ``max_position_embeddings`` (HF sets it to ``theta``), ``seconds_per_token`` = 4 mel frames."""

    rotary_dim: int
    theta: float = 1200.0
    n_positions: int = 1200
    seconds_per_token: float = 0.04


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
    n_ctx: int = 32768
    act_fn: str = "silu"
    gated_mlp: bool = True
    normalization_type: str = "RMS"
    eps: float = 1e-6
    positional_embedding_type: str = "rotary"
    rotary_base: float = 10000.0
    rotary_dim: int | None = None
    qkv_bias: tuple[bool, bool, bool] = (True, True, True)
    o_bias: bool = False
    mlp_bias: bool = False
    use_qk_norm: bool = False  # Qwen3: RMSNorm on each head's q and k before rotary (eps = ``eps``)
    num_experts: int | None = None  # mixture-of-experts MLPs (components/moe.py); None: dense MLPs
    experts_per_token: int | None = None
    norm_topk_prob: bool = True  # renormalise the chosen experts' router probabilities to sum to 1
    attn_only: bool = False
    final_rms: bool = True
    tie_word_embeddings: bool = False
    device: str = "cpu"
    dtype: Any = None
    # audio side
    audio: AudioEncoderConfig | None = None
    projector: str = "linear"  # linear | mlp_gelu (2 layers)
    audio_time_rotary: TimeRotaryConfig | None = None  # Music Flamingo: rotate encoder output by time
    audio_token_id: int = 151646
    audio_bos_token_id: int | None = None
    audio_eos_token_id: int | None = None
    pad_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    # provenance
    family: str = "qwen2_audio"
    model_name: str = "custom"
    extra: dict = field(default_factory=dict)

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

    def to_dict(self) -> dict:
        return asdict(self)
