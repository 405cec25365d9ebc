"""A pre-norm transformer block with TransformerLens's residual-stream hook points.

resid_pre -> ln1 -> attn -> hook_attn_out -> (+) resid_mid -> ln2 -> mlp -> hook_mlp_out -> (+) resid_post
The same block serves the text decoder (causal, RMSNorm, gated MLP, rotary) and the audio encoder
(bidirectional, LayerNorm, GELU MLP); the config decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import nn

from ..hook_points import HookPoint
from .attention import Attention
from .mlp import MLP, GatedMLP
from .norms import make_norm

if TYPE_CHECKING:
    from ..config import AudioEncoderConfig
    from ..kv_cache import KVCacheEntry


class TransformerBlock(nn.Module):
    # ``hook_resid_post`` is the whole residual stream (what TransformerLens's logit-lens tools check for)
    hook_out_is_single_residual_stream = True

    def __init__(
        self,
        *,
        d_model: int,
        n_heads: int,
        d_head: int,
        d_mlp: int,
        n_key_value_heads: int | None,
        normalization_type: str,
        eps: float,
        act_fn: str,
        gated_mlp: bool,
        qkv_bias: tuple[bool, bool, bool],
        o_bias: bool,
        mlp_bias: bool,
        causal: bool,
        rotary: bool,
        qk_norm_eps: float | None = None,
        mlp: nn.Module | None = None,
    ):
        """``qk_norm_eps``: per-head q/k RMSNorm (Qwen3). ``mlp``: a ready feed-forward module replacing the
        dense one (e.g. ``components.moe.MoEMLP``), still called as ``blocks.{l}.mlp``."""
        super().__init__()
        self.ln1 = make_norm(normalization_type, d_model, eps)
        self.attn = Attention(
            d_model, n_heads, d_head, n_key_value_heads, qkv_bias, o_bias, causal, rotary, qk_norm_eps
        )
        self.ln2 = make_norm(normalization_type, d_model, eps)
        mlp_class = GatedMLP if gated_mlp else MLP
        self.mlp = mlp if mlp is not None else mlp_class(d_model, d_mlp, act_fn, bias=mlp_bias)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    @classmethod
    def for_encoder(cls, cfg: AudioEncoderConfig, rotary: bool = False) -> TransformerBlock:
        """One audio-encoder block from its config: bidirectional, ungated MLP, and as many kv heads as
        ``cfg.n_key_value_heads`` says (None: one per head). Every audio encoder builds its blocks here, so
        that they stay the same module tree (and state-dict keys) whatever the tower around them."""
        return cls(
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            d_head=cfg.d_head,
            d_mlp=cfg.d_mlp,
            n_key_value_heads=cfg.n_key_value_heads or cfg.n_heads,
            normalization_type=cfg.normalization_type,
            eps=cfg.eps,
            act_fn=cfg.act_fn,
            gated_mlp=False,
            qkv_bias=cfg.qkv_bias,
            o_bias=cfg.o_bias,
            mlp_bias=cfg.mlp_bias,
            causal=False,
            rotary=rotary,
        )

    def forward(
        self,
        resid: Float[torch.Tensor, "batch pos d_model"],
        mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_kv: KVCacheEntry | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """``past_kv``: this layer's entry of a ``KVCache`` (generation); ``resid`` is then the new positions only."""
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(self.ln1(resid), mask, rotary, past_kv)))
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(resid))))
