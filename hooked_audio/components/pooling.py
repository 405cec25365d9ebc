"""Temporal pooling of encoder frames into audio tokens, before the projector.

A pooling is a small stateless object that carries everything the rest of the library needs to know
about it: how it merges frames, how many valid tokens a clip of ``n`` valid frames yields (HF's formula
for each family), how many frames one token covers, and how wide a token is. Nothing outside this file
inspects which pooling a model has.

- ``AvgPooling(2)``: Qwen2-Audio's ``AvgPool1d(2, stride=2)``: 50 -> 25 frames per second.
- ``FrameStacking(n)``: concatenate ``n`` consecutive frames into one vector (Voxtral, GLM-ASR, Ultravox).
A config's ``pooling=None`` means one token per frame (Qwen3-Omni), and the encoder then has no ``hook_pooled``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int


@dataclass(frozen=True)
class FramePooling:
    """One token per ``frames_per_token`` frames; subclasses say how the frames are merged."""

    frames_per_token: int = 1

    def __call__(self, x: Float[torch.Tensor, "window frame d"]) -> Float[torch.Tensor, "window token d_out"]:
        raise NotImplementedError

    def output_lengths(self, frame_lengths: Int[torch.Tensor, "window"]) -> Int[torch.Tensor, "window"]:
        """Valid tokens of windows with ``frame_lengths`` valid frames."""
        return frame_lengths // self.frames_per_token

    def output_width(self, d_frame: int) -> int:
        """Width of one token, from the width of one frame."""
        return d_frame


@dataclass(frozen=True)
class AvgPooling(FramePooling):
    frames_per_token: int = 2

    def __call__(self, x: Float[torch.Tensor, "window frame d"]) -> Float[torch.Tensor, "window token d"]:
        n = self.frames_per_token
        return F.avg_pool1d(x.transpose(1, 2), kernel_size=n, stride=n).transpose(1, 2)

    def output_lengths(self, frame_lengths: Int[torch.Tensor, "window"]) -> Int[torch.Tensor, "window"]:
        """``AvgPool1d``'s own length rule, (n - k) // k + 1 (HF's formula)."""
        k = self.frames_per_token
        return (frame_lengths - k) // k + 1


@dataclass(frozen=True)
class FrameStacking(FramePooling):
    frames_per_token: int = 4

    def __call__(self, x: Float[torch.Tensor, "window frame d"]) -> Float[torch.Tensor, "window token d_out"]:
        n = self.frames_per_token
        windows, frames, d = x.shape
        return x[:, : frames - frames % n].reshape(windows, frames // n, n * d)

    def output_width(self, d_frame: int) -> int:
        return d_frame * self.frames_per_token
