"""LayerNorm and RMSNorm with TransformerLens's ``hook_scale`` / ``hook_normalized`` points.

``hook_scale`` is the divisor ``sqrt(mean(x^2) + eps)`` (after centring for LayerNorm), shaped
``[..., 1]``, which is what ``ActivationCache.apply_ln_to_stack`` divides a residual stack by.
``hook_normalized`` is the output, weight and bias included, as in TransformerLens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from ..hook_points import HookPoint


class LayerNorm(nn.Module):
    """``nn.LayerNorm`` (weight ``w``, bias ``b``) with hook points; uses the fused kernel when unhooked."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()  # [..., 1]
        self.hook_normalized = HookPoint()  # [..., d_model]

    def forward(self, x: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... d_model"]:
        if not (self.hook_scale.is_hooked or self.hook_normalized.is_hooked):
            return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale * self.w + self.b)


class RMSNorm(nn.Module):
    """Qwen2/Llama RMSNorm: statistics in float32, weight applied in the input dtype (as HF does)."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.hook_scale = HookPoint()  # [..., 1]
        self.hook_normalized = HookPoint()  # [..., d_model]

    def forward(self, x: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... d_model"]:
        input_dtype = x.dtype
        x32 = x.float()
        scale = self.hook_scale((x32.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(self.w * (x32 / scale).to(input_dtype))


def make_norm(normalization_type: str, d_model: int, eps: float) -> nn.Module:
    """The norm a config asks for ("LN" or "RMS")."""
    if normalization_type == "LN":
        return LayerNorm(d_model, eps)
    if normalization_type == "RMS":
        return RMSNorm(d_model, eps)
    raise ValueError(f"unknown normalization_type {normalization_type!r}; expected 'LN' or 'RMS'")
