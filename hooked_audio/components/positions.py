"""Decoder position ids when the caller passes none: the rules HF families use (``AudioInputSpec.position_ids``)."""

from __future__ import annotations

import torch
from jaxtyping import Int


def decoder_position_ids(
    rule: str, input_ids: Int[torch.Tensor, "batch pos"], attention_mask: Int[torch.Tensor, "batch pos"] | None
) -> Int[torch.Tensor, "batch pos"]:
    """``"index"``: ``0..pos-1`` in every row. ``"real_tokens"``: count real tokens only, padding gets 1
    (HF's Qwen-Omni text-and-audio MRoPE positions, so a left-padded row's first real token is 0)."""
    if rule == "index" or attention_mask is None:
        return torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand(input_ids.shape[0], -1)
    if rule == "real_tokens":
        attention_mask = attention_mask.to(input_ids.device)
        return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
    raise ValueError(f"unknown position-id rule {rule!r}; expected 'index' or 'real_tokens'")
