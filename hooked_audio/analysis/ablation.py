"""Head ablation as hook functions on ``blocks.{l}.attn.hook_z``.

Three ways to take a head out, answering different questions:

- ``"zero"`` removes exactly its write to the residual stream (its ``hook_result``). It asks "does the
  model need this head at all?", which also counts heads that do text-side bookkeeping.
- ``"mean"`` replaces it with its mean over batch and positions of the same run, which keeps the
  residual stream's typical offset.
- ``"resample"`` gives each row the head's output from a *donor* row with the same prompt but another
  clip (see ``same_prompt_donors``). The head keeps doing its job, on the wrong audio, so only the audio
  information it carries is removed: the right test for "is this an audio-reading head?".
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Literal

import torch
from jaxtyping import Int

from ..audio.inputs import AudioTextInput


def head_ablation_hooks(
    heads: list[tuple[int, int]],
    mode: Literal["zero", "mean", "resample"] = "zero",
    prefix: str = "",
    donors: Int[torch.Tensor, " batch"] | None = None,
) -> list[tuple[str, callable]]:
    """``fwd_hooks`` for ``run_with_hooks`` that ablate the given (layer, head) pairs.

    ``mode="resample"`` needs ``donors`` (row ``b`` takes the head's output from row ``donors[b]`` of the
    same batch; build them with ``same_prompt_donors``). ``prefix="audio_encoder."`` targets the audio
    encoder's heads instead of the decoder's."""
    if mode not in ("zero", "mean", "resample"):
        raise ValueError(f"mode must be 'zero', 'mean' or 'resample', got {mode!r}")
    if (mode == "resample") != (donors is not None):
        raise ValueError("pass donors=same_prompt_donors(inputs) with mode='resample', and only then")
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
                if len(donors) != z.shape[0]:
                    raise ValueError(f"donors has {len(donors)} rows but the batch has {z.shape[0]}")
                z[:, :, layer_heads] = z[donors.to(z.device)][:, :, layer_heads]
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


def same_prompt_donors(inputs: AudioTextInput) -> Int[torch.Tensor, " batch"]:
    """For each row, another row with the identical token sequence (same prompt, same audio length) but its
    own clip: the donors for ``mode="resample"``. Rows are rotated within each group of identical prompts.

    Raises if a row has no partner, since its "resampled" output would be its own."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for row, (ids, mask) in enumerate(zip(inputs.input_ids.tolist(), inputs.attention_mask.tolist())):
        groups[(tuple(ids), tuple(mask))].append(row)
    donors = torch.empty(len(inputs.input_ids), dtype=torch.long)
    for rows in groups.values():
        if len(rows) < 2:
            raise ValueError(
                f"row {rows[0]} has no other row with the same prompt; resample ablation needs at least two "
                "clips per prompt in the batch (same question and hint, clips of the same length)")
        donors[rows] = torch.tensor(rows[1:] + rows[:1])
    return donors
