"""TransformerLens's weight processing, for the text decoder, each step optional.

The library loads raw HF weights by default, so every activation equals HF's, and ``AudioActivationCache``
makes direct logit attribution exact without folding. These steps exist for users who want TL's processed
view:

- ``fold_decoder_norms`` (TL ``fold_ln``): norm weights folded into the next linear maps; logits unchanged up to
  float rounding; ``hook_normalized`` then shows the unweighted normalized stream.
- ``fold_value_biases_into_output`` (TL ``fold_value_biases``): each head's value bias moved into the output bias (exact,
  since attention weights sum to 1); logits unchanged up to rounding.
- ``center_unembedding`` (TL ``center_unembed``): the unembedding's mean over the vocabulary removed; every logit of
  a position moves by the same amount, so probabilities are unchanged but logits are no longer HF's.
- TL's ``center_writing_weights`` is refused: it assumes LayerNorm, and these decoders use RMSNorm, which does
  not remove the mean, so it would change the model.

Every step is idempotent (a second run changes nothing), keeps ``cfg`` true to the weights (an untied unembedding
sets ``cfg.tie_word_embeddings = False``, an added output bias ``cfg.o_bias = True``, so a model rebuilt from
``cfg`` loads the processed state dict exactly), and is refused on a model whose weights are still an HF model's
(``from_hf_model(copy_weights=False)``): processing would rewrite the user's HF model.
"""

from __future__ import annotations

import torch

from .components.norms import RMSNorm


OPTIONS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
# Set by ``loading.from_hf_model(copy_weights=False)``: the storages of the HF model's parameters, which this
# model's parameters then are (a frozenset of data pointers, so that the model still pickles and deep-copies).
HF_STORAGES_ATTR = "_hf_parameter_storages"


def check_options(**options) -> None:
    """Refuse a processing option that is not a bool (``fold_ln="False"`` would fold) or that cannot be exact."""
    for name, value in options.items():
        if name not in OPTIONS:
            raise TypeError(f"unknown weight processing option {name!r}; the options are {', '.join(OPTIONS)}")
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    if options.get("center_writing_weights"):
        raise ValueError(
            "center_writing_weights assumes LayerNorm before every read of the residual stream; these decoders use "
            "RMSNorm, which does not remove the mean, so centering the writing weights would change the model. "
            "Leave center_writing_weights=False (fold_ln, fold_value_biases and center_unembed keep the model exact)"
        )


def _storages(module: torch.nn.Module) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in module.parameters()} - {0}  # 0: meta tensors


def mark_shared_with_hf(model, hf_model: torch.nn.Module) -> None:
    """Record that ``model``'s weights are ``hf_model``'s (``copy_weights=False``), so that processing is refused."""
    setattr(model, HF_STORAGES_ATTR, frozenset(_storages(hf_model)))


def check_not_shared_with_hf(model) -> None:
    shared = getattr(model, HF_STORAGES_ATTR, frozenset()) & _storages(model)
    if shared:
        raise ValueError(
            "this model shares its weights with the HF model it was built from (from_hf_model(copy_weights=False)), "
            "so weight processing would rewrite that HF model and change its outputs; build it with "
            "copy_weights=True (the default) or process a copy (copy.deepcopy(model))"
        )


def _untie_unembedding(model) -> None:
    """Give the unembedding its own copy of a tied embedding matrix before changing it (the embedding stays)."""
    if model.unembed.weight is model.embed.weight:
        model.unembed.weight = torch.nn.Parameter(model.embed.weight.detach().clone())
    model.cfg.tie_word_embeddings = False  # true of the weights now: a model rebuilt from cfg must not re-tie them


@torch.no_grad()
def fold_decoder_norms(model) -> None:
    """Fold ``ln1`` into q/k/v, ``ln2`` into the MLP input maps and ``ln_final`` into the unembedding."""
    norms = [m for b in model.blocks for m in (b.ln1, b.ln2)] + [model.ln_final]
    if not all(isinstance(m, RMSNorm) for m in norms):
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
        _untie_unembedding(model)
    _fold(model.ln_final, [model.unembed])
    model.cfg.fold_ln = True


def _fold(norm: RMSNorm, linears: list[torch.nn.Linear]) -> None:
    for linear in linears:
        linear.weight.mul_(norm.w.to(linear.weight.dtype)[None, :])
    norm.w.fill_(1.0)


@torch.no_grad()
def fold_value_biases_into_output(model) -> None:
    """``b_O += sum_h b_V[h] @ W_O[h]`` and ``b_V = 0`` in every decoder layer."""
    for block in model.blocks:
        attn = block.attn
        if attn.v.bias is None:
            continue
        per_head = attn.v.bias.view(attn.n_key_value_heads, attn.d_head)
        per_head = per_head.repeat_interleave(attn.n_heads // attn.n_key_value_heads, dim=0)
        folded = torch.einsum("hd,hdm->m", per_head, attn.W_O)
        if attn.o.bias is None:
            attn.o.bias = torch.nn.Parameter(torch.zeros_like(folded))
        attn.o.bias.add_(folded)
        attn.v.bias.zero_()
    if all(block.attn.o.bias is not None for block in model.blocks):
        model.cfg.o_bias = True  # true of the weights now: a model rebuilt from cfg has the folded output biases


@torch.no_grad()
def center_unembedding(model) -> None:
    """Subtract each unembedding direction's mean over the vocabulary (logits shift by a per-position constant)."""
    if model.unembed.weight is model.embed.weight:
        _untie_unembedding(model)
    model.unembed.weight.sub_(model.unembed.weight.mean(dim=0, keepdim=True))


def process_weights(model, fold_ln: bool = True, center_writing_weights: bool = False, center_unembed: bool = False,
                    fold_value_biases: bool = False) -> None:
    """TransformerLens's ``process_weights_`` with this library's defaults (fold only what keeps the logits).
    Everything is checked before any weight changes; running it again changes nothing."""
    check_options(fold_ln=fold_ln, center_writing_weights=center_writing_weights, center_unembed=center_unembed,
                  fold_value_biases=fold_value_biases)
    if fold_ln or center_unembed or fold_value_biases:
        check_not_shared_with_hf(model)
    if fold_ln:  # idempotent (the norm weights are 1 once folded), so cfg.fold_ln needs no trust
        fold_decoder_norms(model)
    if fold_value_biases:
        fold_value_biases_into_output(model)
    if center_unembed:
        center_unembedding(model)
