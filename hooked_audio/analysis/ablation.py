"""Head ablation as hook functions on ``blocks.{l}.attn.hook_z``.

Three ways to take a head out, answering different questions:

- ``"zero"`` removes exactly its write to the residual stream (its ``hook_result``). It asks "does the
  model need this head at all?", which also counts heads that do text-side bookkeeping.
- ``"mean"`` replaces it with its mean over the *real* positions (padding excluded) of every row of the
  same run, which keeps the residual stream's typical offset.
- ``"resample"`` gives each row the head's output from a *donor* row with the same prompt but another
  clip (see ``same_prompt_donors``). The head keeps doing its job, on the wrong audio, so only the audio
  information it carries is removed: the right test for "is this an audio-reading head?".

Heads are checked before anything runs: a negative, non-integer or (with ``model=``) out-of-range layer
or head index, an empty list or a repeated head is an error, never a silent "last head" or a no-op.
"""

from __future__ import annotations

import functools
import numbers
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int

from ..audio.inputs import AudioTextInput
from ..kv_cache import generated_from, position_offset
from ..indices import is_index, rows_on_padding
from .metric_value import metric_value
from .clip_identity import row_audio_fingerprints
from .row_labels import row_labels

MODES = ("zero", "mean", "resample")


def head_ablation_hooks(
    heads: list[tuple[int, int]],
    mode: Literal["zero", "mean", "resample"] = "zero",
    prefix: str = "",
    donors: Int[torch.Tensor, " batch"] | None = None,
    *,
    inputs: AudioTextInput | Bool[torch.Tensor, "batch pos"] | Int[torch.Tensor, "batch pos"] | None = None,
    model=None,
) -> list[tuple[str, Callable[..., torch.Tensor]]]:
    """``fwd_hooks`` for ``run_with_hooks`` that ablate the given (layer, head) pairs.

    ``mode="resample"`` needs ``donors`` (row ``b`` takes the head's output from row ``donors[b]`` of the
    same batch; build them with ``same_prompt_donors``). ``mode="mean"`` averages over real positions
    only: pass ``inputs=`` (the ``AudioTextInput``, whose attention mask says which positions are real, or
    a bool mask ``[batch, pos]``); it is required when the batch has more than one row. Positions past the
    mask (tokens added by ``generate``) count as real. ``model=`` checks every layer and head index against
    the model before anything runs. ``heads`` must be non-empty and name each head once (a repeat would
    ablate fewer heads than were listed).

    ``prefix="audio_encoder."`` targets the audio encoder's heads. Its blocks run on windows (or a clip's
    attention windows), not on batch rows, so both modes that read other positions need ``inputs=`` (the
    run's ``AudioTextInput``) and ``model=``: mean mode averages the frames ``model.encoder_real_frames``
    marks real (always, one clip too: a clip's padded window is mostly padding), or takes that mask itself;
    resample mode maps the row donors to windows, so that each clip's windows take those of the clip in the
    same place of the donor row."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'zero', 'mean' or 'resample', got {mode!r}")
    if (mode == "resample") != (donors is not None):
        raise ValueError("pass donors=same_prompt_donors(inputs) with mode='resample', and only then")
    encoder = prefix.startswith("audio_encoder")
    if inputs is not None and not (mode == "mean" or mode == "resample" and encoder):
        raise ValueError(f"inputs= is used by mode='mean' and by encoder resampling only (mode={mode!r} needs no mask)")
    run_inputs = isinstance(inputs, AudioTextInput) and model is not None
    if encoder and mode != "zero" and not (run_inputs or mode == "mean" and torch.is_tensor(inputs)):
        raise ValueError(
            f"mode={mode!r} on encoder heads needs inputs= (this run's AudioTextInput) and model=: the encoder's rows "
            "are windows, not batch rows, and its padded frames are no clip's (mean mode also takes a bool mask "
            "[rows, frames], e.g. model.encoder_real_frames(inputs))")
    real = _real_positions_mask(inputs, prefix, model) if mode == "mean" else None
    if donors is not None:
        donors = _check_donors(donors)
        window_donors = encoder_window_donors(model, inputs, donors) if encoder else None
    checked = checked_head_pairs(heads, model, prefix)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in checked:
        by_layer[layer].append(head)
    # resampled heads: every run checks that each row and its donor share the prompt
    check = None if donors is None else functools.partial(_check_donors_share_prompt, donors)
    if mode == "mean" and not encoder and torch.is_tensor(inputs):  # a bare mask: check it against each run's padding
        check = functools.partial(_refuse_mean_mask_on_padding, real)
    return [(f"{prefix}blocks.{layer}.attn.hook_z",
             functools.partial(_ablate, layer=layer, layer_heads=hs, mode=mode, real=real,
                               donors=window_donors if encoder and donors is not None else donors,
                               check_inputs=check, built_for=inputs if isinstance(inputs, AudioTextInput) else None))
            for layer, hs in sorted(by_layer.items())]


def encoder_window_donors(
    model, inputs: AudioTextInput, donors: Int[torch.Tensor, " batch"]
) -> Int[torch.Tensor, " window"]:
    """Row donors as donors of the encoder's feature rows (windows): the ``j``-th window of a row's ``i``-th clip
    takes the ``j``-th window of the ``i``-th clip of its donor row."""
    if len(donors) != inputs.shape[0]:
        raise ValueError(f"donors has {len(donors)} rows but the batch has {inputs.shape[0]}: build them with "
                         "same_prompt_donors(inputs) for these inputs")
    clips = model.window_clips(inputs)
    if clips is None:
        raise ValueError("these inputs' audio features do not match their placeholders (run them once to see why)")
    place = {span.clip: (row, i) for row, spans in enumerate(inputs.audio_spans) for i, span in enumerate(spans)}
    seen: dict[int, int] = defaultdict(int)
    keys = []
    for clip in clips.tolist():
        keys.append((*place[clip], seen[clip]))
        seen[clip] += 1
    where = {key: window for window, key in enumerate(keys)}
    missing = [(row, i, j) for row, i, j in keys if (int(donors[row]), i, j) not in where]
    if missing:
        row, i, j = missing[0]
        raise ValueError(f"row {row}'s clip {i} has a window {j} that its donor row {int(donors[row])} lacks: resample "
                         "donors need the same clips in the same places (same_prompt_donors(inputs) pairs such rows)")
    return torch.tensor([where[(int(donors[row]), i, j)] for row, i, j in keys])


def _ablate(z: torch.Tensor, hook, *, layer: int, layer_heads: list[int], mode: str, real: torch.Tensor | None,
            donors: torch.Tensor | None, check_inputs, built_for: AudioTextInput | None) -> torch.Tensor:
    """``head_ablation_hooks``' hook on ``hook_z``. ``check_inputs`` and ``built_for`` (mean mode: the inputs
    whose padding the mean leaves out) are held for ``cache.check_patch_alignment``."""
    n_heads = z.shape[2]
    if max(layer_heads) >= n_heads:
        raise ValueError(
            f"head {max(layer_heads)} of layer {layer} does not exist: {hook.name} has {n_heads} heads (0..{n_heads - 1})"
        )
    z = z.clone()
    if mode == "zero":
        z[:, :, layer_heads] = 0.0
    elif mode == "mean":
        if position_offset() > 0:
            raise ValueError(
                "mean ablation averages the positions of the forward it runs in, and a KV-cached generation "
                "step holds only the new one: generate with use_past_kv_cache=False, or use mode='zero' / "
                "'resample'"
            )
        z[:, :, layer_heads] = _masked_mean(z[:, :, layer_heads], real, hook.name)
    else:
        if hook.name.startswith("audio_encoder") and len(donors) != z.shape[0] and z.shape[0] % len(donors) == 0:
            per = z.shape[0] // len(donors)  # a clip's attention windows as consecutive rows (Qwen-Omni)
            donors = (donors[:, None] * per + torch.arange(per)).flatten()
        if len(donors) != z.shape[0]:
            raise ValueError(f"donors has {len(donors)} rows but {hook.name} has {z.shape[0]}")
        if int(donors.max()) >= z.shape[0]:
            raise ValueError(f"donors names row {int(donors.max())}, but the batch has {z.shape[0]} rows")
        z[:, :, layer_heads] = z[donors.to(z.device)][:, :, layer_heads]
    return z


def _refuse_mean_mask_on_padding(real: Bool[torch.Tensor, "batch pos"], inputs: AudioTextInput) -> None:
    """A mean mask that marks padding of the run (e.g. another batch's attention mask, of the same width) would
    average padding activations into the mean."""
    if tuple(real.shape) != tuple(inputs.shape):
        return  # another shape: the hook says so with its name
    rows = rows_on_padding(real, inputs.attention_mask)
    if rows:
        raise ValueError(f"the mean-ablation mask (inputs=) marks padding positions in rows {rows}: it was built for "
                         "other inputs (another batch of the same width), and the mean would include padding. Pass "
                         "this run's AudioTextInput or its attention_mask")


def _check_donors_share_prompt(donors: torch.Tensor, inputs: AudioTextInput) -> None:
    """Resample ablation swaps a head's output between a row and its donor position by position: that is only
    the same computation on another clip when the two rows hold the same tokens and padding."""
    if len(donors) != inputs.shape[0]:
        raise ValueError(f"donors has {len(donors)} rows but the batch has {inputs.shape[0]}: build them with "
                         "same_prompt_donors(inputs) for these inputs")
    if int(donors.max()) >= inputs.shape[0]:
        raise ValueError(f"donors names row {int(donors.max())}, but the batch has {inputs.shape[0]} rows")
    ids = inputs.input_ids.cpu()
    mask = inputs.attention_mask.cpu() if inputs.attention_mask is not None else torch.ones_like(ids)
    differ = ((ids != ids[donors]) | (mask != mask[donors])).any(-1).nonzero().flatten().tolist()
    if differ:
        raise ValueError(
            f"rows {differ[:8]} and their resample donors {donors[differ[:8]].tolist()} have different prompts (tokens or "
            "padding): each head's output would be taken from other positions. Build donors with "
            "same_prompt_donors(inputs) for these inputs")
    clips = row_audio_fingerprints(None, inputs)
    own = [row for row, donor in enumerate(donors.tolist()) if clips[row] is not None and clips[row] == clips[donor]]
    if own:
        raise ValueError(f"rows {own[:8]} and their resample donors {donors[own[:8]].tolist()} hold the same clip: those "
                         "rows would get their own heads' output back. Build donors with same_prompt_donors(inputs)")


@torch.no_grad()
def head_ablation_effects(
    model, inputs, metric: Callable[[torch.Tensor], torch.Tensor | float], prefix: str = "",
    mode: Literal["zero", "mean", "resample"] = "zero", donors: Int[torch.Tensor, " batch"] | None = None,
    mask=None,
) -> Float[torch.Tensor, "layer head"]:
    """How much ablating each head alone lowers ``metric(logits)`` (a scalar over the batch, e.g. the mean
    log-prob of the right label): ``metric(clean) - metric(ablated)``, one forward per head. A ranking for heads
    that no attention score can rank, such as the audio encoder's (``prefix="audio_encoder."``), whose every key
    is audio. ``mask`` overrides which positions ``mode="mean"`` averages (by default the inputs' real
    positions, or on encoder heads ``model.encoder_real_frames(inputs)``)."""
    inputs = model.to_inputs(inputs)
    encoder = prefix.startswith("audio_encoder")
    cfg = model.cfg.audio if encoder else model.cfg
    if mask is None and (mode == "mean" or mode == "resample" and encoder):
        mask = inputs
    clean = metric_value(metric(model(inputs)))
    effects = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            hooks = head_ablation_hooks([(layer, head)], mode, prefix, donors, inputs=mask, model=model)
            effects[layer, head] = clean - metric_value(metric(model.run_with_hooks(inputs, fwd_hooks=hooks)))
    return effects


def checked_head_pairs(heads, model=None, prefix: str = "") -> list[tuple[int, int]]:
    """``heads`` (a list of pairs, or a ``[k, 2]`` tensor as ``top_heads`` gives them) as distinct (layer, head)
    int pairs, each checked as ``_check_head`` checks it; an empty list and repeated heads are refused (nothing
    would be hooked; a repeat would be counted twice, or fewer heads ablated than listed)."""
    checked = [_check_head(pair, model, prefix) for pair in heads]
    if not checked:
        raise ValueError("heads is empty: nothing would be hooked; pass at least one (layer, head) pair")
    repeated = sorted({pair for pair in checked if checked.count(pair) > 1})
    if repeated:
        raise ValueError(f"heads {repeated} are named more than once (they would count twice); pass each head once")
    return checked


def _check_head(pair, model, prefix: str) -> tuple[int, int]:
    try:
        layer, head = pair
    except (TypeError, ValueError):
        raise ValueError(f"heads must be (layer, head) pairs, got {pair!r}") from None
    if not (is_index(layer) and is_index(head)):
        raise TypeError(f"(layer, head) must be integers, got {pair!r}")
    layer, head = int(layer), int(head)
    if layer < 0 or head < 0:
        raise ValueError(
            f"(layer, head) = ({layer}, {head}) has a negative index; count layers and heads from 0 "
            "(negative indices are refused, not taken from the end)"
        )
    if model is not None:
        cfg = model.cfg.audio if prefix.startswith("audio_encoder") else model.cfg
        n_layers, n_heads = cfg.n_layers, cfg.n_heads
        if layer >= n_layers or head >= n_heads:
            raise ValueError(
                f"(layer, head) = ({layer}, {head}) is out of range: the {prefix or 'decoder '}model has "
                f"{n_layers} layers x {n_heads} heads"
            )
    return layer, head


def _check_donors(donors) -> torch.Tensor:
    donors = torch.as_tensor(donors)
    if donors.ndim != 1 or donors.is_floating_point() or donors.dtype == torch.bool:
        raise TypeError(f"donors must be a 1-D integer tensor (one donor row per row), got {donors.dtype} {tuple(donors.shape)}")
    donors = donors.long()
    if len(donors) and int(donors.min()) < 0:
        raise ValueError("donors has a negative row index; give each row the index of its donor row, from 0")
    own = torch.nonzero(donors == torch.arange(len(donors))).flatten().tolist()
    if own:
        raise ValueError(
            f"rows {own} are their own donors, so their heads would not be ablated; use same_prompt_donors(inputs)"
        )
    return donors


def _real_positions_mask(inputs, prefix: str, model=None) -> torch.Tensor | None:
    if inputs is None:
        return None
    if isinstance(inputs, AudioTextInput):
        if prefix.startswith("audio_encoder"):
            return model.encoder_real_frames(inputs)
        if inputs.attention_mask is None:
            return torch.ones(inputs.shape, dtype=torch.bool)
        return inputs.attention_mask.bool()
    mask = torch.as_tensor(inputs)
    if mask.ndim != 2:
        raise ValueError(f"inputs= mask must be [batch, pos], got shape {tuple(mask.shape)}")
    if mask.is_floating_point():
        raise TypeError("inputs= mask must be bool or 0/1 integers (the attention mask), not float")
    return mask.bool()


def _masked_mean(z: torch.Tensor, real: torch.Tensor | None, name: str) -> torch.Tensor:
    """Mean of ``z`` ``[batch, pos, head, d_head]`` over the real (batch, pos) entries, shape ``[1, 1, head, d_head]``."""
    if real is None:  # decoder heads only: encoder heads always get their real frames
        if z.shape[0] > 1:
            raise ValueError(
                f"mean ablation over a batch of {z.shape[0]} rows needs inputs= (the AudioTextInput or its attention "
                "mask), so that padding positions are left out of the mean"
            )
        return z.to(_summing_dtype(z)).mean(dim=(0, 1), keepdim=True).to(z.dtype)
    real = real.to(z.device)
    if real.shape[0] != z.shape[0] or real.shape[1] > z.shape[1]:
        raise ValueError(
            f"the mask given as inputs= is {tuple(real.shape)} but {name} has [batch, pos] = {tuple(z.shape[:2])}; "
            "pass the inputs of this run"
        )
    if real.shape[1] < z.shape[1] and (generated_from() is None or name.startswith("audio_encoder")):
        raise ValueError(f"the mask given as inputs= covers {real.shape[1]} positions but {name} has {z.shape[1]}: it "
                         "was built for other inputs; pass the inputs of this run")
    if real.shape[1] < z.shape[1]:  # positions added since (generate): real
        extra = torch.ones(z.shape[0], z.shape[1] - real.shape[1], dtype=torch.bool, device=z.device)
        real = torch.cat([real, extra], dim=1)
    if not real.any():
        raise ValueError("the mask given as inputs= has no real position")
    weights = real.to(_summing_dtype(z))[:, :, None, None]
    return ((z.to(weights.dtype) * weights).sum(dim=(0, 1), keepdim=True) / weights.sum()).to(z.dtype)


def _summing_dtype(z: torch.Tensor) -> torch.dtype:
    """float32 at least (in float16 a count or a sum past 65504 is inf), float64 on a float64 model."""
    return torch.promote_types(z.dtype, torch.float32)


def random_heads(
    n_layers: int, n_heads: int, k: int, exclude: list[tuple[int, int]] = (), seed: int = 0
) -> list[tuple[int, int]]:
    """``k`` distinct random (layer, head) pairs not in ``exclude`` (the control for a head ranking); an
    ``exclude`` pair outside ``n_layers x n_heads`` is refused (it would exclude nothing)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"k must be a whole number >= 0, got {k!r}")
    if not (is_index(n_layers) and is_index(n_heads) and n_layers > 0 and n_heads > 0):
        raise ValueError(f"n_layers and n_heads must be whole numbers >= 1, got {n_layers!r} and {n_heads!r}")
    excluded = {_check_head(pair, None, "") for pair in exclude}
    outside = sorted(pair for pair in excluded if pair[0] >= n_layers or pair[1] >= n_heads)
    if outside:
        raise ValueError(f"exclude names {outside}, outside the {n_layers} layers x {n_heads} heads drawn from (it "
                         "would exclude nothing): pass the n_layers and n_heads of the model the heads come from")
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in excluded]
    if k > len(pool):
        raise ValueError(
            f"cannot draw {k} heads from {len(pool)} candidates ({n_layers} layers x {n_heads} heads, "
            f"{len(excluded)} excluded)"
        )
    return random.Random(seed).sample(pool, k)


def same_prompt_donors(inputs: AudioTextInput, labels=None) -> Int[torch.Tensor, " batch"]:
    """For each row, another row with the identical token sequence (same prompt, same audio length) but its
    own clip: the donors for ``mode="resample"``. Rows are rotated within each group of identical prompts.

    With ``labels`` (one per row: the answer each clip supports), a row's donor is the next row of its group
    whose label differs. A donor whose clip supports the same answer leaves that answer standing whatever the
    heads carry, so it dilutes the ablation's effect by the share of same-answer donors.

    A row's donor never holds the same clip (a duplicate row would give it its own output back). Raises if a row
    has no partner (or no partner with another label, or another clip), since its "resampled" output would be its
    own."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    attention_mask = inputs.attention_mask if inputs.attention_mask is not None else torch.ones_like(inputs.input_ids)
    for row, (ids, mask) in enumerate(zip(inputs.input_ids.tolist(), attention_mask.tolist())):
        groups[(tuple(ids), tuple(mask))].append(row)
    keys = None if labels is None else row_labels(labels, len(inputs.input_ids), "labels")
    clips = row_audio_fingerprints(None, inputs)
    donors = torch.empty(len(inputs.input_ids), dtype=torch.long)
    for rows in groups.values():
        if len(rows) < 2:
            raise ValueError(
                f"row {rows[0]} has no other row with the same prompt; resample ablation needs at least two "
                "clips per prompt in the batch (same question and hint, clips of the same length)")
        for index, row in enumerate(rows):
            candidates = [other for other in rows[index + 1:] + rows[:index]
                          if clips[row] is None or clips[other] != clips[row]]  # the same clip would give its own
            if not candidates:
                raise ValueError(f"row {row} has no row with the same prompt and another clip (the others hold its "
                                 "clip): add another clip of the same length, or drop the duplicates")
            if keys is not None:
                candidates = [other for other in candidates if keys[other] != keys[row]]
                if not candidates:
                    raise ValueError(
                        f"row {row} has no row with the same prompt and another label (its label: {keys[row]!r}); "
                        "add a clip whose answer differs to the batch, or drop the row")
            donors[row] = candidates[0]
    return donors

