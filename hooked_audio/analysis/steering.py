"""Activation steering: add a direction to the residual stream at chosen positions.

Typical use: the difference of mean residuals between two conditions (e.g. clips of a male vs a female
speaker) added at the audio positions of layer ``l`` to push the model's reading of the audio.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float


def steering_hook(
    direction: Float[torch.Tensor, "d_model"],
    scale: float = 1.0,
    positions: Bool[torch.Tensor, "batch pos"] | None = None,
):
    """A hook adding ``scale * direction`` at ``positions`` (every position when None).

    Position masks are matched to the current sequence length, so the hook also works during
    ``generate`` (new positions are left alone unless ``positions`` is None)."""

    def add(resid: torch.Tensor, hook) -> torch.Tensor:
        delta = scale * direction.to(resid.device, resid.dtype)
        if positions is None:
            return resid + delta
        mask = torch.zeros(resid.shape[:2], dtype=torch.bool, device=resid.device)
        n = min(positions.shape[1], resid.shape[1])
        mask[:, :n] = positions[:, :n].to(resid.device)
        return resid + mask[..., None] * delta

    return add
