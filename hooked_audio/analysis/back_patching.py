"""Back-patching ("Who wins the conflict?", Cho et al. 2026): a late layer's residual stream over the audio
span, cached from one run, written into an earlier layer of a second pass of the same input, to test whether
audio evidence that is present late but ignored can win once it is available earlier.

- ``back_patching_hooks``: ``fwd_hooks`` for one (source, destination) pair; replace or add, a time window,
  and the equal-norm random-vector control.
- ``back_patching_sweep``: a metric for every (source, destination) pair.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from jaxtyping import Bool, Float

from ..cache import AudioActivationCache, warn_if_patching_rounds
from ..kv_cache import generated_from, position_offset
from ..indices import as_bool_mask, checked_layers, position_indices
from .metric_value import metric_value


def patch_positions(cache: AudioActivationCache, positions="audio", seconds: tuple[float, float] | None = None
                    ) -> Bool[torch.Tensor, "batch pos"]:
    """The positions to patch: "audio", "text" (real text tokens), a bool mask [batch, pos] (a tensor, array
    or nested list of bools), or integer position indices for every row; ``seconds=(start, end)`` keeps only audio tokens whose centre lies in that window,
    in every clip of a row (each clip's times start at 0 s; restrict ``positions`` to one clip's span,
    ``inputs.audio_spans``, to window one clip only)."""
    inputs = cache.inputs
    if isinstance(positions, str):
        if positions not in ("audio", "text"):
            raise ValueError(f"positions must be 'audio', 'text', a bool mask or indices, got {positions!r}")
        mask = (inputs.audio_mask if positions == "audio" else inputs.text_mask).cpu()
    elif (mask := as_bool_mask(positions)) is not None:
        mask = mask.cpu()
        if mask.shape != inputs.shape:
            raise ValueError(f"a positions mask must be {tuple(inputs.shape)} (batch, pos), got {tuple(mask.shape)}")
    else:
        index = position_indices(positions)
        n_pos = inputs.shape[1]
        if bool(((index < -n_pos) | (index >= n_pos)).any()):
            raise ValueError(f"positions {index.tolist()} must be non-empty indices in -{n_pos}..{n_pos - 1}")
        mask = torch.zeros(inputs.shape, dtype=torch.bool)
        mask[:, index % n_pos] = True
    if inputs.attention_mask is not None:
        padded = mask & ~inputs.attention_mask.cpu().bool()
        if bool(padded.any()):
            rows = padded.any(-1).nonzero().flatten().tolist()
            raise ValueError(f"positions={positions!r} select padding in rows {rows[:8]} (e.g. row {rows[0]}, positions "
                             f"{padded[rows[0]].nonzero().flatten().tolist()[:8]}): patching there changes nothing. "
                             "Select real tokens (a bool mask per row, or indices every row holds)")
    if seconds is not None:
        start, end = seconds
        centres = inputs.token_times().mean(-1)
        mask = mask & inputs.audio_mask.cpu() & (centres >= start) & (centres < end)
    if not bool(mask.any()):
        raise ValueError(f"positions={positions!r} with seconds={seconds} select no position to patch")
    return mask


def _patch(resid: torch.Tensor, hook, *, source: torch.Tensor, mask: torch.Tensor, mode: str, scale: float,
           control: str | None, seed: int, built_for=None) -> torch.Tensor:
    offset, n_new = position_offset(), resid.shape[1]
    if resid.shape[0] != source.shape[0] or resid.shape[-1] != source.shape[-1]:
        raise ValueError(
            f"the cached source is {tuple(source.shape)} but {hook.name} is {tuple(resid.shape)}: back-patch the "
            "same inputs (batch and width) that were cached"
        )
    columns = torch.arange(offset, offset + n_new)
    inside = columns < source.shape[1]
    if not bool(inside.any()):  # generated tokens after the prompt: nothing cached there
        return resid
    rerun_with_generated = generated_from() == source.shape[1] and n_new > source.shape[1]  # generate, no KV cache
    if offset == 0 and n_new != source.shape[1] and not rerun_with_generated:
        raise ValueError(f"the cached source has {source.shape[1]} positions but {hook.name} has {n_new}: back-patch "
                         "the inputs that were cached")
    cols = columns[inside]
    old = resid[:, inside]
    new_source = source[:, cols].to(resid.device, resid.dtype)
    delta = scale * (new_source - old) if mode == "replace" else scale * new_source
    if control == "random":
        noise = torch.randn(delta.shape, generator=torch.Generator().manual_seed(seed)).to(resid.device, resid.dtype)
        delta = noise / noise.norm(dim=-1, keepdim=True).clamp(min=1e-12) * delta.norm(dim=-1, keepdim=True)
    where = mask[:, cols].to(resid.device)[..., None]
    resid = resid.clone()
    if mode == "replace" and scale == 1.0 and control is None:  # the cached value itself, bit for bit
        resid[:, inside] = torch.where(where, new_source, old)
    else:
        resid[:, inside] = old + where * delta
    return resid


def back_patching_hooks(
    cache: AudioActivationCache, source_layer: int, dest_layer: int, positions="audio", mode: str = "replace",
    scale: float = 1.0, seconds: tuple[float, float] | None = None, control: str | None = None, seed: int = 0,
) -> list[tuple]:
    """``fwd_hooks`` writing ``cache``'s ``blocks.{source_layer}.hook_resid_post`` at ``positions`` into
    ``blocks.{dest_layer}.hook_resid_post`` of a new run of the same inputs. A run of other inputs in the same
    layout (other words or audio at the same positions) is patched too: that is activation patching across
    inputs, as ``causal_tracing`` restores clean states into a corrupted run; another layout is refused.

    ``mode="replace"``: ``h <- h + scale * (h_src - h)`` (``scale=1``: the cached value itself; so source =
    destination reproduces the unpatched run exactly). ``mode="add"``: ``h <- h + scale * h_src``.
    ``positions``/``seconds``: see ``patch_positions`` (``"text"`` is the same patch off the audio, a control).
    ``control="random"``: add instead, at each patched position, a seeded random vector of the norm the
    patch's change would have had. Positions generated after the prompt are left alone.

    Cache the source with ``names_filter`` (e.g. ``lambda n: n.endswith("hook_resid_post")``): caching
    ``hook_pattern``/``hook_attn_scores`` switches attention to the explicit path, whose values equal the fused
    path's only to float rounding, so source = destination would then differ from the unpatched run by ~1e-7."""
    if mode not in ("replace", "add"):
        raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
    if control not in (None, "random"):
        raise ValueError(f"control must be None or 'random', got {control!r}")
    n_layers = cache.model.cfg.n_layers
    (source_layer,) = checked_layers([source_layer], n_layers, "source_layer")
    (dest_layer,) = checked_layers([dest_layer], n_layers, "dest_layer")
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale must be a finite number, got {scale}")
    name = f"blocks.{source_layer}.hook_resid_post"
    cache.require("back-patching", [name])
    warn_if_patching_rounds(cache[name], cache.model, "back_patching_hooks")
    hook = functools.partial(
        _patch, source=cache[name], mask=patch_positions(cache, positions, seconds), mode=mode,
        scale=float(scale), control=control, seed=seed, built_for=cache.inputs,
    )
    return [(f"blocks.{dest_layer}.hook_resid_post", hook)]


@torch.no_grad()
def back_patching_sweep(
    model, inputs, metric: Callable[[torch.Tensor], float], pairs: list[tuple[int, int]] | None = None, **kwargs,
) -> Float[torch.Tensor, "source dest"]:
    """``metric(logits)`` of the back-patched run for each (source, destination) pair (default: every pair
    with destination below source), NaN elsewhere; ``kwargs`` go to ``back_patching_hooks``."""
    inputs = model.to_inputs(inputs)
    n_layers = model.cfg.n_layers
    pairs = [(s, d) for s in range(n_layers) for d in range(s)] if pairs is None else pairs
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_resid_post"))
    out = torch.full((n_layers, n_layers), float("nan"))
    for source, dest in pairs:
        logits = model.run_with_hooks(inputs, fwd_hooks=back_patching_hooks(cache, source, dest, **kwargs))
        out[source, dest] = metric_value(metric(logits))
    return out
