"""Autoregressive generation with hooks active, so steering and ablation apply to what is generated.

The audio is encoded once; each step re-runs the decoder over the whole sequence (no KV cache yet), so
a hook on ``blocks.{l}.hook_resid_post`` sees every position at every step, and its edits shape the
continuation exactly as they would shape a single forward pass. Batches must be left-padded (as in HF).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from jaxtyping import Float, Int


def generate(
    model,
    input=None,
    *,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    fwd_hooks=(),
    seed: int | None = None,
    **kwargs,
) -> Int[torch.Tensor, "batch pos"]:
    """Prompt plus continuation, like HF ``generate`` for decoder-only models; rows that hit an EOS
    token are padded with ``pad_token_id`` afterwards."""
    inputs = model.to_inputs(input, **kwargs).to(model.device)
    ids = inputs.input_ids
    mask = inputs.attention_mask if inputs.attention_mask is not None else torch.ones_like(ids)
    if ids.shape[0] > 1 and not bool(mask[:, -1].all()):
        raise ValueError("batched generation needs left padding: set tokenizer.padding_side = 'left'")
    eos = eos_token_id if eos_token_id is not None else list(model.cfg.eos_token_ids)
    eos = torch.as_tensor([eos] if isinstance(eos, int) else list(eos), dtype=torch.long, device=ids.device)
    pad = pad_token_id if pad_token_id is not None else (model.cfg.pad_token_id or (int(eos[0]) if len(eos) else 0))
    generator = torch.Generator(device=ids.device).manual_seed(seed) if seed is not None else None
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)

    with torch.no_grad(), model.hooks(fwd_hooks=list(fwd_hooks)):
        audio_embeds = model.embed_audio(inputs) if inputs.has_audio else None
        audio_mask = inputs.audio_mask
        for _ in range(max_new_tokens):
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            step = replace(inputs, input_ids=ids, attention_mask=mask, position_ids=position_ids)
            logits = model.forward_inputs(step, audio_embeds, audio_mask)[:, -1].float()
            next_tokens = _sample(logits, temperature, top_k, top_p, generator) if do_sample else logits.argmax(-1)
            next_tokens = torch.where(finished, torch.full_like(next_tokens, pad), next_tokens)
            ids = torch.cat([ids, next_tokens[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(next_tokens)[:, None]], dim=1)
            audio_mask = torch.cat([audio_mask, torch.zeros_like(finished)[:, None]], dim=1)
            finished |= torch.isin(next_tokens, eos)
            if bool(finished.all()):
                break
    return ids


def _sample(
    logits: Float[torch.Tensor, "batch vocab"],
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Int[torch.Tensor, "batch"]:
    logits = logits / max(temperature, 1e-6)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) > top_p  # keep the token that crosses top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
