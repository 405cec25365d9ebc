"""Whisper-style convolutional stem: log-mel frames -> encoder frames.

conv(k=3) -> GELU -> conv(k=3, stride 2) -> GELU halves the frame rate (100 -> 50 frames/s).
The positional term and the ``hook_conv_out`` / ``hook_pos_embed`` points live on the encoder, so their
names are the same whatever stem a family uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import nn


class WhisperConvStem(nn.Module):
    def __init__(self, n_mels: int, d_model: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1)

    def forward(self, features: Float[torch.Tensor, "clip mel mel_frame"]) -> Float[torch.Tensor, "clip frame d_model"]:
        return F.gelu(self.conv2(F.gelu(self.conv1(features)))).transpose(1, 2)

    @staticmethod
    def output_lengths(mel_lengths: Int[torch.Tensor, "*clip"] | int) -> Int[torch.Tensor, "*clip"] | int:
        """Frames after the stride-2 conv for clips of ``mel_lengths`` valid mel frames."""
        return (mel_lengths - 1) // 2 + 1
