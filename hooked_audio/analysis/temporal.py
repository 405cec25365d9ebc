"""Where in time the model listens ("Steering where to listen", Lin & Lee 2026).

- ``temporal_attention``: attention from a query position to each audio token, summed over chosen decoder
  layers and heads, with each token's time in its clip.
- ``localise``: the window of a given length where a profile (e.g. the steering-induced attention change)
  is largest.
- ``interval_overlap``: how a predicted window matches a ground-truth interval (``"hit"`` or ``"iou"``).
- ``random_window_baseline``: the same score for windows placed uniformly at random, the chance level.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Bool, Float

from ..cache import AudioActivationCache
from ..indices import checked_count, checked_heads, checked_layers
from .listening import _refuse_padding_queries


def _query_mask(cache: AudioActivationCache, query) -> Bool[torch.Tensor, "batch pos"]:
    batch, n_pos = cache.inputs.shape
    if isinstance(query, str):
        if query != "last":
            raise ValueError(f"query must be 'last' or a bool mask [batch, pos] of query positions, got {query!r}")
        mask = torch.zeros(batch, n_pos, dtype=torch.bool)
        mask[torch.arange(batch), cache.inputs.last_positions.cpu().long()] = True
        return mask
    mask = torch.as_tensor(query).cpu()
    if mask.dtype != torch.bool or mask.shape != (batch, n_pos):
        raise ValueError(f"query must be 'last' or a bool mask of shape {(batch, n_pos)}, got {mask.dtype} {tuple(mask.shape)}")
    if not bool(mask.any(-1).all()):
        raise ValueError("every row of the query mask needs at least one query position")
    if bool((mask & cache.inputs.audio_mask.cpu()).any()):
        raise ValueError("the query mask includes audio positions; queries are text positions (e.g. the answer tokens)")
    _refuse_padding_queries(mask, cache.inputs)
    return mask


@torch.no_grad()
def temporal_attention(
    cache: AudioActivationCache, layers: list[int] | None = None, heads: list[int] | None = None, query="last",
) -> tuple[Float[torch.Tensor, "batch audio_tok"], Float[torch.Tensor, "batch audio_tok"]]:
    """``(profile, seconds)``: attention from the query (each row's last real position, or the mean over a bool
    mask of query positions such as the answer tokens) to each of the row's audio tokens, summed over
    ``layers`` and ``heads`` (all decoder layers / heads when None), and the centre of each token in its
    clip, in seconds. ``layers`` and ``heads`` are distinct indices. A row's audio tokens are in sequence order
    (several clips follow each other); rows with fewer audio tokens than the longest are NaN-padded in both tensors.
    A query mask may not include padding positions.

    Needs ``blocks.{l}.attn.hook_pattern`` for those layers in a full-position cache with its batch dim."""
    inputs = cache.inputs
    n_layers, n_heads = cache.model.cfg.n_layers, cache.model.cfg.n_heads
    layers, heads = checked_layers(layers, n_layers), checked_heads(heads, n_heads)
    audio = inputs.audio_mask.cpu()
    if not bool(audio.any(-1).all()):
        missing = [r for r in range(audio.shape[0]) if not audio[r].any()]
        raise ValueError(f"rows {missing} have no audio tokens; their temporal attention is undefined")
    cache.require("temporal_attention", [f"blocks.{l}.attn.hook_pattern" for l in layers])
    queries = _query_mask(cache, query).float()
    total = 0
    for layer in layers:
        pattern = cache["pattern", layer].float().cpu()[:, heads].sum(1)  # [batch, q, k]
        total = total + (queries[:, :, None] * pattern).sum(1) / queries.sum(1, keepdim=True)  # [batch, k]
    centres = inputs.token_times().mean(-1)  # [batch, pos], NaN at text
    n_max = int(audio.sum(-1).max())
    profile = torch.full((audio.shape[0], n_max), float("nan"))
    seconds = torch.full((audio.shape[0], n_max), float("nan"))
    for row in range(audio.shape[0]):
        where = torch.nonzero(audio[row]).flatten()
        profile[row, : len(where)] = total[row, where]
        seconds[row, : len(where)] = centres[row, where]
    return profile, seconds


def localise(
    profile_change: Float[torch.Tensor, " audio_tok"], seconds: Float[torch.Tensor, " audio_tok"], window_s: float,
) -> tuple[float, float]:
    """``(start_s, end_s)`` of the ``window_s``-long window whose tokens (by centre time) carry the largest sum
    of ``profile_change``; candidate windows start at every token's start and end inside the audio. NaN entries
    (padding) are ignored, inf ones refused. Ties go to the earliest window. ``window_s`` must exceed half the
    token spacing (each window then holds a token centre). One row at a time (``profile_change[row]``,
    ``seconds[row]``)."""
    change, times = torch.as_tensor(profile_change).double(), torch.as_tensor(seconds).double()
    if change.ndim != 1 or change.shape != times.shape:
        raise ValueError(f"need one row: profile_change and seconds of equal 1-D shape, got {tuple(change.shape)} and {tuple(times.shape)}")
    if not window_s > 0:
        raise ValueError(f"window_s must be positive, got {window_s}")
    keep = ~(torch.isnan(change) | torch.isnan(times))
    change, times = change[keep], times[keep]
    if len(times) == 0:
        raise ValueError("the profile has no audio tokens (all NaN)")
    if not bool(torch.isfinite(change).all()):
        raise ValueError("profile_change has inf entries: every window holding one would tie or win regardless of the rest")
    if len(times) > 1 and bool((times[1:] < times[:-1]).any()):
        raise ValueError("seconds must increase along the row (one clip at a time: pass that clip's tokens)")
    half = float(times[1] - times[0]) / 2 if len(times) > 1 else 0.0
    if window_s <= half:
        raise ValueError(f"window_s={window_s} holds no token centre: the tokens are {2 * half:.4g} s apart and a window "
                         f"starts at a token's start, so it must be longer than {half:.4g} s (half the spacing)")
    starts, end = times - half, float(times[-1]) + half
    slack = 1e-5  # seconds: float32 time axes are off by ~1e-7 s; tokens are tens of ms apart
    if window_s > end - float(starts[0]) + slack:
        raise ValueError(f"window_s={window_s} is longer than the audio ({float(starts[0]):.3f}-{end:.3f} s)")
    starts = starts[starts + window_s <= end + slack]  # windows that end inside the audio
    sums = torch.stack([change[(times >= s) & (times < s + window_s)].sum() for s in starts])
    best = float(starts[int(torch.argmax(sums))])
    return best, best + float(window_s)


def interval_overlap(predicted: tuple[float, float], truth: tuple[float, float], kind: str = "hit") -> float:
    """``"hit"``: 1.0 when the predicted window overlaps the ground-truth interval at all (an interval of zero
    length: when the other contains it), else 0.0 (averaged over items, the share of events found); ``"iou"``:
    intersection over union of the two intervals. Intervals are finite ``(start, end)`` pairs with start <= end."""
    (a, b), (c, d) = _interval(predicted, "predicted"), _interval(truth, "truth")
    intersection = max(0.0, min(b, d) - max(a, c))
    if kind == "hit":  # an instant (start == end) is hit by a window that contains it
        return float(intersection > 0 or ((a == b or c == d) and max(a, c) <= min(b, d)))
    if kind == "iou":
        union = max(b, d) - min(a, c)
        return intersection / union if union > 0 else 0.0
    raise ValueError(f"kind must be 'hit' or 'iou', got {kind!r}")


def _interval(interval, name: str) -> tuple[float, float]:
    try:
        start, end = (float(t) for t in interval)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (start_s, end_s) pair of numbers, got {interval!r}") from None
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError(f"{name} must be a finite (start, end) interval with start <= end, got {interval!r}")
    return start, end


def random_window_baseline(
    duration_s: float, window_s: float, truth: tuple[float, float], kind: str = "hit", n: int = 2000, seed: int = 0,
) -> float:
    """Mean ``interval_overlap`` of ``n`` windows of ``window_s`` placed uniformly in ``[0, duration_s]``."""
    if not 0 < window_s <= duration_s < float("inf"):
        raise ValueError(f"need 0 < window_s <= duration_s, both finite, got {window_s} and {duration_s}")
    n = checked_count(n, "n (the number of random windows)")
    start, end = _interval(truth, "truth")
    if start < 0 or end > duration_s:
        raise ValueError(f"truth {truth!r} lies outside the clip [0, {duration_s}] s: no window placed in the clip "
                         "could find it; give the interval in the clip's seconds")
    starts = np.random.default_rng(seed).uniform(0, duration_s - window_s, n)
    return float(np.mean([interval_overlap((s, s + window_s), truth, kind) for s in starts]))
