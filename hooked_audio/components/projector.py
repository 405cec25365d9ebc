"""Projectors from the audio encoder's width to the decoder's width."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import nn

from .mlp import activation


class LinearProjector(nn.Module):
    """One linear layer with bias (Qwen2-Audio)."""

    def __init__(self, d_audio: int, d_model: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(d_audio, d_model, bias=bias)

    def forward(self, x: Float[torch.Tensor, "... d_audio"]) -> Float[torch.Tensor, "... d_model"]:
        return self.linear(x)


class MLPProjector(nn.Module):
    """linear -> activation -> linear (Audio Flamingo 3, Voxtral)."""

    def __init__(self, d_in: int, d_hidden: int, d_model: int, act_fn: str = "gelu", bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_hidden, bias=bias)
        self.linear_2 = nn.Linear(d_hidden, d_model, bias=bias)
        self.act = activation(act_fn)

    def forward(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_model"]:
        return self.linear_2(self.act(self.linear_1(x)))
