"""Logit lens: decode every layer's residual stream through the final norm and the unembedding.

The last layer's lens equals the model's logits, so the curve ends where the model does. Positions
may be audio tokens too: the lens then reads what the decoder "hears" at a moment of the clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from ..cache import AudioActivationCache, check_cache_model
from ..indices import index_tensor, rows_padded_at


@dataclass
class LogitLens:
    labels: list[str]  # "0_pre", "1_pre", ..., "final_post"
    log_probs: Float[torch.Tensor, "layer batch pos vocab"]
    positions: Int[torch.Tensor, "pos"] | None = None  # the cache positions on the pos axis; None: all

    def _targets(self, targets) -> Int[torch.Tensor, "batch"]:
        n_rows, vocab = self.log_probs.shape[1], self.log_probs.shape[-1]
        if isinstance(targets, str) or (isinstance(targets, (list, tuple)) and any(isinstance(t, str) for t in targets)):
            raise TypeError(f"targets are token ids, got {targets!r}: convert words with model.to_single_token(word)")
        targets = torch.as_tensor(targets)
        if targets.is_floating_point() or targets.dtype == torch.bool:
            raise TypeError(f"targets must be token ids (integers), got {targets.dtype}")
        if targets.ndim == 0:
            targets = targets.expand(n_rows)  # one token for every row
        if targets.shape != (n_rows,):
            raise ValueError(f"targets must be one token id per row ({n_rows} rows) or a single id, got shape {tuple(targets.shape)}")
        bad = targets[(targets < 0) | (targets >= vocab)]
        if len(bad):
            raise ValueError(f"target id {int(bad[0])} is outside the vocabulary (0..{vocab - 1})")
        return targets.to(self.log_probs.device).long()

    def target_prob(self, targets: Int[torch.Tensor, "batch"] | int) -> Float[torch.Tensor, "layer batch pos"]:
        """Probability of each row's target token (or one token id for all rows), at every layer and position."""
        index = self._targets(targets)[None, :, None, None].expand(*self.log_probs.shape[:3], 1)
        return self.log_probs.gather(-1, index).squeeze(-1).exp()

    def target_rank(self, targets: Int[torch.Tensor, "batch"] | int) -> Int[torch.Tensor, "layer batch pos"]:
        """0 when the target is the top prediction."""
        index = self._targets(targets)[None, :, None, None].expand(*self.log_probs.shape[:3], 1)
        return (self.log_probs > self.log_probs.gather(-1, index)).sum(-1)


@torch.no_grad()
def logit_lens(model, cache: AudioActivationCache, positions: slice | list[int] | None = None) -> LogitLens:
    """Lens at ``positions`` (all by default; a slice or a list of indices into the cache's positions,
    negative ones counting from the end) of every row; the final norm is recomputed per layer. A cache stored in
    a lower precision (``run_with_cache(cache_dtype=torch.bfloat16)``) limits the lens to that precision."""
    check_cache_model(cache, model, "logit_lens")
    stack, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
    if not getattr(cache, "has_batch_dim", True):
        stack = stack[:, None]  # [layer, 1, pos, d_model]: one row
    kept = None
    if positions is not None:
        n_pos = stack.shape[2]
        if isinstance(positions, slice):
            kept = torch.arange(n_pos)[positions]
        else:
            kept = index_tensor(positions, "positions (a slice or a list of position indices)")
            if kept.ndim != 1:
                raise ValueError(f"positions must be a slice or a list of position indices, got {positions!r}")
            out_of_range = kept[(kept < -n_pos) | (kept >= n_pos)]
            if len(out_of_range):
                raise ValueError(
                    f"position {int(out_of_range[0])} is out of range: the cache has {n_pos} positions (0..{n_pos - 1})"
                )
            kept = kept % n_pos
        if len(kept) == 0:
            raise ValueError(f"positions={positions!r} selects no position")
        _refuse_padding(cache, kept, positions)
        stack = stack[:, :, kept]
    logits = model.unembed(stack.to(model.device, model.W_U.dtype)).float()  # a cache may be stored in another dtype
    return LogitLens(labels=labels, log_probs=logits.log_softmax(-1).cpu(), positions=kept)


def _refuse_padding(cache: AudioActivationCache, kept: Int[torch.Tensor, "n"], positions) -> None:
    """Chosen columns are the same for every row: where one is padding in some row (a negative index on right
    padding, a low one on left padding), that row's lens would be read off padding."""
    inputs = getattr(cache, "inputs", None)
    if inputs is None or inputs.attention_mask is None:
        return
    mask = inputs.attention_mask.cpu()
    if getattr(cache, "positions", None) is not None and len(cache.positions) != mask.shape[1]:
        mask = mask[:, cache.positions.cpu()]  # a cache of some positions: its columns
    padded = rows_padded_at(kept, mask[None] if mask.ndim == 1 else mask)
    if padded:
        raise ValueError(f"positions={positions!r} are padding in rows {padded}: the lens there would be read off "
                         "padding. Lens every position (positions=None) and take each row's own, e.g. "
                         "hooked_audio.analysis.at_last_positions(lens, inputs.last_positions), or run those rows alone")


def at_last_positions(lens: LogitLens, last_positions: Int[torch.Tensor, "batch"]) -> Float[torch.Tensor, "layer batch vocab"]:
    """The lens's log-probs at each row's own last real position (works with left or right padding).

    ``last_positions`` are cache positions (``cache.last_positions``); a lens restricted to some positions
    must include each row's."""
    last = torch.as_tensor(last_positions).cpu().long()
    n_rows = lens.log_probs.shape[1]
    if last.shape != (n_rows,):
        raise ValueError(f"last_positions must have one entry per row ({n_rows}), got shape {tuple(last.shape)}")
    if lens.positions is not None:
        where = (lens.positions[None, :] == last[:, None]).long()
        missing = [int(p) for p, hit in zip(last, where.any(1)) if not hit]
        if missing:
            raise ValueError(
                f"the lens was computed at positions {lens.positions.tolist()}, which do not include the last "
                f"position(s) {missing}; compute it with positions=None or including them"
            )
        last = where.argmax(1)
    elif int(last.max()) >= lens.log_probs.shape[2] or int(last.min()) < 0:
        raise ValueError(f"last_positions {last.tolist()} are outside the lens's {lens.log_probs.shape[2]} positions")
    rows = torch.arange(n_rows)
    return lens.log_probs[:, rows, last]
