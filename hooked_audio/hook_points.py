"""A TransformerLens ``HookPoint`` that costs nothing when nobody is listening.

``nn.Module.__call__`` on an identity module costs a few microseconds; a Qwen2-Audio-7B forward passes
~2,000 hook points, so an unhooked model would pay that on every forward. ``HookPoint.__call__`` here
returns its input straight away when the point has no hooks, and is otherwise the ordinary TL module,
so every TransformerLens hook API (``add_hook``, ``run_with_hooks``, caching, patching) works unchanged.
"""

from __future__ import annotations

import difflib

import torch
from transformer_lens.hook_points import HookPoint as _TLHookPoint


class HookPoint(_TLHookPoint):
    """Identity point with a zero-cost fast path when no forward or backward hook is attached.

    ``cache_into`` is ``run_with_cache``'s direct route: the point stores its (final, post-hook) value in
    a dict without registering a module hook, which saves the hook machinery on every cached point.
    """

    cache_into: dict | None = None  # set per instance by run_with_cache, and always reset after it
    cache_device: torch.device | str | None = None
    cache_dtype: torch.dtype | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self._forward_hooks or self._backward_hooks:
            out = super().__call__(x)
            if isinstance(out, torch.Tensor) and isinstance(x, torch.Tensor) and (
                    out.shape != x.shape or out.dtype != x.dtype):
                # another shape would be broadcast (one row over a batch) or misread downstream; another dtype
                # fails later in a matmul that names neither the hook nor the cause
                raise ValueError(
                    f"a hook on {self.name} returned a tensor of shape {tuple(out.shape)} and dtype {out.dtype} for "
                    f"an activation of shape {tuple(x.shape)} and dtype {x.dtype}: return the activation's shape and "
                    "dtype (e.g. cast with .to(x.dtype), index rows instead of dropping them)")
            x = out
        if self.cache_into is not None:
            self.cache_into[self.name] = to_cache(x, self.cache_device, self.cache_dtype, self.name)
        return x

    @property
    def is_hooked(self) -> bool:
        """True when a hook or a cache reads or writes this point (components then compute what it shows)."""
        return bool(self._forward_hooks or self._backward_hooks or self.cache_into is not None)


def to_cache(x: torch.Tensor, device=None, dtype: torch.dtype | None = None, name: str = "") -> torch.Tensor:
    """``x`` detached, as a cache stores it: on ``device`` and, if floating, in ``dtype`` (None: as it is). A value
    that ``dtype`` cannot hold (float16 ends at 65504) is refused rather than stored as inf (attention scores are
    exempt: their masked entries are the dtype's minimum by design)."""
    x = x.detach()
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        out = x.to(device=device, dtype=dtype) if device else x.to(dtype)
        if (torch.finfo(dtype).max < torch.finfo(x.dtype).max and not name.endswith("hook_attn_scores")
                and not bool(torch.isfinite(out).all()) and bool(torch.isfinite(x).all())):
            raise ValueError(f"{name or 'an activation'} holds values up to {float(x.abs().max()):.3g}, which "
                             f"{dtype} cannot hold (it ends at {torch.finfo(dtype).max:g}): they would be stored as "
                             "inf. Store them as torch.bfloat16 (float32's range) or float32 instead")
        return out
    return x.to(device) if device else x


# TransformerLens's points that exist only while a switch is on (as there): the switch that makes each
SWITCHED_POINTS = {
    "hook_mlp_in": "set_use_hook_mlp_in(True)",
    "hook_q_input": "set_use_split_qkv_input(True)",
    "hook_k_input": "set_use_split_qkv_input(True)",
    "hook_v_input": "set_use_split_qkv_input(True)",
    "hook_attn_in": "set_use_attn_in(True)",
}


def unknown_hook_name_error(name: str, known: list[str]) -> KeyError:
    """A KeyError for a mistyped hook name that suggests the closest real ones, or names the switch that makes
    a TransformerLens point which exists only while it is on."""
    switch = SWITCHED_POINTS.get(name.rsplit(".", 1)[-1])
    if switch is not None and name.startswith(("blocks.", "audio_encoder.blocks.")):
        return KeyError(f"{name!r} exists only while its TransformerLens switch is on: call model.{switch} first "
                        "(as in TransformerLens)")
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return KeyError(
        f"Unknown hook name {name!r}.{hint} List them with `model.hook_dict.keys()` "
        f"({len(known)} hook points)."
    )


def hook_pairs(hooks, argument: str = "fwd_hooks") -> list[tuple]:
    """``hooks`` as a list of ``(name, hook)`` pairs (a generator is read once), or a clear error for the common
    mistakes: one bare pair (which would unpack into two wrong "pairs"), a dict, items that are not pairs."""
    if isinstance(hooks, tuple) and len(hooks) == 2 and callable(hooks[1]):
        raise TypeError(f"{argument} is a list of (name, hook) pairs: wrap one pair in a list, {argument}=[(name, hook)]")
    pairs = list(hooks)
    if not all(isinstance(h, (tuple, list)) and len(h) == 2 and callable(h[1]) for h in pairs):
        raise TypeError(f"{argument} must be a list of (name, hook) pairs, as for run_with_hooks, got {hooks!r}")
    return pairs
