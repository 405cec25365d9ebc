"""Projectors from the audio encoder's token width to the decoder's width, and the configs that build them.

A projector config is a small frozen dataclass with ``build(d_in, d_model)``; a family picks one, and a
family outside the package can bring its own (any ``ProjectorConfig`` subclass), without the model
knowing which it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import nn

from .mlp import activation


@dataclass(frozen=True)
class ProjectorConfig:
    """Builds the module that maps ``[..., d_in]`` audio tokens to ``[..., d_model]`` (``hook_audio_embeds``)."""

    def build(self, d_in: int, d_model: int) -> nn.Module:
        raise NotImplementedError


@dataclass(frozen=True)
class LinearProjectorConfig(ProjectorConfig):
    """One linear layer (Qwen2-Audio, Qwen2.5-Omni)."""

    bias: bool = True

    def build(self, d_in: int, d_model: int) -> nn.Module:
        return LinearProjector(d_in, d_model, self.bias)


@dataclass(frozen=True)
class MLPProjectorConfig(ProjectorConfig):
    """``linear_1 -> act -> linear_2`` (Audio Flamingo 3, Voxtral, GLM-ASR, Qwen3-Omni); ``d_hidden`` as HF sets it."""

    d_hidden: int
    act_fn: str = "gelu"
    bias: bool = True

    def build(self, d_in: int, d_model: int) -> nn.Module:
        return MLPProjector(d_in, self.d_hidden, d_model, self.act_fn, self.bias)


class LinearProjector(nn.Module):
    def __init__(self, d_in: int, d_model: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(d_in, d_model, bias=bias)

    def forward(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_model"]:
        return self.linear(x)


class MLPProjector(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_model: int, act_fn: str = "gelu", bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_hidden, bias=bias)
        self.linear_2 = nn.Linear(d_hidden, d_model, bias=bias)
        self.act = activation(act_fn)

    def forward(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_model"]:
        return self.linear_2(self.act(self.linear_1(x)))
