"""The hooked audio encoder: stem -> positions -> transformer blocks -> pooling -> final norm.

Hook names (under the model's ``audio_encoder.`` prefix): ``hook_in`` (log-mel features
``[clip, mel, frame]``), ``hook_conv_out`` and ``hook_pos_embed`` (``[clip, frame, d]``), every block
hook of the text decoder under ``blocks.{l}.`` (per head too), ``hook_pooled`` where the family pools,
``ln_post.hook_scale|hook_normalized`` and ``hook_out`` (``[clip, token, d]``, before the projector).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import nn

from .components.audio_stem import WhisperConvStem
from .components.block import TransformerBlock
from .components.norms import make_norm
from .components.pooling import pool_frames, pooled_lengths
from .config import AudioEncoderConfig
from .hook_points import HookPoint


def make_audio_encoder(cfg: AudioEncoderConfig) -> nn.Module:
    """The encoder class for ``cfg.encoder_type``. Every encoder takes ``(features, mel_lengths)``,
    returns ``[clip, token, d]`` and has ``output_lengths(mel_lengths)``, with the hook names above."""
    if cfg.encoder_type == "whisper":
        return HookedAudioEncoder(cfg)
    if cfg.encoder_type in ("qwen2_5_omni", "qwen3_omni"):
        from .encoders.qwen_omni_encoder import QwenOmniAudioEncoder

        return QwenOmniAudioEncoder(cfg)
    if cfg.encoder_type == "glm_asr":
        from .encoders.glmasr_encoder import GlmAsrAudioEncoder

        return GlmAsrAudioEncoder(cfg)
    raise ValueError(f"unknown audio encoder_type {cfg.encoder_type!r}")


def check_mel_bins(features: torch.Tensor, n_mels: int) -> None:
    """Refuse features that are not ``[clip, n_mels, frame]``, for encoders that take any number of frames."""
    if features.ndim != 3 or features.shape[1] != n_mels:
        raise ValueError(f"audio features must be [clips, {n_mels} mel bins, frames], got {tuple(features.shape)}")


class HookedAudioEncoder(nn.Module):
    """Whisper-style: conv stem, learned positions, pre-LN blocks, optional pooling, final LayerNorm."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.stem != "whisper_conv":
            raise ValueError(f"unsupported audio stem {cfg.stem!r}")
        self.stem = WhisperConvStem(cfg.n_mels, cfg.d_model)
        self.W_pos = nn.Parameter(torch.zeros(cfg.n_ctx, cfg.d_model))
        self.blocks = nn.ModuleList(TransformerBlock.for_encoder(cfg) for _ in range(cfg.n_layers))
        self.ln_post = make_norm(cfg.normalization_type, cfg.d_model, cfg.eps) if cfg.ln_post else None
        self.hook_in = HookPoint()
        self.hook_conv_out = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.hook_pooled = HookPoint() if cfg.pooling else None
        self.hook_out = HookPoint()

    def check_features(self, features: torch.Tensor) -> None:
        expected = self.cfg.n_mel_frames
        if features.ndim != 3 or features.shape[1] != self.cfg.n_mels or features.shape[2] != expected:
            raise ValueError(
                f"audio features must be [clips, {self.cfg.n_mels} mel bins, {expected} frames] "
                f"(the encoder's fixed {expected / 100:.2f} s window, padded), got {tuple(features.shape)}. "
                "Build inputs with the model's processor or `model.build_inputs(...)`, which pad to the window."
            )

    def output_lengths(self, mel_lengths: Int[torch.Tensor, "clip"]) -> Int[torch.Tensor, "clip"]:
        """Audio tokens each clip yields, from its number of valid mel frames."""
        return pooled_lengths(self.stem.output_lengths(mel_lengths), self.cfg.pooling)

    def forward(
        self,
        features: Float[torch.Tensor, "clip mel frame"],
        mel_lengths: Int[torch.Tensor, "clip"] | None = None,
    ) -> Float[torch.Tensor, "clip token d_audio"]:
        self.check_features(features)
        features = self.hook_in(features.to(self.W_pos.dtype))
        x = self.hook_conv_out(self.stem(features))
        x = x + self.hook_pos_embed(self.W_pos[: x.shape[1]].expand(x.shape[0], -1, -1))
        mask = self._padding_mask(mel_lengths, x) if self.cfg.mask_padded_frames else None
        for block in self.blocks:
            x = block(x, mask)
        norm_first = self.ln_post is not None and self.cfg.ln_post_before_pooling
        if norm_first:  # Voxtral: normalise each frame, then stack frames
            x = self.ln_post(x)
        if self.cfg.pooling is not None:
            x = self.hook_pooled(pool_frames(x, self.cfg.pooling))
        if self.ln_post is not None and not norm_first:
            x = self.ln_post(x)
        return self.hook_out(x)

    def _padding_mask(
        self, mel_lengths: torch.Tensor | None, x: torch.Tensor
    ) -> Float[torch.Tensor, "clip 1 1 frame"] | None:
        """Additive key mask hiding frames past each clip's end (None when every clip fills the window)."""
        if mel_lengths is None:
            return None
        frame_lengths = self.stem.output_lengths(mel_lengths.to(x.device))
        padded = torch.arange(x.shape[1], device=x.device)[None, :] >= frame_lengths[:, None]
        if not padded.any():
            return None
        mask = torch.zeros(padded.shape, dtype=x.dtype, device=x.device).masked_fill(padded, torch.finfo(x.dtype).min)
        return mask[:, None, None, :]
