"""The key/value cache of a generation, and where the positions a hook sees lie in the whole sequence.

``KVCache`` holds, per decoder layer, the keys and values of every position run so far
``[batch, pos, kv_head, d_head]`` (keys after q/k norm and rotary, exactly what attention reads), and
the attention mask over those positions (left padding stays hidden from every later query). It is
TransformerLens's ``HookedTransformerKeyValueCache`` in miniature: ``generate`` builds one, runs the
prompt through it once, then feeds one new position per step.

A cached step runs only the new positions, so hooks see ``[batch, 1, ...]`` activations there.
``position_offset()`` says where they lie: the column of the padded token sequence that position 0 of
the current forward is (0 on an ordinary forward and on the prompt; the number of cached positions on
a cached step). ``position_offset() + i`` is the absolute position of index ``i`` of the ``pos`` axis.
``prediction_positions`` turns that into "the positions that predict the answer", the same with the cache
and without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

import torch
from jaxtyping import Bool, Float, Int

from .components.masks import additive_mask

_POSITION_OFFSET: ContextVar[int] = ContextVar("hooked_audio_position_offset", default=0)


def position_offset() -> int:
    """Absolute position (column of the padded token sequence) of index 0 of the ``pos`` axis that hooks
    see in the forward now running: 0 on an ordinary forward, the cached length on a cached step.

    A hook that means absolute positions (e.g. "the prompt's last token", "the audio span") adds this to
    the indices of its activation: ``torch.arange(x.shape[1]) + position_offset()``."""
    return _POSITION_OFFSET.get()


@contextmanager
def _holding(variable: ContextVar, value) -> Iterator[None]:
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


def at_position_offset(offset: int) -> AbstractContextManager[None]:
    """Within the block, ``position_offset()`` is ``offset`` (the model's forward sets it, once per forward)."""
    return _holding(_POSITION_OFFSET, offset)


_PROMPT_LENGTH: ContextVar[int | None] = ContextVar("hooked_audio_prompt_length", default=None)


def generating_after(prompt_length: int) -> AbstractContextManager[None]:
    """Within the block (``generate``), positions from ``prompt_length`` on are generated tokens."""
    return _holding(_PROMPT_LENGTH, prompt_length)


def generated_from() -> int | None:
    """During ``generate``, the prompt's length (positions from there on are generated tokens); else None."""
    return _PROMPT_LENGTH.get()


def prediction_positions(n_positions: int, last: Int[torch.Tensor, " batch"] | None,
                         built_length: int | None = None, what: str = "the hooks") -> Bool[torch.Tensor, "batch pos"]:
    """Which indices of the forward now running predict an answer token: each row's ``last`` prompt position
    (None: the prompt's final position, as with left padding; the mask then has one row) and, during
    ``generate``, every generated token. With or without the KV cache the same absolute positions are chosen:
    without it each step re-runs the prompt and the tokens generated so far, and a hook meaning "the answer
    positions" must act on all of them again, as the cached run kept them in its keys and values.
    ``built_length``: the length of the inputs ``what`` (a hook) was built for; outside ``generate`` a forward of
    another length is refused (``last`` would point into other inputs)."""
    absolute = torch.arange(n_positions) + position_offset()
    prompt_length = generated_from()
    if built_length is not None and prompt_length is None and n_positions != built_length:
        raise ValueError(f"{what} were built for inputs of {built_length} positions, this forward has {n_positions}: "
                         "build them from the inputs you run")
    if last is None:
        last = torch.tensor([(n_positions + position_offset() if prompt_length is None else prompt_length) - 1])
    chosen = absolute[None, :] == last.cpu().long()[:, None]
    if prompt_length is not None:
        chosen |= (absolute >= prompt_length)[None, :]
    return chosen


class KVCacheEntry:
    """One layer's cached keys and values, ``[batch, pos, kv_head, d_head]`` each."""

    def __init__(self) -> None:
        self.keys: Float[torch.Tensor, "batch pos kv_head d_head"] | None = None
        self.values: Float[torch.Tensor, "batch pos kv_head d_head"] | None = None

    def append(
        self,
        keys: Float[torch.Tensor, "batch new kv_head d_head"],
        values: Float[torch.Tensor, "batch new kv_head d_head"],
    ) -> tuple[Float[torch.Tensor, "batch pos kv_head d_head"], Float[torch.Tensor, "batch pos kv_head d_head"]]:
        """Add the new positions' keys and values; returns those of every position so far."""
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = torch.cat([self.keys, keys], dim=1)
            self.values = torch.cat([self.values, values], dim=1)
        return self.keys, self.values


class KVCache:
    """Per-layer keys and values of every position run so far, and the attention mask over them."""

    def __init__(self, n_layers: int) -> None:
        self.entries = [KVCacheEntry() for _ in range(n_layers)]
        self.attention_mask: Int[torch.Tensor, "batch pos"] | None = None

    def __getitem__(self, layer: int) -> KVCacheEntry:
        return self.entries[layer]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def n_pos(self) -> int:
        """Positions cached so far (padding included): the absolute position of the next one."""
        return 0 if self.attention_mask is None else self.attention_mask.shape[1]

    def append_attention_mask(self, attention_mask: Int[torch.Tensor, "batch new"]) -> Int[torch.Tensor, "batch pos"]:
        """Record the new positions' mask (1 real, 0 padding); returns the mask of every position so far."""
        attention_mask = attention_mask.long()
        if self.attention_mask is None:
            self.attention_mask = attention_mask
        else:
            if attention_mask.shape[0] != self.attention_mask.shape[0]:
                raise ValueError(
                    f"the cache holds {self.attention_mask.shape[0]} batch rows but the new positions have "
                    f"{attention_mask.shape[0]}; a cache serves one batch"
                )
            self.attention_mask = torch.cat([self.attention_mask, attention_mask.to(self.attention_mask.device)], dim=1)
        return self.attention_mask

    def position_ids(self, n_new: int) -> Int[torch.Tensor, "batch new"]:
        """Rotary positions of the last ``n_new`` positions: the number of real tokens before each (as HF's
        ``generate`` numbers them, so a left-padded row starts at 0 and continues without gaps)."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -n_new:]

    def attention_bias(self, n_new: int, dtype: torch.dtype) -> Float[torch.Tensor, "batch 1 new pos"] | None:
        """Additive mask for the last ``n_new`` positions as queries over every cached position as keys:
        causal and padding together. None when nothing needs hiding (one new query and no padding, or a
        fresh cache without padding, which attention treats as plain causal)."""
        mask = self.attention_mask
        n_pos = mask.shape[1]
        padded = not bool(mask.all())
        if not padded and (n_new == 1 or n_new == n_pos):
            return None
        queries = torch.arange(n_pos - n_new, n_pos, device=mask.device)
        causal = torch.arange(n_pos, device=mask.device)[None, :] <= queries[:, None]
        return additive_mask(causal[None] & mask.bool()[:, None, :], dtype)[:, None]
