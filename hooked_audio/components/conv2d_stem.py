"""Qwen3-Omni's convolutional stem: a log-mel chunk seen as an image, downsampled 8x in time and frequency.

three ``Conv2d(k=3, stride 2, padding 1)`` + GELU over (mel, time) -> flatten channels x mel -> linear (no bias).
A chunk of 100 mel frames (1 s) becomes 13 encoder frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import nn


def halved(length: int | torch.Tensor) -> int | torch.Tensor:
    """Length after one ``k=3, stride 2, padding 1`` convolution (0 stays 0)."""
    return (length - 1) // 2 + 1


class Conv2dStem(nn.Module):
    def __init__(self, n_mels: int, channels: int, d_model: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, 2, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 2, padding=1)
        self.conv3 = nn.Conv2d(channels, channels, 3, 2, padding=1)
        self.out = nn.Linear(channels * halved(halved(halved(n_mels))), d_model, bias=False)

    def forward(self, chunks: Float[torch.Tensor, "chunk mel frame"]) -> Float[torch.Tensor, "chunk out_frame d_model"]:
        x = chunks[:, None]
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.gelu(conv(x))
        n, channels, freq, frames = x.shape
        return self.out(x.permute(0, 3, 1, 2).reshape(n, frames, channels * freq))

    @staticmethod
    def output_lengths(mel_lengths: Int[torch.Tensor, "*n"] | int) -> Int[torch.Tensor, "*n"] | int:
        return halved(halved(halved(mel_lengths)))
