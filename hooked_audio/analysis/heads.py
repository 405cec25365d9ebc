"""Audio-attending heads: the attention each decoder head pays from a query position to the audio.

A head's score is the attention mass (summed over the audio span's keys) from each row's last real
position, averaged over the batch. High-scoring heads are the candidates for moving audio
information into the answer position; ablating them should hurt audio questions (see ``ablation``).
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from ..cache import AudioActivationCache


def audio_attention_by_head(cache: AudioActivationCache, n_layers: int) -> Float[torch.Tensor, "layer head"]:
    """Mean attention mass from the last position to audio tokens, per decoder layer and head.

    Needs ``blocks.{l}.attn.hook_pattern`` in the cache (e.g. ``names_filter=lambda n: n.endswith("hook_pattern")``).
    """
    audio = cache.inputs.audio_mask.to(cache["pattern", 0].device)  # [batch, pos]
    last = cache.inputs.last_positions.to(audio.device)
    rows = torch.arange(audio.shape[0], device=audio.device)
    scores = []
    for layer in range(n_layers):
        pattern = cache["pattern", layer]  # [batch, head, q, k]
        from_last = pattern[rows, :, last]  # [batch, head, k]
        scores.append((from_last * audio[:, None, :]).sum(-1).mean(0))
    return torch.stack(scores).float().cpu()


def top_heads(scores: Float[torch.Tensor, "layer head"], k: int) -> list[tuple[int, int]]:
    """The ``k`` (layer, head) pairs with the highest scores, best first."""
    flat = scores.flatten().topk(k).indices
    n_heads = scores.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in flat]
