"""Rotary position embedding (RoPE), the "rotate half" convention used by Qwen2, Llama and HF.

``rotary_dim`` smaller than ``d_head`` rotates only the first ``rotary_dim`` features of each head
(partial RoPE) and passes the rest through.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import nn


class RotaryEmbedding(nn.Module):
    """Computes cos/sin tables for integer positions and applies them to q or k."""

    def __init__(self, rotary_dim: int, base: float):
        super().__init__()
        self.rotary_dim = rotary_dim
        # A plain float32 CPU tensor, not a buffer: ``model.to(bfloat16)`` must not round the
        # frequencies (HF keeps them in float32 too), and meta-device construction must not touch it.
        arange = torch.arange(0, rotary_dim, 2, dtype=torch.float, device="cpu")
        self.inv_freq = 1.0 / (base ** (arange / rotary_dim))

    def cos_sin(
        self, position_ids: Int[torch.Tensor, "batch pos"], dtype: torch.dtype
    ) -> tuple[Float[torch.Tensor, "batch pos rotary_dim"], Float[torch.Tensor, "batch pos rotary_dim"]]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    @staticmethod
    def apply(
        x: Float[torch.Tensor, "batch pos head d_head"],
        cos: Float[torch.Tensor, "#batch pos rotary_dim"],
        sin: Float[torch.Tensor, "#batch pos rotary_dim"],
    ) -> Float[torch.Tensor, "batch pos head d_head"]:
        rotary_dim = cos.shape[-1]
        x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
        half = rotary_dim // 2
        rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
        out = x_rot * cos + rotated * sin
        return torch.cat((out, x_pass), dim=-1) if x_pass.shape[-1] else out
