"""Folding norm weights into the next linear map, as TransformerLens's ``fold_ln`` does.

After folding, every decoder norm has weight 1, so ``ActivationCache.apply_ln_to_stack`` (which divides by
the cached scale and knows nothing of weights) gives exact direct logit attributions. The model's
outputs are unchanged up to float rounding; ``hook_normalized`` then shows the unweighted normalized
stream, as in TransformerLens with ``fold_ln=True``.
"""

from __future__ import annotations

import torch

from .components.norms import RMSNorm


@torch.no_grad()
def fold_decoder_norms(model) -> None:
    """Fold ``ln1`` into q/k/v, ``ln2`` into the MLP input maps and ``ln_final`` into the unembedding."""
    if not all(isinstance(m, RMSNorm) for b in model.blocks for m in (b.ln1, b.ln2)):
        raise NotImplementedError("folding is implemented for RMSNorm decoders")
    for block in model.blocks:
        _fold(block.ln1, [block.attn.q, block.attn.k, block.attn.v])
        mlp = block.mlp
        if hasattr(mlp, "gate_up"):  # mixture of experts: the router and every expert read ln2's output
            mlp.gate_up.mul_(block.ln2.w.to(mlp.gate_up.dtype))
            _fold(block.ln2, [mlp.router])
        else:
            _fold(block.ln2, [mlp.gate, mlp.up] if hasattr(mlp, "gate") else [mlp.fc_in])
    if model.unembed.weight is model.embed.weight:  # tied: untie before scaling the unembedding
        model.unembed.weight = torch.nn.Parameter(model.embed.weight.detach().clone())
    _fold(model.ln_final, [model.unembed])
    model.cfg.fold_ln = True


def _fold(norm: RMSNorm, linears: list[torch.nn.Linear]) -> None:
    for linear in linears:
        linear.weight.mul_(norm.w.to(linear.weight.dtype)[None, :])
    norm.w.fill_(1.0)
