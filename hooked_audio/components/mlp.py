"""Feed-forward blocks with TransformerLens hook points.

- ``MLP``: ``fc2(act(fc1 x))`` (Whisper-style encoders). ``hook_pre`` = fc1 output, ``hook_post`` = act.
- ``GatedMLP``: ``down(act(gate x) * up x)`` (SwiGLU in Qwen2/Llama). As in TransformerLens,
  ``hook_pre`` = gate output, ``hook_pre_linear`` = up output, ``hook_post`` = their gated product.
``W_in``/``W_out`` (and ``W_gate``) are exposed in TransformerLens shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from ..hook_points import HookPoint

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, act_fn: str = "gelu", bias: bool = True):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_mlp, bias=bias)
        self.fc_out = nn.Linear(d_mlp, d_model, bias=bias)
        self.act = activation(act_fn)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    @property
    def W_in(self) -> Float[torch.Tensor, "d_model d_mlp"]:
        return self.fc_in.weight.T

    @property
    def W_out(self) -> Float[torch.Tensor, "d_mlp d_model"]:
        return self.fc_out.weight.T

    @property
    def b_in(self) -> Float[torch.Tensor, "d_mlp"]:
        return _bias(self.fc_in)

    @property
    def b_out(self) -> Float[torch.Tensor, "d_model"]:
        return _bias(self.fc_out)

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        return self.fc_out(self.hook_post(self.act(self.hook_pre(self.fc_in(x)))))


class GatedMLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, act_fn: str = "silu", bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(d_model, d_mlp, bias=bias)
        self.up = nn.Linear(d_model, d_mlp, bias=bias)
        self.down = nn.Linear(d_mlp, d_model, bias=bias)
        self.act = activation(act_fn)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp] gate pre-activation
        self.hook_pre_linear = HookPoint()  # [batch, pos, d_mlp] up projection
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    @property
    def W_gate(self) -> Float[torch.Tensor, "d_model d_mlp"]:
        return self.gate.weight.T

    @property
    def W_in(self) -> Float[torch.Tensor, "d_model d_mlp"]:
        return self.up.weight.T

    @property
    def W_out(self) -> Float[torch.Tensor, "d_mlp d_model"]:
        return self.down.weight.T

    @property
    def b_gate(self) -> Float[torch.Tensor, "d_mlp"]:
        return _bias(self.gate)

    @property
    def b_in(self) -> Float[torch.Tensor, "d_mlp"]:
        """The bias of ``W_in`` (the up projection), as TransformerLens's gated MLP."""
        return _bias(self.up)

    @property
    def b_out(self) -> Float[torch.Tensor, "d_model"]:
        return _bias(self.down)

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        gated = self.act(self.hook_pre(self.gate(x)))
        return self.down(self.hook_post(gated * self.hook_pre_linear(self.up(x))))


def _bias(linear: nn.Linear) -> torch.Tensor:
    """A linear map's bias, or zeros where it has none (TransformerLens always has one)."""
    if linear.bias is not None:
        return linear.bias
    return torch.zeros(linear.out_features, dtype=linear.weight.dtype, device=linear.weight.device)
