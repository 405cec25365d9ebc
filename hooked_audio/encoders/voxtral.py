"""Voxtral's encoder: Whisper's, with two differences.

- No frame mask: every row is one full 30 s window and all of it is encoded and kept, padding included.
- The final LayerNorm runs on each frame *before* frames are stacked into tokens (``FrameStacking(4)``:
  12.5 tokens per second, each ``4 x d`` wide).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int

from .whisper import WhisperEncoder


class VoxtralEncoder(WhisperEncoder):
    def frame_mask(self, mel_lengths: Int[torch.Tensor, "window"] | None, x: torch.Tensor) -> None:
        return None

    def real_block_frames(self, mel_lengths: Int[torch.Tensor, "window"], n_mel_frames: int) -> Bool[torch.Tensor, "row frame"]:
        """Every frame: with no frame mask, the padding of a window is encoded and attended to like the clip."""
        return torch.ones_like(super().real_block_frames(mel_lengths, n_mel_frames))

    def pool_and_norm(self, x: Float[torch.Tensor, "window frame d"]) -> Float[torch.Tensor, "window token d_out"]:
        return self.pool(self.ln_post(x))
