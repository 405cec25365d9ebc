"""Attribution patching (Nanda 2023; Syed et al. 2023): the first-order estimate of activation patching,
``d(metric)/d(a) at the corrupted run x (a_clean - a_corrupt)``, for every cell of every hooked activation in
one clean forward plus one corrupted forward and backward.

- ``attribution_patching``: the estimate per hook point, per row, position and head.
- ``attribution_vs_activation_patching``: the estimate next to real activation patching (TransformerLens's
  ``patching`` sweeps) on the same cells, with their Spearman rank correlation.
"""

from __future__ import annotations

from typing import Callable

import torch
from scipy.stats import spearmanr
from transformer_lens import patching

from ..cache import check_same_audio_positions
from ..model import _named_points, _names_filter_fn, model_lock, refuse_inference_mode
from .metric_value import metric_value

# Activations whose every entry is a cell (no feature axis to sum over).
_ELEMENTWISE = ("hook_pattern", "hook_attn_scores")


def _default_names(name: str) -> bool:
    return name.endswith(("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "attn.hook_z"))


def attribution_patching(
    model, clean, corrupted, metric: Callable[[torch.Tensor], torch.Tensor], names_filter=None,
) -> dict[str, torch.Tensor]:
    """``{name: grad x (clean - corrupted)}`` summed over the feature axis (``d_model``, ``d_head``, ``d_mlp``),
    so a residual gives ``[batch, pos]``, ``attn.hook_z`` ``[batch, pos, head]``, patterns every entry;
    encoder activations keep their window layout. ``metric(logits)`` must be a scalar (the gradient is taken on
    the corrupted run). ``names_filter`` as in ``run_with_cache`` (default: decoder and encoder
    ``hook_resid_pre``, ``hook_attn_out``, ``hook_mlp_out`` and ``attn.hook_z``). A positive value: moving that
    cell from corrupted toward clean raises the metric, to first order."""
    clean, corrupted = model.to_inputs(clean), model.to_inputs(corrupted)
    check_same_audio_positions(clean, corrupted)
    requested = _named_points(names_filter)
    if requested is not None:
        unknown = sorted(set(requested) - set(model.hook_dict))
        if unknown:
            raise ValueError(f"names_filter names hook points the model lacks: {unknown} (see model.hook_dict)")
    wanted = _default_names if names_filter is None else _names_filter_fn(names_filter if requested is None else requested)
    names = [name for name in model.hook_dict if wanted(name)]
    if not names:
        raise ValueError("names_filter selects no hook point")
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=names)
    acts, grads = {}, {}

    def save(x, hook):
        acts[hook.name] = x.detach()

    def save_grad(grad, hook):
        grads[hook.name] = grad.detach()

    refuse_inference_mode("attribution_patching")
    earlier_grads = {p: None if p.grad is None else p.grad.clone() for p in model.parameters()}  # the caller's
    with model_lock(model), torch.enable_grad():
        with model.hooks(fwd_hooks=[(n, save) for n in names], bwd_hooks=[(n, save_grad) for n in names]):
            value = metric(model(corrupted))
            value = torch.as_tensor(value)
            if value.numel() != 1:
                raise ValueError(f"metric must return a scalar (got {value.numel()} values): e.g. sum or mean over rows")
            if not value.requires_grad:
                raise ValueError("the metric has no gradient: the model's parameters or the metric are detached "
                                 "(call model.requires_grad_(True), and compute the metric from the logits)")
            value.backward()
        for param, grad in earlier_grads.items():
            param.grad = grad
    out = {}
    for name in names:
        if name not in acts:
            continue  # not reached by this input (e.g. an encoder hook on a text-only run)
        if clean_cache[name].shape != acts[name].shape:
            raise ValueError(f"{name} is {tuple(clean_cache[name].shape)} on the clean run but "
                             f"{tuple(acts[name].shape)} on the corrupted one: use inputs with the same layout")
        product = grads.get(name, torch.zeros_like(acts[name])) * (clean_cache[name].to(acts[name].device) - acts[name])
        out[name] = product if name.endswith(_ELEMENTWISE) else product.sum(-1)
    if not out:  # e.g. only encoder names on a text-only run: an empty result would read as "no attribution"
        raise ValueError(f"none of the {len(names)} selected hook points ran on these inputs"
                         f"{'' if corrupted.has_audio else ' (they hold no audio, so the audio encoder does not run)'}")
    return out


_SWEEPS = {
    "resid_pre": (patching.get_act_patch_resid_pre, "hook_resid_pre"),
    "head": (patching.get_act_patch_attn_head_out_all_pos, "attn.hook_z"),
}


def attribution_vs_activation_patching(
    model, clean, corrupted, metric: Callable[[torch.Tensor], torch.Tensor], cells: str = "head",
) -> dict:
    """Attribution patching next to activation patching on the same cells: ``cells="head"`` (each decoder
    head's output at every position, ``[layer, head]``) or ``"resid_pre"`` (each layer's residual at each
    position, ``[layer, pos]``). Activation patching uses TransformerLens's ``patching`` sweep (clean into
    corrupted); its ``effect`` is the patched metric minus the corrupted one, the quantity attribution
    patching estimates. Returns ``attribution``, ``effect`` and their Spearman ``rank_correlation``."""
    if cells not in _SWEEPS:
        raise ValueError(f"cells must be one of {sorted(_SWEEPS)}, got {cells!r}")
    sweep, suffix = _SWEEPS[cells]
    clean, corrupted = model.to_inputs(clean), model.to_inputs(corrupted)
    names = [f"blocks.{l}.{suffix}" for l in range(model.cfg.n_layers)]
    scores = attribution_patching(model, clean, corrupted, metric, names_filter=names)
    if cells == "head":
        attribution = torch.stack([scores[n].sum((0, 1)) for n in names])  # [layer, head]
    else:
        attribution = torch.stack([scores[n].sum(0) for n in names])  # [layer, pos]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith(suffix))
        corrupted_value = metric_value(metric(model(corrupted)))
        effect = sweep(model, corrupted, clean_cache, metric).cpu() - corrupted_value
    attribution = attribution.cpu().to(effect.dtype)
    rho = spearmanr(attribution.flatten().numpy(), effect.flatten().numpy()).statistic
    return {"attribution": attribution, "effect": effect, "rank_correlation": float(rho)}
