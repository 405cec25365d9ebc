"""Logit lens: decode every layer's residual stream through the final norm and the unembedding.

The last layer's lens equals the model's logits, so the curve ends where the model does. Positions
may be audio tokens too: the lens then reads what the decoder "hears" at a moment of the clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from ..cache import AudioActivationCache


@dataclass
class LogitLens:
    labels: list[str]  # "0_pre", "1_pre", ..., "final_post"
    log_probs: Float[torch.Tensor, "layer batch pos vocab"]

    def target_prob(self, targets: Int[torch.Tensor, "batch"]) -> Float[torch.Tensor, "layer batch pos"]:
        """Probability of each row's target token, at every layer and position."""
        index = targets.to(self.log_probs.device)[None, :, None, None].expand(*self.log_probs.shape[:3], 1)
        return self.log_probs.gather(-1, index).squeeze(-1).exp()

    def target_rank(self, targets: Int[torch.Tensor, "batch"]) -> Int[torch.Tensor, "layer batch pos"]:
        """0 when the target is the top prediction."""
        target_lp = self.log_probs.gather(
            -1, targets.to(self.log_probs.device)[None, :, None, None].expand(*self.log_probs.shape[:3], 1)
        )
        return (self.log_probs > target_lp).sum(-1)


@torch.no_grad()
def logit_lens(model, cache: AudioActivationCache, positions: slice | list[int] | None = None) -> LogitLens:
    """Lens at ``positions`` (all by default) of every row; the final norm is recomputed per layer."""
    stack, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
    if positions is not None:
        stack = stack[:, :, positions]
    logits = model.unembed(stack.to(model.device)).float()
    return LogitLens(labels=labels, log_probs=logits.log_softmax(-1).cpu())


def at_last_positions(lens: LogitLens, last_positions: Int[torch.Tensor, "batch"]) -> Float[torch.Tensor, "layer batch vocab"]:
    """The lens's log-probs at each row's own last real position (works with left or right padding)."""
    rows = torch.arange(lens.log_probs.shape[1])
    return lens.log_probs[:, rows, last_positions.cpu()]
