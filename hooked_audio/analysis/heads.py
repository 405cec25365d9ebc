"""Audio-attending heads: the attention each decoder head pays from a query position to the audio.

A head's score is the attention mass (summed over the audio span's keys) from each row's last real
position, averaged over the batch. High-scoring heads are the candidates for moving audio
information into the answer position; ablating them should hurt audio questions (see ``ablation``).
"""

from __future__ import annotations

import numbers

import torch
from jaxtyping import Float

from ..cache import AudioActivationCache


def audio_attention_by_head(cache: AudioActivationCache, n_layers: int) -> Float[torch.Tensor, "layer head"]:
    """Mean attention mass from the last position to audio tokens, per decoder layer and head.

    Needs ``blocks.{l}.attn.hook_pattern`` for layers ``0..n_layers-1`` in a cache with its batch
    dimension (e.g. ``names_filter=lambda n: n.endswith("hook_pattern")``), and audio in every row.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral) or n_layers < 1:
        raise ValueError(f"n_layers must be a whole number >= 1, got {n_layers!r}")
    if not getattr(cache, "has_batch_dim", True):
        raise ValueError("audio_attention_by_head needs a cache with its batch dimension (not remove_batch_dim=True)")
    missing = [l for l in range(n_layers) if f"blocks.{l}.attn.hook_pattern" not in cache.cache_dict]
    if missing:
        raise ValueError(
            f"the cache has no blocks.{{l}}.attn.hook_pattern for layers {missing}; run run_with_cache with "
            "names_filter=lambda n: n.endswith('hook_pattern') (and n_layers at most the model's layers)"
        )
    audio = cache.inputs.audio_mask.to(cache["pattern", 0].device)  # [batch, pos]
    no_audio = [row for row in range(audio.shape[0]) if not audio[row].any()]
    if no_audio:
        raise ValueError(f"rows {no_audio} have no audio tokens, so their attention to the audio is undefined; pass inputs with audio in every row")
    last = cache.inputs.last_positions.to(audio.device)
    rows = torch.arange(audio.shape[0], device=audio.device)
    scores = []
    for layer in range(n_layers):
        pattern = cache["pattern", layer]  # [batch, head, q, k]
        if pattern.shape[0] != audio.shape[0] or pattern.shape[-2:] != (audio.shape[1], audio.shape[1]):
            raise ValueError(
                f"blocks.{layer}.attn.hook_pattern is {tuple(pattern.shape)} but the inputs are {tuple(audio.shape)} "
                "[batch, pos]; use a cache of the whole run (not sliced by batch or position)"
            )
        from_last = pattern[rows, :, last]  # [batch, head, k]
        scores.append((from_last * audio[:, None, :]).sum(-1).mean(0))
    return torch.stack(scores).float().cpu()


def top_heads(scores: Float[torch.Tensor, "layer head"], k: int) -> list[tuple[int, int]]:
    """The ``k`` (layer, head) pairs with the highest scores, best first; ``-inf`` marks a head never to pick."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be [layer, head], got shape {tuple(scores.shape)}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= scores.numel():
        raise ValueError(
            f"k must be a whole number from 0 to {scores.numel()} ({scores.shape[0]} layers x {scores.shape[1]} heads), got {k!r}"
        )
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; a ranking of them would be arbitrary")
    flat = scores.flatten().topk(k).indices
    if torch.isneginf(scores.flatten()[flat]).any():
        eligible = int((~torch.isneginf(scores)).sum())
        raise ValueError(f"only {eligible} heads have a score above -inf (excluded, e.g. by listening_head_scores' "
                         f"min_attention); asked for {k}")
    n_heads = scores.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in flat]
