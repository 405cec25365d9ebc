"""Additive attention masks, built in one place.

Every mask in the library is a boolean "may attend" tensor turned into 0 / the dtype's minimum by
``additive_mask``; the builders below say only which keys each query may see.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int


def additive_mask(allowed: Bool[torch.Tensor, "..."], dtype: torch.dtype) -> Float[torch.Tensor, "..."]:
    """0 where attention is allowed, ``finfo(dtype).min`` where it is not (as HF's eager attention)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def causal_mask(n_pos: int, dtype: torch.dtype, device: torch.device) -> Float[torch.Tensor, "1 1 pos pos"]:
    """Each position sees itself and the positions before it."""
    return additive_mask(torch.ones(n_pos, n_pos, dtype=torch.bool, device=device).tril(), dtype)[None, None]


def causal_padding_mask(
    attention_mask: Int[torch.Tensor, "batch pos"] | None, dtype: torch.dtype
) -> Float[torch.Tensor, "batch 1 pos pos"] | None:
    """Causal and padding together, or None when nothing is padded (attention is then plain causal)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    n_pos = attention_mask.shape[1]
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=attention_mask.device).tril()
    return additive_mask(causal[None] & attention_mask.bool()[:, None, :], dtype)[:, None]


def key_padding_mask(
    lengths: Int[torch.Tensor, "row"], n_keys: int, dtype: torch.dtype
) -> Float[torch.Tensor, "row 1 1 key"] | None:
    """Keys at or past each row's length are hidden from every query; None when no row is padded."""
    real = torch.arange(n_keys, device=lengths.device)[None, :] < lengths[:, None]
    if bool(real.all()):
        return None
    return additive_mask(real, dtype)[:, None, None, :]


def window_padding_mask(
    frame_lengths: Int[torch.Tensor, "clip"], n_windows: int, window: int, dtype: torch.dtype
) -> Float[torch.Tensor, "clip_window 1 frame frame"] | None:
    """Windows of ``window`` frames laid out as batch rows (a clip's windows consecutive): keys past the
    clip's end are hidden, and a padded frame still sees itself so that no row is fully masked."""
    frames = torch.arange(n_windows * window, device=frame_lengths.device)
    real = (frames[None, :] < frame_lengths[:, None]).reshape(-1, window)
    if bool(real.all()):
        return None
    allowed = real[:, None, :] | torch.eye(window, dtype=torch.bool, device=real.device)[None]
    return additive_mask(allowed, dtype)[:, None]
