"""Temporal pooling of encoder frames into audio tokens, before the projector.

- ``avg2``: Qwen2-Audio's ``AvgPool1d(2, stride=2)``: 50 -> 25 frames per second.
- ``stack{n}``: concatenate ``n`` consecutive frames into one vector (Voxtral, GLM-ASR): width x n.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int


def pool_frames(x: Float[torch.Tensor, "clip frame d"], pooling: str | None) -> Float[torch.Tensor, "clip token d_out"]:
    if pooling is None:
        return x
    if pooling == "avg2":
        return F.avg_pool1d(x.transpose(1, 2), kernel_size=2, stride=2).transpose(1, 2)
    if pooling.startswith("stack"):
        n = int(pooling[len("stack"):])
        clips, frames, d = x.shape
        return x[:, : frames - frames % n].reshape(clips, frames // n, n * d)
    raise ValueError(f"unknown pooling {pooling!r}")


def pooled_lengths(frame_lengths: Int[torch.Tensor, "clip"], pooling: str | None) -> Int[torch.Tensor, "clip"]:
    """Valid tokens for clips with ``frame_lengths`` valid frames (HF's formulas)."""
    if pooling is None:
        return frame_lengths
    if pooling == "avg2":
        return (frame_lengths - 2) // 2 + 1
    if pooling.startswith("stack"):
        return frame_lengths // int(pooling[len("stack"):])
    raise ValueError(f"unknown pooling {pooling!r}")
