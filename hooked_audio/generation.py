"""Autoregressive generation with hooks active, so steering and ablation apply to what is generated.

The audio is encoded once. With ``use_past_kv_cache=True`` (the default, as in TransformerLens) the
prompt runs once into a ``KVCache`` and each step runs the decoder over the one new position only,
attending over the cached keys and values; ``use_past_kv_cache=False`` re-runs the whole sequence every
step. Both give the same tokens and (to float rounding) the same logits.

Hooks and positions. On a cached step a hook sees the new position only: ``[batch, 1, ...]`` for
residual, q/k/v and MLP activations, ``[batch, head, 1, k_pos]`` for scores and patterns (the keys
cover every position so far). ``hooked_audio.generation.position_offset()`` (defined in
``kv_cache.py``) tells a hook where its positions lie: index ``i`` of the ``pos`` axis is absolute
position ``position_offset() + i`` (a column of the left-padded token sequence: the prompt's columns
first, then one per generated token). It is 0 on the prompt and on every uncached forward, so a hook
written with it behaves the same in both modes. A hook that edits "every position" (e.g.
``steering_hook`` with ``positions=None``) is the same in both modes without it; one that must see the
whole sequence at once (e.g. a mean over positions) needs ``use_past_kv_cache=False``.

Batches must be left-padded (as in HF); rotary positions count the real tokens before each position,
as HF's ``generate`` does, so padding shifts nothing. Rows that hit a stop token are fed (and
return) ``pad_token_id`` afterwards; generation stops early once every row has stopped.
"""

from __future__ import annotations

from dataclasses import replace
from numbers import Integral, Real

import numpy as np
import torch
from jaxtyping import Float, Int

from .audio.inputs import AudioTextInput
from .cache import check_patch_alignment
from .runs import running
from .indices import is_index
from .kv_cache import KVCache, generating_after, position_offset
from .hook_points import hook_pairs

__all__ = ["generate", "position_offset"]


def generate(
    model,
    input=None,
    *,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    fwd_hooks=(),
    seed: int | None = None,
    use_past_kv_cache: bool = True,
    return_logits: bool = False,
    **kwargs,
) -> Int[torch.Tensor, "batch pos"] | tuple[Int[torch.Tensor, "batch pos"], Float[torch.Tensor, "batch new vocab"]]:
    """Prompt plus continuation ``[batch, prompt + new]``, like HF ``generate`` for decoder-only models.

    ``eos_token_id``: stop token(s) (default: the model's; ``[]`` never stops early); rows that stop are
    padded with ``pad_token_id`` afterwards. Greedy unless ``do_sample=True`` (whatever the checkpoint's
    generation config says: HF's ``generate`` samples when it says so), which draws from
    ``softmax(logits / temperature)`` restricted to the ``top_k`` most likely tokens and the smallest set reaching
    probability ``top_p``, as HF does: each left out is the checkpoint's generation config's (``model.generation_config``)
    or else HF's default (temperature 1, top_k 50, top_p 1); ``top_k=0`` and ``top_p=1`` are no limit.
    ``seed`` makes it reproducible. ``fwd_hooks`` are active for the whole generation (audio encoder
    included). ``return_logits=True`` returns ``(tokens, logits)`` with each step's raw next-token
    logits ``[batch, new, vocab]`` (float32, before temperature / top-k / top-p).

    Refused, as they would otherwise be ignored or mean something else: ``temperature`` / ``top_k`` /
    ``top_p`` without ``do_sample=True``, ``position_ids`` (generate numbers positions itself), non-bool
    flags, stop or pad ids outside the vocabulary, and HF ``generate`` options not implemented here
    (``use_cache``, ``max_length``, ``num_beams``, ...: the error names the argument to use instead)."""
    _check_arguments(max_new_tokens, do_sample, temperature, top_k, top_p, use_past_kv_cache, return_logits)
    if do_sample:
        temperature, top_k, top_p = sampling_settings(model, temperature, top_k, top_p)
    _refuse_hf_generate_options(kwargs)
    fwd_hooks = hook_pairs(fwd_hooks)  # checked before the audio is encoded
    inputs = model.to_inputs(input, **kwargs).to(model.device)
    if inputs.position_ids is not None:
        raise ValueError(
            "generate numbers the positions itself (the real tokens before each position, as HF's generate does, "
            "continuing over the new tokens); given position_ids would be ignored: leave position_ids out"
        )
    ids = inputs.input_ids
    mask = inputs.attention_mask if inputs.attention_mask is not None else torch.ones_like(ids)
    mask = mask.to(ids.device).long()
    if not bool(mask[:, -1].all()):
        raise ValueError(
            "generation needs left padding (every row's last position real): set tokenizer.padding_side = 'left'"
        )
    eos = eos_token_id if eos_token_id is not None else list(model.cfg.eos_token_ids)
    eos = [eos] if is_index(eos) else list(eos)
    if not all(is_index(t) for t in eos):
        raise TypeError(f"eos_token_id must be a token id or a list of them, got {eos!r}")
    if eos_token_id is not None:
        outside = [int(t) for t in eos if not 0 <= int(t) < model.cfg.d_vocab]
        if outside:
            raise ValueError(
                f"eos_token_id {outside} is outside the vocabulary (0..{model.cfg.d_vocab - 1}): it could never be "
                "generated, so no row would stop on it. Pass this model's stop token ids (or [] never to stop early)"
            )
    if pad_token_id is not None and (not is_index(pad_token_id) or not 0 <= int(pad_token_id) < model.cfg.d_vocab):
        raise ValueError(
            f"pad_token_id must be a token id in 0..{model.cfg.d_vocab - 1} (what finished rows are fed and return), "
            f"got {pad_token_id!r}"
        )
    eos = torch.as_tensor([int(t) for t in eos], dtype=torch.long, device=ids.device)
    if pad_token_id is not None:
        pad = int(pad_token_id)
    elif model.cfg.pad_token_id is not None:  # may be 0, a real id
        pad = model.cfg.pad_token_id
    else:
        pad = int(eos[0]) if len(eos) else 0
    generator = torch.Generator(device=ids.device).manual_seed(seed) if seed is not None else None
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    step_logits: list[torch.Tensor] = []
    # HF's generate numbers positions by the real tokens before them (padding gets 0, and is masked anyway).
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    prompt = replace(inputs, attention_mask=mask, position_ids=position_ids)
    cache = KVCache(model.cfg.n_layers) if use_past_kv_cache else None

    with torch.no_grad(), model.hooks(fwd_hooks=fwd_hooks), generating_after(ids.shape[1]), running(model):
        check_patch_alignment(model.attached_hook_fns(), inputs)  # the hooks act on the prompt's positions
        audio_embeds = model.embed_audio(inputs) if inputs.has_audio else None
        audio_mask = inputs.audio_mask
        for step in range(max_new_tokens):
            if step == 0:
                logits = model.forward_inputs(prompt, audio_embeds, audio_mask, kv_cache=cache, last_position_only=True)
            elif cache is not None:
                new = AudioTextInput(input_ids=ids[:, -1:], attention_mask=mask[:, -1:])
                logits = model.forward_inputs(new, None, torch.zeros_like(finished)[:, None], kv_cache=cache)
            else:
                position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
                full = replace(inputs, input_ids=ids, attention_mask=mask, position_ids=position_ids)
                logits = model.forward_inputs(full, audio_embeds, audio_mask, last_position_only=True)
            logits = logits[:, -1].float()
            if return_logits:
                step_logits.append(logits)
            next_tokens = _sample(logits, temperature, top_k, top_p, generator) if do_sample else logits.argmax(-1)
            next_tokens = torch.where(finished, torch.full_like(next_tokens, pad), next_tokens)
            ids = torch.cat([ids, next_tokens[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            audio_mask = torch.cat([audio_mask, torch.zeros_like(finished)[:, None]], dim=1)
            finished |= torch.isin(next_tokens, eos)
            if bool(finished.all()):
                break
    if not return_logits:
        return ids
    if step_logits:
        return ids, torch.stack(step_logits, dim=1)
    return ids, torch.zeros(ids.shape[0], 0, model.cfg.d_vocab, device=ids.device)


# what HF's generate samples with where neither the call nor the checkpoint's generation config says
# (``GenerationConfig._get_default_generation_params``)
HF_SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0}


# HF ``generate`` options that this ``generate`` does not take: its name for the same thing, or why not.
_HF_GENERATE_OPTIONS = {
    "use_cache": "pass use_past_kv_cache= instead",
    "max_length": "pass max_new_tokens= (the number of new tokens) instead",
    "output_logits": "pass return_logits=True instead (it returns (tokens, logits))",
    "output_scores": "pass return_logits=True instead (raw logits; apply temperature / top-k / top-p yourself)",
    "return_dict_in_generate": "pass return_logits=True for (tokens, logits)",
    "generator": "pass seed= instead",
    "generation_config": "pass its settings (max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, "
                         "pad_token_id) as arguments",
    **{name: "only greedy decoding and sampling (temperature, top_k, top_p) are implemented"
       for name in ("num_beams", "num_beam_groups", "num_return_sequences", "repetition_penalty", "length_penalty",
                    "no_repeat_ngram_size", "min_new_tokens", "min_length", "min_p", "typical_p", "epsilon_cutoff",
                    "eta_cutoff", "penalty_alpha", "diversity_penalty", "bad_words_ids", "sequence_bias",
                    "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id",
                    "logits_processor", "stopping_criteria", "early_stopping", "renormalize_logits",
                    "guidance_scale", "assistant_model", "prompt_lookup_num_tokens", "streamer", "stop_strings",
                    "max_time", "past_key_values", "cache_implementation")},
}


# TransformerLens ``generate`` options that this ``generate`` does not take (its own, ``max_new_tokens``,
# ``do_sample``, ``top_k``, ``top_p``, ``temperature``, ``eos_token_id``, ``use_past_kv_cache``, are the same).
_TL_GENERATE_OPTIONS = {
    "stop_at_eos": "rows stop at the checkpoint's stop tokens (eos_token_id=); pass eos_token_id=[] never to stop early",
    "return_type": "it returns token ids [batch, prompt + new] (return_logits=True: also each step's logits); decode "
                   "with model.to_string",
    "freq_penalty": "only greedy decoding and sampling (temperature, top_k, top_p) are implemented",
    "verbose": "it shows no progress bar",
}


def _refuse_hf_generate_options(kwargs) -> None:
    """An HF or TransformerLens ``generate`` option would otherwise reach ``to_inputs`` and fail as an unknown model
    input (or, beside an AudioTextInput, as keyword inputs)."""
    for name in kwargs:
        if name in _HF_GENERATE_OPTIONS:
            raise TypeError(f"generate() does not take HF's {name}=: {_HF_GENERATE_OPTIONS[name]}")
        if name in _TL_GENERATE_OPTIONS:
            raise TypeError(f"generate() does not take TransformerLens's {name}=: {_TL_GENERATE_OPTIONS[name]}")


def _check_arguments(max_new_tokens, do_sample, temperature, top_k, top_p, use_past_kv_cache, return_logits) -> None:
    """Clear errors for arguments that would otherwise fail deep inside, or silently do something else."""
    for name, value in (("do_sample", do_sample), ("use_past_kv_cache", use_past_kv_cache),
                        ("return_logits", return_logits)):
        if not isinstance(value, (bool, np.bool_)):  # "False" or None would silently mean True / False
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, Integral) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 0):
        raise ValueError(f"top_k must be a whole number >= 0 (0: no limit; None: the generation config's), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, Real) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (1: no limit; None: the generation config's), got {top_p!r}")
    if not do_sample:
        neutral = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}  # would change nothing when sampling either
        unused = [f"{name}={value!r}" for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p))
                  if value is not None and value != neutral[name]]
        if unused:
            raise ValueError(
                f"{', '.join(unused)}: sampling settings, which greedy decoding (do_sample=False) would ignore: pass "
                "do_sample=True to sample with them, or leave them out for greedy decoding"
            )
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, Real) or not temperature > 0):
        raise ValueError(
            f"temperature must be > 0 when sampling, got {temperature!r} (for greedy decoding pass do_sample=False)"
        )


def sampling_settings(model, temperature: float | None, top_k: int | None,
                      top_p: float | None) -> tuple[float, int | None, float | None]:
    """(temperature, top_k, top_p) to sample with, as HF's ``generate`` would: each not given is the model's
    generation config's, else ``GenerationConfig``'s default; a top_k of 0 and a top_p of 1 (no limit) become None."""
    checkpoint = getattr(model, "generation_config", None)

    def setting(name, given):
        if given is not None:
            return given
        value = getattr(checkpoint, name, None)
        return value if value is not None else HF_SAMPLING_DEFAULTS[name]

    temperature, top_k, top_p = setting("temperature", temperature), setting("top_k", top_k), setting("top_p", top_p)
    return float(temperature), int(top_k) or None, float(top_p) if top_p < 1 else None


def _sample(
    logits: Float[torch.Tensor, "batch vocab"],
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Int[torch.Tensor, "batch"]:
    logits = logits / temperature
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
