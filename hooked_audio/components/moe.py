"""A sparse mixture-of-experts feed-forward block (Qwen3-MoE / Qwen3-Omni thinker) with hook points.

    x -> router (linear, no bias) -> hook_router_logits [batch, pos, expert]
      -> softmax (float32) -> top-k -> renormalise (``norm_topk_prob``) -> hook_expert_weights [batch, pos, k]
                                                                          hook_expert_indices [batch, pos, k]
      -> each chosen expert e: down_e(act(gate_e x) * up_e x), times its weight -> hook_expert_out
      -> summed over the k chosen experts (this sum is the block's ``hook_mlp_out``)

Hook points (under ``blocks.{l}.mlp.``):
- ``hook_router_logits`` ``[batch, pos, n_experts]``: the router's raw scores (HF's ``router_logits``).
- ``hook_expert_weights`` ``[batch, pos, experts_per_token]``: the mixing weights of the chosen experts;
  scale one to damp an expert, as TransformerLens's ``MoE.hook_expert_weights``.
- ``hook_expert_indices`` ``[batch, pos, experts_per_token]`` (integers): which experts were chosen, in
  descending weight order; a hook may return other indices to re-route tokens.
- ``hook_expert_out`` ``[batch, pos, experts_per_token, d_model]``: each chosen expert's weighted output
  (they sum to the block output, so ``cache["blocks.3.mlp.hook_expert_out"][..., j, :]`` is slot ``j``'s
  direct contribution to the residual stream). Computed only when hooked, since it is k times the output.

Weights stay in HF's fused layout (``gate_up`` ``[expert, 2 * d_mlp, d_model]``, ``down``
``[expert, d_model, d_mlp]``); ``W_gate``/``W_in``/``W_out`` give TransformerLens shapes with a leading
expert axis. Per-expert neuron activations have no hook: each expert sees a different set of tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import nn

from ..hook_points import HookPoint
from .mlp import activation


class MoEMLP(nn.Module):
    def __init__(
        self, d_model: int, d_mlp: int, n_experts: int, experts_per_token: int, act_fn: str = "silu",
        norm_topk_prob: bool = True,
    ):
        super().__init__()
        self.n_experts, self.experts_per_token, self.d_mlp = n_experts, experts_per_token, d_mlp
        self.norm_topk_prob = norm_topk_prob
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.gate_up = nn.Parameter(torch.empty(n_experts, 2 * d_mlp, d_model))
        self.down = nn.Parameter(torch.empty(n_experts, d_model, d_mlp))
        self.act = activation(act_fn)
        self.hook_router_logits = HookPoint()  # [batch, pos, n_experts]
        self.hook_expert_weights = HookPoint()  # [batch, pos, k]
        self.hook_expert_indices = HookPoint()  # [batch, pos, k]
        self.hook_expert_out = HookPoint()  # [batch, pos, k, d_model]

    @classmethod
    def from_config(cls, cfg) -> "MoEMLP":
        """The MoE block a ``HookedAudioConfig`` with ``num_experts`` asks for."""
        return cls(cfg.d_model, cfg.d_mlp, cfg.num_experts, cfg.experts_per_token, cfg.act_fn, cfg.norm_topk_prob)

    @property
    def W_gate(self) -> Float[torch.Tensor, "expert d_model d_mlp"]:
        return self.gate_up[:, : self.d_mlp].transpose(1, 2)

    @property
    def W_in(self) -> Float[torch.Tensor, "expert d_model d_mlp"]:
        return self.gate_up[:, self.d_mlp :].transpose(1, 2)

    @property
    def W_out(self) -> Float[torch.Tensor, "expert d_mlp d_model"]:
        return self.down.transpose(1, 2)

    def route(
        self, x: Float[torch.Tensor, "batch pos d_model"]
    ) -> tuple[Float[torch.Tensor, "batch pos k"], Int[torch.Tensor, "batch pos k"]]:
        logits = self.hook_router_logits(self.router(x))
        probs = F.softmax(logits, dim=-1, dtype=torch.float32)
        weights, indices = torch.topk(probs, self.experts_per_token, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return self.hook_expert_weights(weights.to(logits.dtype)), self.hook_expert_indices(indices)

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        weights, indices = self.route(x)
        tokens = x.reshape(-1, x.shape[-1])
        flat_weights, flat_indices = weights.reshape(-1, self.experts_per_token), indices.reshape(-1, self.experts_per_token)
        per_slot = self.hook_expert_out.is_hooked
        out = tokens.new_zeros((tokens.shape[0], self.experts_per_token, tokens.shape[1]) if per_slot else tokens.shape)
        for expert in flat_indices.unique().tolist():
            token_idx, slot = torch.where(flat_indices == expert)
            gate, up = F.linear(tokens[token_idx], self.gate_up[expert]).chunk(2, dim=-1)
            expert_out = F.linear(self.act(gate) * up, self.down[expert]) * flat_weights[token_idx, slot, None]
            if per_slot:
                out[token_idx, slot] = expert_out
            else:
                out.index_add_(0, token_idx, expert_out)
        if per_slot:
            out = self.hook_expert_out(out.reshape(*x.shape[:-1], self.experts_per_token, -1)).sum(dim=-2)
        return out.reshape(x.shape)
