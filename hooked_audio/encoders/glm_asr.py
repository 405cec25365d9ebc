"""GLM-ASR's encoder: Voxtral's (no frame mask, norm before stacking 4 frames), with Llama-style positions.

- Rotary positions on the first ``rotary_dim`` features of each head (positions 0.. per window) instead of a
  learned table: no ``hook_pos_embed``; the blocks have ``hook_rot_q`` / ``hook_rot_k``.
- Grouped-query attention when ``n_key_value_heads`` says so.
- Any window length that makes whole tokens (HF reshapes each window's frames into rows of 4 frames).
As in HF, every frame of a window attends to every other, padding included; padding only decides how many
of a window's tokens are kept (``output_lengths``).
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from ..components.block import TransformerBlock
from ..components.rotary import RotaryEmbedding
from ..config import AudioEncoderConfig
from .voxtral import VoxtralEncoder
from .whisper import Rotary, check_mel_bins, check_mel_lengths


class GlmAsrEncoder(VoxtralEncoder):
    learned_positions = False
    pos_embed_hook = False

    def __init__(self, cfg: AudioEncoderConfig):
        if cfg.rotary_dim is None or cfg.pooling is None:
            raise ValueError("the GLM-ASR encoder needs a rotary_dim and a frame-stacking pooling")
        super().__init__(cfg)
        self.rotary = RotaryEmbedding(cfg.rotary_dim, cfg.rotary_base)

    def make_block(self, cfg: AudioEncoderConfig) -> TransformerBlock:
        return TransformerBlock.for_encoder(cfg, rotary=True, clamp_fp16=False)  # HF's GLM-ASR layers do not clamp

    def check_features(self, features: torch.Tensor, mel_lengths: torch.Tensor | None) -> None:
        check_mel_bins(features, self.cfg.n_mels)
        n_frames = int(self.stem.output_lengths(torch.tensor(features.shape[2])))
        if n_frames % self.cfg.frames_per_token:
            raise ValueError(
                f"{features.shape[2]} mel frames give {n_frames} encoder frames, not a multiple of "
                f"{self.cfg.frames_per_token}: pad each window to {2 * self.cfg.window_frames} mel frames "
                "(the processor does this)"
            )
        check_mel_lengths(features, mel_lengths)

    def add_positions(self, x: Float[torch.Tensor, "window frame d"]) -> tuple[Float[torch.Tensor, "window frame d"], Rotary]:
        positions = torch.arange(x.shape[1], device=x.device)[None]
        return x, self.rotary.cos_sin(positions, x.dtype)
