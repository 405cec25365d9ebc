"""Head ablation as hook functions on ``blocks.{l}.attn.hook_z``.

Zeroing a head's ``z`` removes exactly its write to the residual stream (its ``hook_result``); "mean"
ablation replaces it with its mean over batch and positions of the same run, which keeps the
residual stream's typical offset and is the gentler control.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Literal

import torch


def head_ablation_hooks(
    heads: list[tuple[int, int]], mode: Literal["zero", "mean"] = "zero", prefix: str = ""
) -> list[tuple[str, callable]]:
    """``fwd_hooks`` for ``run_with_hooks`` that ablate the given (layer, head) pairs.

    ``prefix="audio_encoder."`` targets the audio encoder's heads instead of the decoder's."""
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        by_layer[layer].append(head)

    def make_hook(layer_heads: list[int]):
        def ablate(z: torch.Tensor, hook) -> torch.Tensor:
            z = z.clone()
            if mode == "zero":
                z[:, :, layer_heads] = 0.0
            elif mode == "mean":
                z[:, :, layer_heads] = z[:, :, layer_heads].mean(dim=(0, 1), keepdim=True)
            else:
                raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
            return z

        return ablate

    return [(f"{prefix}blocks.{layer}.attn.hook_z", make_hook(hs)) for layer, hs in sorted(by_layer.items())]


def random_heads(
    n_layers: int, n_heads: int, k: int, exclude: list[tuple[int, int]] = (), seed: int = 0
) -> list[tuple[int, int]]:
    """``k`` distinct random (layer, head) pairs not in ``exclude`` (the control for a head ranking)."""
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in set(exclude)]
    if k > len(pool):
        raise ValueError(f"cannot draw {k} heads from {len(pool)} candidates")
    return random.Random(seed).sample(pool, k)
