"""Temporal pooling of encoder frames before the projector.

``avg2`` is Qwen2-Audio's ``AvgPool1d(2, stride=2)``: 50 -> 25 frames per second.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int


def avg_pool_2(x: Float[torch.Tensor, "clip frame d"]) -> Float[torch.Tensor, "clip frame_half d"]:
    return F.avg_pool1d(x.transpose(1, 2), kernel_size=2, stride=2).transpose(1, 2)


def avg_pool_2_lengths(frame_lengths: Int[torch.Tensor, "clip"]) -> Int[torch.Tensor, "clip"]:
    """Valid pooled frames for clips with ``frame_lengths`` valid frames (HF's formula)."""
    return (frame_lengths - 2) // 2 + 1
