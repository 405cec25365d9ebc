"""Multi-head / grouped-query self-attention with TransformerLens hook points.

Two numerically equivalent paths:
- fast: ``torch.nn.functional.scaled_dot_product_attention`` when no hook reads or writes
  ``hook_attn_scores`` or ``hook_pattern`` on this layer (the pattern is then never materialised);
- explicit: scores -> ``hook_attn_scores`` -> softmax (float32) -> ``hook_pattern`` -> ``z``.
``hook_result`` (each head's write to the residual stream) is computed only when hooked, since it is
``[batch, pos, head, d_model]``; otherwise the output projection is one matmul.

With a ``past_kv`` (one layer of ``kv_cache.KVCache``), the new positions' keys and values (after q/k
norm and rotary) are appended to the cached ones and the queries attend over all of them; the hooks on
q/k/v see the new positions only, the scores and pattern are ``[batch, head, new, k_pos]``.

TransformerLens's per-head inputs (``HookedAudioTransformer.set_use_split_qkv_input`` / ``set_use_attn_in``):
the block hands ``forward`` a tuple of already normalised per-head copies of the residual instead of one
``[batch, pos, d_model]`` tensor, and q/k/v are then each head's own projection of its own copy. The points
``hook_attn_in`` / ``hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` (TransformerLens 4's names, which its
``patching.get_act_patch_direct_path`` and edge attribution read) are added here by the block only while a
switch is on, and are fired by the block (see ``block.py``).

Weights are stored as ``nn.Linear`` (fast, and HF's layout); ``W_Q``/``W_K``/``W_V``/``W_O`` and the
biases are exposed in TransformerLens shapes for users and for ``ActivationCache.compute_head_results``.
With grouped-query attention, ``W_K``/``W_V``/``b_K``/``b_V`` follow TransformerLens: repeated to one per query
head, so per-head circuits (OV, QK) need no special case; ``_W_K``/``_W_V``/``_b_K``/``_b_V`` are the stored kv heads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from ..hook_points import HookPoint
from .masks import causal_mask
from .norms import RMSNorm
from .rotary import RotaryEmbedding

if TYPE_CHECKING:
    from ..kv_cache import KVCacheEntry

# TransformerLens's split inputs, normalised: q's per head, k's and v's per kv head (see ``block.py``)
PerHeadInputs = tuple[
    Float[torch.Tensor, "batch pos head d_model"],
    Float[torch.Tensor, "batch pos kv_head d_model"],
    Float[torch.Tensor, "batch pos kv_head d_model"],
]


class Attention(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_head: int,
        n_key_value_heads: int | None = None,
        qkv_bias: tuple[bool, bool, bool] = (True, True, True),
        o_bias: bool = False,
        causal: bool = True,
        rotary: bool = True,
        qk_norm_eps: float | None = None,
    ):
        """``qk_norm_eps``: RMS-normalise each head's q and k (before rotary) with this eps, as Qwen3 does;
        the norms are ``q_norm`` / ``k_norm`` with their own ``hook_scale`` / ``hook_normalized``."""
        super().__init__()
        self.n_heads = n_heads
        self.n_key_value_heads = n_key_value_heads or n_heads
        self.d_head = d_head
        self.causal = causal
        self.scale = d_head**-0.5
        self.q = nn.Linear(d_model, n_heads * d_head, bias=qkv_bias[0])
        self.k = nn.Linear(d_model, self.n_key_value_heads * d_head, bias=qkv_bias[1])
        self.v = nn.Linear(d_model, self.n_key_value_heads * d_head, bias=qkv_bias[2])
        self.o = nn.Linear(n_heads * d_head, d_model, bias=o_bias)
        if qk_norm_eps is not None:
            self.q_norm = RMSNorm(d_head, qk_norm_eps)  # [batch, pos, head, d_head]
            self.k_norm = RMSNorm(d_head, qk_norm_eps)  # [batch, pos, kv_head, d_head]

        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, pos, kv_head, d_head]
        self.hook_v = HookPoint()  # [batch, pos, kv_head, d_head]
        if rotary:  # only where rotary embeddings exist, so that no hook point is dead
            self.hook_rot_q = HookPoint()  # [batch, pos, head, d_head]
            self.hook_rot_k = HookPoint()  # [batch, pos, kv_head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, q_pos, k_pos]
        self.hook_pattern = HookPoint()  # [batch, head, q_pos, k_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head, d_model]

    # --- TransformerLens-shaped views of the weights -------------------------------------------
    def _heads_in(self, linear: nn.Linear, n: int) -> torch.Tensor:
        return einops.rearrange(linear.weight, "(h d) m -> h m d", h=n)

    @property
    def W_Q(self) -> Float[torch.Tensor, "head d_model d_head"]:
        return self._heads_in(self.q, self.n_heads)

    @property
    def _W_K(self) -> Float[torch.Tensor, "kv_head d_model d_head"]:
        return self._heads_in(self.k, self.n_key_value_heads)

    @property
    def _W_V(self) -> Float[torch.Tensor, "kv_head d_model d_head"]:
        return self._heads_in(self.v, self.n_key_value_heads)

    def _per_query_head(self, kv: torch.Tensor) -> torch.Tensor:
        """TransformerLens's grouped-query convention: one copy of each kv head per query head it serves."""
        return kv.repeat_interleave(self.n_heads // self.n_key_value_heads, dim=0)

    @property
    def W_K(self) -> Float[torch.Tensor, "head d_model d_head"]:
        return self._per_query_head(self._W_K)

    @property
    def W_V(self) -> Float[torch.Tensor, "head d_model d_head"]:
        return self._per_query_head(self._W_V)

    @property
    def W_O(self) -> Float[torch.Tensor, "head d_head d_model"]:
        return einops.rearrange(self.o.weight, "m (h d) -> h d m", h=self.n_heads)

    def _bias(self, linear: nn.Linear, n: int) -> torch.Tensor:
        if linear.bias is None:
            return torch.zeros(n, self.d_head, dtype=linear.weight.dtype, device=linear.weight.device)
        return linear.bias.view(n, self.d_head)

    @property
    def b_Q(self) -> Float[torch.Tensor, "head d_head"]:
        return self._bias(self.q, self.n_heads)

    @property
    def _b_K(self) -> Float[torch.Tensor, "kv_head d_head"]:
        return self._bias(self.k, self.n_key_value_heads)

    @property
    def _b_V(self) -> Float[torch.Tensor, "kv_head d_head"]:
        return self._bias(self.v, self.n_key_value_heads)

    @property
    def b_K(self) -> Float[torch.Tensor, "head d_head"]:
        return self._per_query_head(self._b_K)

    @property
    def b_V(self) -> Float[torch.Tensor, "head d_head"]:
        return self._per_query_head(self._b_V)

    @property
    def b_O(self) -> Float[torch.Tensor, "d_model"]:
        if self.o.bias is None:
            return torch.zeros(self.o.out_features, dtype=self.o.weight.dtype, device=self.o.weight.device)
        return self.o.bias

    # --- forward --------------------------------------------------------------------------------
    @property
    def needs_explicit_pattern(self) -> bool:
        return self.hook_attn_scores.is_hooked or self.hook_pattern.is_hooked

    def forward(
        self,
        x: Float[torch.Tensor, "batch pos d_model"] | PerHeadInputs,
        mask: Float[torch.Tensor, "batch 1 q_pos k_pos"] | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_kv: KVCacheEntry | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """``x``: the normalised residual, or (TransformerLens's split inputs) normalised per-head copies of it
        for q, k and v. ``mask`` is additive (0 or a large negative), already including causality when given;
        with ``past_kv`` its last axis covers the cached positions too (``[batch, 1, pos, k_pos]``)."""
        if isinstance(x, tuple):
            q, k, v = self._project_per_head(*x)
        else:
            batch, pos, _ = x.shape
            q = self.q(x).view(batch, pos, self.n_heads, self.d_head)
            k = self.k(x).view(batch, pos, self.n_key_value_heads, self.d_head)
            v = self.v(x).view(batch, pos, self.n_key_value_heads, self.d_head)
        batch, pos = q.shape[:2]
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            cos, sin = rotary
            q = self.hook_rot_q(RotaryEmbedding.apply(q, cos, sin))
            k = self.hook_rot_k(RotaryEmbedding.apply(k, cos, sin))
        if past_kv is not None:
            k, v = past_kv.append(k, v)
            if pos > 1 and mask is None and k.shape[1] != pos:
                raise ValueError(f"{pos} queries over {k.shape[1]} keys need a mask (KVCache.attention_bias)")

        if self.needs_explicit_pattern:
            z = self._explicit_attention(q, k, v, mask)
        else:
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                attn_mask=mask,
                is_causal=self.causal and mask is None and pos > 1,  # then pos == k_pos (checked above)
                scale=self.scale,
                enable_gqa=self.n_key_value_heads != self.n_heads,
            ).transpose(1, 2)
        z = self.hook_z(z)

        if self.hook_result.is_hooked:
            result = self.hook_result(torch.einsum("bphd,hdm->bphm", z, self.W_O))
            return result.sum(dim=2) + self.b_O
        return self.o(z.reshape(batch, pos, self.n_heads * self.d_head))

    def _project_per_head(
        self,
        q_in: Float[torch.Tensor, "batch pos head d_model"],
        k_in: Float[torch.Tensor, "batch pos kv_head d_model"],
        v_in: Float[torch.Tensor, "batch pos kv_head d_model"],
    ) -> tuple[
        Float[torch.Tensor, "batch pos head d_head"],
        Float[torch.Tensor, "batch pos kv_head d_head"],
        Float[torch.Tensor, "batch pos kv_head d_head"],
    ]:
        """Each head's q (each kv head's k and v) from its own copy of the input, as TransformerLens's
        ``complex_attn_linear``; with identical copies it equals the one-matmul path."""
        q = torch.einsum("bphm,hmd->bphd", q_in, self.W_Q) + self.b_Q
        k = torch.einsum("bphm,hmd->bphd", k_in, self._W_K) + self._b_K
        v = torch.einsum("bphm,hmd->bphd", v_in, self._W_V) + self._b_V
        return q, k, v

    def _explicit_attention(
        self,
        q: Float[torch.Tensor, "batch q_pos head d_head"],
        k: Float[torch.Tensor, "batch k_pos kv_head d_head"],
        v: Float[torch.Tensor, "batch k_pos kv_head d_head"],
        mask: torch.Tensor | None,
    ) -> Float[torch.Tensor, "batch q_pos head d_head"]:
        """``k_pos`` is ``q_pos`` on an ordinary forward, and covers the cached positions too on a cached step."""
        n_rep = self.n_heads // self.n_key_value_heads
        if n_rep > 1:
            k = k.repeat_interleave(n_rep, dim=2)
            v = v.repeat_interleave(n_rep, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * self.scale
        if mask is None and self.causal and q.shape[1] > 1:  # one query (a cached step) sees every key
            mask = causal_mask(q.shape[1], scores.dtype, scores.device)
        if mask is not None:
            scores = scores + mask
        scores = self.hook_attn_scores(scores)
        pattern = self.hook_pattern(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype))
        return torch.einsum("bhqk,bkhd->bqhd", pattern, v)
