"""Activation steering: add a direction to the residual stream at chosen positions.

Typical use: the difference of mean residuals between two conditions (e.g. clips of a male vs a female
speaker) added at the audio positions of layer ``l`` to push the model's reading of the audio.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from jaxtyping import Bool, Float, Int

from ..kv_cache import generated_from, position_offset
from ..runs import current_run
from ..indices import as_bool_mask, position_indices, rows_padded_at


def steering_hook(
    direction: Float[torch.Tensor, "d_model"],
    scale: float = 1.0,
    positions: str | Bool[torch.Tensor, "batch pos"] | Int[torch.Tensor, "n"] | list[int] | None = None,
):
    """A hook adding ``scale * direction`` at ``positions`` (every position when None).

    ``positions="audio"`` or ``"text"`` steers the audio tokens, or the real text tokens, of whatever inputs each
    run is given (read from that run's inputs, so one hook serves every batch; in ``generate``, the prompt's, and
    ``"text"`` steers every generated token too). Otherwise ``positions`` is a bool mask ``[batch, pos]`` (e.g.
    ``inputs.audio_mask``, or the same as an array or nested list of bools; one row ``[1, pos]`` or ``[pos]``
    applies to every row) or a list of integer position indices applied to every row. An integer 0/1 tensor is
    refused (it would be read as indices). Positions are absolute columns of the token
    sequence (``kv_cache.position_offset()`` says where the current forward starts), so the hook steers the
    same tokens during ``generate`` with or without the KV cache: a mask leaves positions past its length
    alone, a non-negative index is a fixed position, and a negative one counts back from the end of the input:
    of the forward outside ``generate``, of the prompt during it, where ``-1`` also steers every generated token
    (as a hook on the newest position does with the KV cache, whose keys keep each one steered).
    ``direction`` must be one vector of the hooked activation's width. On an audio-encoder point only
    ``positions=None`` is taken (its columns are frames, not tokens)."""
    direction = torch.as_tensor(direction)
    if direction.ndim != 1:
        raise ValueError(f"direction must be one vector [d_model], got shape {tuple(direction.shape)}")
    if not torch.isfinite(direction).all():
        raise ValueError("direction has NaN or inf entries")
    if isinstance(scale, (bool, str)):
        raise TypeError(f"scale must be a number, got {scale!r}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale must be a finite number, got {scale}")
    mask_rows, indices = None, None
    run_key = object()  # positions="audio" / "text": the run's mask is kept in its state under this key
    steers_generated = isinstance(positions, str) and positions == "text"  # generated tokens are text too
    if isinstance(positions, str):
        if positions not in ("audio", "text"):
            raise ValueError(f'positions must be "audio", "text", a bool mask, indices or None, got {positions!r}')
    elif positions is not None:
        if (mask := as_bool_mask(positions)) is not None:
            mask_rows = mask[None] if mask.ndim == 1 else mask
            if mask_rows.ndim != 2:
                raise ValueError(f"a positions mask must be [batch, pos] or [pos], got shape {tuple(mask.shape)}")
        else:
            indices = position_indices(positions)

    def add(resid: torch.Tensor, hook, check_inputs=None) -> torch.Tensor:
        if resid.shape[-1] != direction.shape[0]:
            raise ValueError(
                f"direction has {direction.shape[0]} entries but {hook.name} has width {resid.shape[-1]}"
            )
        delta = scale * direction.to(resid.device, resid.dtype)
        if positions is None:
            return resid + delta
        if resid.ndim != 3:  # hook_audio_embeds: [n_audio_tok, d_model], the audio tokens themselves
            raise ValueError(f"{hook.name} has no position axis (shape {tuple(resid.shape)}): steer all of it "
                             "(positions=None), or steer a [batch, pos, d_model] point at inputs.audio_mask")
        if hook.name.startswith("audio_encoder"):  # rows are windows, columns frames: no decoder position is there
            raise ValueError(
                f"positions index the decoder's token sequence, but {hook.name} is an encoder point ([window, frame, "
                "d]): steer every frame (positions=None), or write a hook over frames (model.encoder_real_frames(inputs) "
                "says which are the clip's)")
        batch, n_pos = resid.shape[:2]
        offset = position_offset()
        absolute = torch.arange(offset, offset + n_pos)  # the sequence columns this forward holds
        if indices is not None:
            end, prompt = offset + n_pos, generated_from()
            if int(indices.max()) >= end or int(indices.min()) < -(end if prompt is None else prompt):
                raise ValueError(f"positions {indices.tolist()} are out of range for {hook.name}'s {end} positions")
            wanted = indices % (end if prompt is None else prompt)
            mask = torch.isin(absolute, wanted)
            if prompt is not None and bool((indices == -1).any()):
                mask |= absolute >= prompt
            mask = mask[None].expand(batch, -1)
        else:
            rows = _run_mask(run_key, positions, hook.name, batch) if isinstance(positions, str) else mask_rows
            if rows.shape[0] not in (1, batch):
                raise ValueError(
                    f"the positions mask has {rows.shape[0]} rows but the batch has {batch}; give one row per "
                    "batch row (or a single row for all)"
                )
            prompt, width = generated_from(), rows.shape[1]
            if (width != n_pos) if prompt is None else (width < prompt):  # generate: it may cover generated tokens too
                raise ValueError(
                    f"the positions mask covers {width} positions but {hook.name} has "
                    f"{n_pos if prompt is None else f'{prompt} prompt'} positions: it was built for other inputs, and "
                    "would steer other columns; build it from these inputs (e.g. inputs.audio_mask), or pass "
                    'positions="audio" (or "text"), which reads each run\'s own')
            inside = absolute < rows.shape[1]
            mask = torch.zeros(rows.shape[0], n_pos, dtype=torch.bool)
            mask[:, inside] = rows.cpu()[:, absolute[inside]]
            if steers_generated and prompt is not None:
                mask[:, absolute >= prompt] = True
            mask = mask.expand(batch, -1)
        return resid + mask.to(resid.device)[..., None] * delta

    # each forward checks its inputs against the hook (cache.check_patch_alignment): an index that is padding in
    # some row (-1 on right padding) would steer that row's padding instead of its tokens, and a mask that marks
    # padding was built for other inputs (another batch of the same width)
    if positions is None:
        return add
    if isinstance(positions, str):
        check = partial(_take_run_mask, run_key, positions)
    elif indices is not None:
        check = partial(_refuse_padding_columns, indices)
    else:
        check = partial(_refuse_padding_mask, mask_rows)
    return partial(add, check_inputs=check)


def _take_run_mask(run_key: object, positions: str, inputs) -> None:
    """Keep the running inputs' audio or text mask in the run's state (called by the check before its forward)."""
    run = current_run()
    if run is not None:
        run.state[run_key] = (inputs.audio_mask if positions == "audio" else inputs.text_mask).cpu()


def _run_mask(run_key: object, positions: str, hook_name: str, batch: int) -> Bool[torch.Tensor, "batch pos"]:
    run = current_run()
    mask = None if run is None else run.state.get(run_key)
    if mask is None or mask.shape[0] != batch:  # this forward skipped the check (forward_inputs, a block called alone)
        raise ValueError(f'steering_hook(positions="{positions}") on {hook_name} reads the {positions} positions from '
                         "each run's inputs, but this forward was not run through the model's entry points: run it "
                         "through run_with_hooks, hooks(), run_with_cache, a plain call or generate (or pass a mask)")
    return mask


def _refuse_padding_mask(mask_rows: Bool[torch.Tensor, "rows pos"], inputs) -> None:
    batch, n_pos = inputs.shape
    if mask_rows.shape[0] not in (1, batch) or mask_rows.shape[1] < n_pos or inputs.attention_mask is None:
        return  # another shape: the hook says so with the hook point's name
    # a mask of these inputs that marks a row's padding marks all of it and every text token too (~audio_mask,
    # all True: steering padding itself changes no real token); anything else that marks padding is the sign of a
    # mask of other inputs (another batch of the same width, the other padding side)
    mask = mask_rows.cpu()[:, :n_pos].expand(batch, -1)
    padding = ~inputs.attention_mask.cpu().bool()
    whole = (mask | ~(padding | inputs.text_mask.cpu())).all(-1)
    rows = ((mask & padding).any(-1) & ~whole).nonzero().flatten().tolist()
    if rows:
        raise ValueError(f"the steering positions mask marks padding positions in rows {rows} (but not all of their "
                         "text): a mask of other inputs (another batch of the same width, the other padding side) looks "
                         "like this, and would steer those rows' other columns. If it is these inputs' own, drop the "
                         "padding (mask & inputs.attention_mask.bool()); else build it from these inputs, or pass "
                         'positions="audio" (or "text"), which reads each run\'s own')


def _refuse_padding_columns(indices: Int[torch.Tensor, "n"], inputs) -> None:
    if inputs.attention_mask is None:  # in generate, inputs are the prompt's: its columns are checked the same way
        return
    n_pos = inputs.shape[1]
    if int(indices.max()) >= n_pos or int(indices.min()) < -n_pos:
        return  # out of range: the hook says so with the hook point's name
    rows = rows_padded_at(indices % n_pos, inputs.attention_mask)
    if rows:
        raise ValueError(f"steering positions {indices.tolist()} are padding in rows {rows} (e.g. -1 on right "
                         "padding): those rows' padding would be steered instead of their tokens. Pass a bool mask "
                         "[batch, pos] of the positions per row, or pad on the left. (Positions index the decoder's "
                         "tokens: on an audio_encoder point or hook_audio_embeds, steer with positions=None.)")
