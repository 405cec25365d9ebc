"""GLM-ASR's audio tower: a Whisper conv stem followed by Llama-style blocks with partial rotary positions.

    features [clip, mel, frame]                                            hook_in
    -> conv(k3) -> GELU -> conv(k3, stride 2) -> GELU                       hook_conv_out   [clip, frame, d]
    -> pre-LayerNorm blocks: grouped-query attention with q/v/o biases (no k bias), RoPE on the first
       ``rotary_dim`` features of each head (positions 0.. per window), GELU MLP  blocks.{l}.* (hook_rot_q/k too)
    -> final LayerNorm on each frame                                        ln_post.*
    -> 4 consecutive frames concatenated into one token                     hook_pooled     [clip, token, 4d]
                                                                            hook_out

Differences from Qwen2-Audio's encoder (``audio_encoder.HookedAudioEncoder``): rotary positions instead of a
learned table (so there is no ``hook_pos_embed``, and ``hook_rot_q``/``hook_rot_k`` exist instead), GQA-capable
attention, frame stacking after the norm instead of average pooling before it, and no padding mask: as in HF,
every frame of the window attends to every other, padding included. Padding only decides how many of a
window's tokens are kept (``output_lengths``).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import nn

from ..audio_encoder import check_mel_bins
from ..components.audio_stem import WhisperConvStem
from ..components.block import TransformerBlock
from ..components.norms import make_norm
from ..components.pooling import pool_frames, pooled_lengths
from ..components.rotary import RotaryEmbedding
from ..config import AudioEncoderConfig
from ..hook_points import HookPoint


class GlmAsrAudioEncoder(nn.Module):
    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        if cfg.stem != "whisper_conv" or cfg.rotary_dim is None or not (cfg.pooling or "").startswith("stack"):
            raise ValueError("the GLM-ASR encoder needs stem='whisper_conv', a rotary_dim and a stackN pooling")
        self.cfg = cfg
        self.stem = WhisperConvStem(cfg.n_mels, cfg.d_model)
        self.rotary = RotaryEmbedding(cfg.rotary_dim, cfg.rotary_base)
        self.blocks = nn.ModuleList(TransformerBlock.for_encoder(cfg, rotary=True) for _ in range(cfg.n_layers))
        self.ln_post = make_norm(cfg.normalization_type, cfg.d_model, cfg.eps)
        self.hook_in = HookPoint()  # [clip, mel, frame]
        self.hook_conv_out = HookPoint()  # [clip, frame, d]
        self.hook_pooled = HookPoint()  # [clip, token, frames_per_token * d]
        self.hook_out = HookPoint()  # [clip, token, frames_per_token * d]

    def check_features(self, features: torch.Tensor) -> None:
        """Any window length works (positions are rotary), as long as it makes whole tokens: HF reshapes each
        window's frames into rows of ``frames_per_token`` frames and fails otherwise."""
        check_mel_bins(features, self.cfg.n_mels)
        n_frames = int(self.stem.output_lengths(torch.tensor(features.shape[2])))
        if n_frames % self.cfg.frames_per_token:
            raise ValueError(
                f"{features.shape[2]} mel frames give {n_frames} encoder frames, not a multiple of "
                f"{self.cfg.frames_per_token}: pad each window to {self.cfg.n_mel_frames} mel frames "
                "(the processor does this)"
            )

    def output_lengths(self, mel_lengths: Int[torch.Tensor, "clip"]) -> Int[torch.Tensor, "clip"]:
        """Audio tokens kept per window, from its number of real mel frames (HF's formula)."""
        return pooled_lengths(self.stem.output_lengths(mel_lengths), self.cfg.pooling)

    def forward(
        self,
        features: Float[torch.Tensor, "clip mel frame"],
        mel_lengths: Int[torch.Tensor, "clip"] | None = None,
    ) -> Float[torch.Tensor, "clip token d_out"]:
        """``mel_lengths`` is unused here (nothing is masked); the model uses it through ``output_lengths``."""
        self.check_features(features)
        dtype = self.stem.conv1.weight.dtype
        x = self.hook_conv_out(self.stem(self.hook_in(features.to(dtype))))
        positions = torch.arange(x.shape[1], device=x.device)[None]
        rotary = self.rotary.cos_sin(positions, x.dtype)
        for block in self.blocks:
            x = block(x, None, rotary)
        x = self.hook_pooled(pool_frames(self.ln_post(x), self.cfg.pooling))
        return self.hook_out(x)
