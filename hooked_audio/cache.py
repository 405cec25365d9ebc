"""``AudioActivationCache``: TransformerLens's ``ActivationCache`` that knows where the audio is, and the
layout of every activation it holds.

Everything ``ActivationCache`` does works unchanged (``cache["pattern", 3]``, ``accumulated_resid``,
``decompose_resid``, ``stack_head_results``, ``logit_attrs``, patching). On top of that:

- Layouts. Not every activation's leading axis is the batch row:

    ``batch``        decoder activations ``[batch, pos, ...]`` (patterns/scores ``[batch, head, q_pos, k_pos]``)
    ``audio_token``  ``hook_audio_embeds`` ``[audio_tok, d_model]``: the audio tokens of all rows, row-major
    ``window``       encoder activations ``[window, ...]``: one row per feature row (a clip, or one window
                     of a long clip); Qwen-Omni's encoder blocks run ``k`` attention windows per feature row

  ``remove_batch_dim``, ``apply_slice_to_batch_dim`` and ``run_with_cache(positions=...)`` respect them: a
  row's audio tokens and windows go with the row.
- Positions. ``audio_spans``, ``audio_positions``, ``last_positions``, ``token_times()`` and
  ``to_str_tokens``-style indexing describe *this cache's own* positions and rows: after
  ``positions="audio"`` position 0 of every activation is the first audio token, and ``cache.audio_positions``
  says so. ``cache.positions`` maps them back to positions of the full run (``cache.inputs``).
- Direct logit attribution is exact without weight folding: ``apply_ln_to_stack`` applies the norm's weight
  as well as its cached scale (TransformerLens assumes the weight was folded into the next layer).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from transformer_lens import ActivationCache
from transformer_lens.utilities import Slice

from .audio.inputs import AudioSpan, AudioTextInput, spans_of

Layout = Literal["batch", "audio_token", "window"]

# Every tensor handed out by a cache, by id, with the layout of the run it came from: for a decoder activation
# the run's audio mask and, for a cache restricted to some positions, those positions; for an audio-side one
# (one row per feature window, independent of the prompt) the run's audio feature layout. A hook holding one (as
# ``transformer_lens.patching``'s do) is checked against the run it patches (``check_patch_alignment``).
# Entries go when their tensor does.
_SOURCES: dict[int, tuple["weakref.ref[torch.Tensor]", "Source"]] = {}


@dataclass(frozen=True)
class Source:
    audio_mask: Bool[torch.Tensor, "batch pos"] | None  # decoder activations: where the run's audio was
    positions: torch.Tensor | None = None  # a cache restricted to these positions
    audio_layout: dict | None = None  # audio-side activations: the run's feature shapes and frame masks


def _remember(tensor: torch.Tensor, source: Source) -> None:
    key = id(tensor)
    _SOURCES[key] = (weakref.ref(tensor, lambda _, key=key: _SOURCES.pop(key, None)), source)


def _source(value) -> Source | None:
    """Where a tensor a cache handed out came from, else None."""
    entry = _SOURCES.get(id(value)) if isinstance(value, torch.Tensor) else None
    return entry[1] if entry is not None and entry[0]() is value else None


def audio_layout(inputs: AudioTextInput) -> dict[str, tuple]:
    """What an audio-side activation's frames depend on: each audio input's shape, and the values of the integer
    ones (frame masks, lengths); the features' values are what patching changes."""
    return {key: (tuple(t.shape), None if t.is_floating_point() else t.detach().cpu())
            for key, t in sorted(inputs.audio.items())}


def same_audio_layout(a: dict, b: dict) -> bool:
    """Whether two ``audio_layout`` results are the same (shapes, and integer tensors' values)."""
    def same_values(x, y) -> bool:  # None for floating tensors: their shape is what counts
        return x is None and y is None or x is not None and y is not None and torch.equal(x, y)

    return a.keys() == b.keys() and all(a[k][0] == b[k][0] and same_values(a[k][1], b[k][1]) for k in a)


def _activation_name(name: str) -> str:
    """The hook point a cache key belongs to: ``incl_bwd``'s ``name + "_grad"`` has its activation's layout."""
    return name[: -len("_grad")] if name.endswith("_grad") else name


def activation_layout(name: str) -> Layout:
    """Decoder hook points (``hook_embed``, ``blocks.*``, ``ln_final.*``) are per batch row;
    ``hook_audio_embeds`` is per audio token; every other point is on the audio side (the encoder, Music
    Flamingo's time rotary, a projector's own hooks) and is per feature row. A gradient (``*_grad``) has the
    layout of its activation."""
    name = _activation_name(name)
    if name == "hook_embed" or name.startswith(("blocks.", "ln_final.")):
        return "batch"
    if name == "hook_audio_embeds":
        return "audio_token"
    return "window"


def position_dims(name: str) -> tuple[int, ...]:
    """The decoder-position axes of a ``batch``-layout activation or its gradient (with its batch axis)."""
    return (2, 3) if _activation_name(name).endswith(("hook_pattern", "hook_attn_scores")) else (1,)


class AudioActivationCache(ActivationCache):
    def __init__(
        self,
        cache_dict: dict[str, torch.Tensor],
        model,
        inputs: AudioTextInput,
        has_batch_dim: bool = True,
        positions: Int[torch.Tensor, "pos"] | None = None,
    ):
        """``inputs``: the run's full input; ``positions``: the decoder positions of it that this cache
        keeps, in order (None: all)."""
        super().__init__(cache_dict, model, has_batch_dim=has_batch_dim)
        self.inputs = inputs
        self.positions = torch.arange(inputs.shape[1]) if positions is None else torch.as_tensor(positions).cpu()

    # --- tensors, remembered for the alignment check ---------------------------------------------
    def __getitem__(self, key) -> torch.Tensor:
        try:
            value = super().__getitem__(key)
        except KeyError as error:
            name = error.args[0] if error.args else key
            if isinstance(name, str) and name.endswith("attn.hook_result"):
                raise KeyError(f"{name!r} is not cached: a full run_with_cache() leaves hook_result out, as "
                               "TransformerLens does; call model.set_use_attn_result(True) first, or name it in "
                               "names_filter") from None
            if isinstance(name, str) and _activation_name(name).endswith("mlp.hook_post") and self._has_moe_mlp(name):
                raise KeyError(f"{name!r} does not exist: this decoder's MLPs are mixtures of experts, which have no "
                               "per-neuron activations (each expert sees other tokens). Decompose by MLP layer "
                               "(get_full_resid_decomposition(expand_neurons=False), decompose_resid) or by expert "
                               "slot (blocks.{l}.mlp.hook_expert_out)") from None
            raise
        if isinstance(value, torch.Tensor):
            name = key if isinstance(key, str) else next((n for n, v in self.cache_dict.items() if v is value), "")
            if activation_layout(name) == "window":  # encoder frames: independent of the prompt's positions
                _remember(value, Source(None, audio_layout=audio_layout(self.inputs)))
            elif len(self.positions) == self.inputs.shape[1]:
                _remember(value, Source(self.inputs.audio_mask.cpu()))
            else:
                _remember(value, Source(self.inputs.audio_mask.cpu(), self.positions))  # refused as a patch source
        return value

    def _has_moe_mlp(self, name: str) -> bool:
        from .components.moe import MoEMLP

        parts = name.split(".")
        blocks = getattr(self.model, "blocks", None)
        if parts[0] != "blocks" or blocks is None or not parts[1].isdigit() or int(parts[1]) >= len(blocks):
            return False
        return isinstance(blocks[int(parts[1])].mlp, MoEMLP)

    def require(self, user: str, names: list[str] | tuple[str, ...] = ()) -> None:
        """Refuse, naming ``user``, a cache an analysis cannot read right: without its batch dimension, restricted
        to some positions (its rows would no longer line up with ``inputs``), or lacking any of ``names``."""
        if not self.has_batch_dim:
            raise ValueError(f"{user} needs a cache with its batch dimension")
        if len(self.positions) != self.inputs.shape[1]:
            raise ValueError(f"{user} needs a cache of every position (run_with_cache without positions=)")
        missing = [name for name in names if name not in self.cache_dict]
        if missing:
            raise ValueError(f"the cache lacks {missing[:4]}{'...' if len(missing) > 4 else ''}; "
                             f"run_with_cache with names_filter including them")

    # --- layouts ---------------------------------------------------------------------------------
    def row_of(self, name: str) -> Int[torch.Tensor, "leading"]:
        """The batch row (of ``self.inputs``) each leading-axis entry of activation ``name`` belongs to."""
        act = self.cache_dict[name]
        layout = activation_layout(name)
        if layout == "batch":
            return torch.arange(self.inputs.shape[0])
        if layout == "audio_token":
            return self._audio_token_rows()
        window_rows = self.inputs.window_rows
        if window_rows is None or act.shape[0] % len(window_rows):
            raise ValueError(f"cannot tell which batch row each of the {act.shape[0]} rows of {name!r} belongs to")
        return window_rows.repeat_interleave(act.shape[0] // len(window_rows))

    def _audio_token_rows(self) -> Int[torch.Tensor, "audio_tok"]:
        return torch.nonzero(self._held_audio())[:, 0]

    def _held_audio(self) -> Bool[torch.Tensor, "batch full_pos"]:
        """The audio positions of the full run whose tokens this cache holds (``hook_audio_embeds`` rows)."""
        full = self.inputs.audio_mask.cpu()
        held = torch.zeros_like(full)
        held[:, self.positions] = full[:, self.positions]
        return held

    def remove_batch_dim(self, batch_size: int | None = None) -> "AudioActivationCache":
        if not self.has_batch_dim:
            raise ValueError("the batch dimension is already removed")
        if self.inputs.shape[0] != 1:
            raise ValueError(f"remove_batch_dim needs a batch of 1, the cache holds {self.inputs.shape[0]} rows")
        for name, act in self.cache_dict.items():
            if activation_layout(name) == "batch":  # audio tokens and windows all belong to row 0 already
                self.cache_dict[name] = act[0]
        self.has_batch_dim = False
        return self

    def apply_slice_to_batch_dim(self, batch_slice) -> "AudioActivationCache":
        """A cache of some batch rows: each row keeps its own audio tokens, encoder windows and metadata."""
        if not isinstance(batch_slice, Slice):
            batch_slice = Slice(batch_slice)
        if not self.has_batch_dim:
            raise ValueError("this cache has no batch dimension to slice")
        rows = batch_slice.apply(torch.arange(self.inputs.shape[0]))
        rows = rows.reshape(-1)
        keep = {}
        for name, act in self.cache_dict.items():
            if activation_layout(name) == "batch":
                keep[name] = act[rows]
            else:
                owner = self.row_of(name)
                keep[name] = act[torch.isin(owner, rows).to(act.device)]
        if not torch.equal(rows.sort().values, rows):
            raise ValueError(f"batch rows must be in increasing order to keep the audio aligned, got {rows.tolist()}")
        sliced = AudioActivationCache(keep, self.model, self.inputs.select_rows(rows.tolist()), True, self.positions)
        # an int takes one row and drops the batch axis, as TransformerLens (a list or slice keeps it)
        return sliced.remove_batch_dim() if batch_slice.mode == "int" else sliced

    def restrict_positions(self, positions: Int[torch.Tensor, "pos"]) -> "AudioActivationCache":
        """Keep only some decoder positions (of this cache) in every activation with a position axis, and the
        audio tokens at them; encoder activations stay whole."""
        positions = torch.as_tensor(positions).cpu().long()
        n_pos = len(self.positions)
        if positions.ndim != 1 or len(positions) == 0:
            raise ValueError(f"positions must be a non-empty list of indices, got shape {tuple(positions.shape)}")
        if bool(((positions < -n_pos) | (positions >= n_pos)).any()):
            raise IndexError(f"positions {positions.tolist()} are outside the {n_pos} positions of this cache")
        positions = positions % n_pos
        if len(positions.unique()) != len(positions) or not torch.equal(positions.sort().values, positions):
            raise ValueError(f"positions must be increasing and distinct, got {positions.tolist()}")
        shift = 0 if self.has_batch_dim else 1
        keep = {}
        for name, act in self.cache_dict.items():
            layout = activation_layout(name)
            if layout == "batch":
                for dim in position_dims(name):
                    act = act.index_select(dim - shift, positions.to(act.device))
            elif layout == "audio_token":  # keep the audio tokens whose positions stay
                held = self._held_audio()
                kept = torch.zeros_like(held)
                kept[:, self.positions[positions]] = held[:, self.positions[positions]]
                act = act[kept[held].to(act.device)]
            keep[name] = act
        return AudioActivationCache(keep, self.model, self.inputs, self.has_batch_dim, self.positions[positions])

    # --- positions, as this cache holds them ------------------------------------------------------
    def _view(self, mask: Bool[torch.Tensor, "batch full_pos"]) -> Bool[torch.Tensor, "batch pos"]:
        return mask.cpu()[:, self.positions]

    def _per_row(self, value: list):
        return value if self.has_batch_dim else value[0]

    @property
    def audio_mask(self) -> Bool[torch.Tensor, "*batch pos"]:
        mask = self._view(self.inputs.audio_mask)
        return mask if self.has_batch_dim else mask[0]

    @property
    def audio_spans(self) -> list[list[AudioSpan]] | list[AudioSpan]:
        """Per row, the runs of audio tokens among this cache's positions, numbered by clip as in the run."""
        full = self.inputs.audio_spans
        spans = []
        for row in range(len(full)):
            clip_at = {pos: span.clip for span in full[row] for pos in range(span.start, span.end)}
            clips = [clip_at.get(int(pos)) for pos in self.positions]  # None at text positions
            row_spans = []
            for index, clip in enumerate(clips):  # a new span where the clip changes, even between adjacent positions
                if clip is None:
                    continue
                if index and clips[index - 1] == clip:
                    row_spans[-1] = AudioSpan(row_spans[-1].start, index + 1, clip)
                else:
                    row_spans.append(AudioSpan(index, index + 1, clip))
            spans.append(row_spans)
        return self._per_row(spans)

    @property
    def audio_positions(self) -> list[Int[torch.Tensor, "n_audio"]] | Int[torch.Tensor, "n_audio"]:
        """Per row, this cache's positions that hold audio tokens."""
        return self._per_row([torch.nonzero(row).flatten() for row in self._view(self.inputs.audio_mask)])

    @property
    def last_positions(self) -> Int[torch.Tensor, "*batch"]:
        """Per row, this cache's position of the run's last real token (an error if it was not kept)."""
        full_last = self.inputs.last_positions.cpu()
        hits = self.positions[None, :] == full_last[:, None]
        if not bool(hits.any(1).all()):
            raise ValueError(
                "this cache does not hold the last position of every row (run_with_cache(positions=...) dropped it); "
                "use cache.inputs.last_positions for positions of the full run"
            )
        last = hits.float().argmax(1)
        return last if self.has_batch_dim else last[0]

    def token_times(self) -> Float[torch.Tensor, "*batch pos 2"]:
        """``[start_s, end_s]`` within its clip for every audio position of this cache; NaN at text positions."""
        times = self.inputs.token_times()[:, self.positions]
        return times if self.has_batch_dim else times[0]

    def __repr__(self) -> str:
        n_audio = [len(p) for p in (self.audio_positions if self.has_batch_dim else [self.audio_positions])]
        return f"AudioActivationCache({len(self.cache_dict)} activations, audio tokens per row {n_audio})"

    # --- exact direct logit attribution without folding -------------------------------------------
    def apply_ln_to_stack(self, residual_stack, layer=None, mlp_input=False, pos_slice=None, batch_slice=None,
                          has_batch_dim=True, recompute_ln=False):
        """TransformerLens's ``apply_ln_to_stack`` (divide by the cached scale), then the norm's weight, so the
        result is exactly what the norm makes of each component (TL leaves the weight to ``fold_ln``)."""
        out = super().apply_ln_to_stack(residual_stack, layer, mlp_input, pos_slice, batch_slice, has_batch_dim,
                                        recompute_ln)
        n_layers = self.model.cfg.n_layers
        if layer is None or layer == -1:
            layer = n_layers
        if recompute_ln and layer == n_layers:  # TL ran the real ln_final, weight included
            return out
        return out * self._norm_weight(layer, mlp_input).to(out.dtype)

    def _norm_weight(self, layer: int | None, mlp_input: bool) -> Float[torch.Tensor, "d_model"]:
        """The weight of the norm that reads the residual stream at ``layer`` (``n_layers``/None: ``ln_final``)."""
        n_layers = self.model.cfg.n_layers
        if layer is None or layer == -1 or layer == n_layers:
            return self.model.ln_final.w
        return getattr(self.model.blocks[layer], "ln2" if mlp_input else "ln1").w

    def _stack_neuron_results_apply_ln_projected(self, layer, pos_slice, neuron_slice, project_2d, mlp_input=False):
        """TransformerLens's fused norm-and-project path of ``stack_neuron_results(apply_ln=True,
        project_output_onto=...)`` (also under ``get_full_resid_decomposition``) divides by the cached scale
        only; the norm's weight goes into the projection, ``(x / s * w) @ p = (x / s) @ (w * p)``, so that it is
        exact without folding, as ``apply_ln_to_stack`` is."""
        weight = self._norm_weight(layer, mlp_input).to(device=project_2d.device, dtype=project_2d.dtype)
        return super()._stack_neuron_results_apply_ln_projected(
            layer, pos_slice, neuron_slice, weight[:, None] * project_2d, mlp_input
        )


def check_cache_model(cache, model, user: str) -> None:
    """Refuse ``model`` where it is not the model that made ``cache`` (any TransformerLens cache): ``user`` would
    normalise the residuals with one model's final norm and read them with another's unembedding."""
    if getattr(cache, "model", model) is not model:
        raise ValueError(f"{user}: this cache was made by another model than the one passed; pass the cache's own "
                         "model (cache.model), or run run_with_cache with this model")


def warn_if_patching_rounds(value: torch.Tensor, model, user: str) -> None:
    """Warn where cached activations are of a lower precision than the model they are patched into (a
    ``cache_dtype``): the patch writes them rounded, so even a value patched onto itself changes the output."""
    run_dtype = model.cfg.dtype
    if value.is_floating_point() and torch.finfo(value.dtype).eps > torch.finfo(run_dtype).eps:
        warnings.warn(f"{user}: the cache holds {value.dtype} activations, written rounded into this {run_dtype} run: "
                      f"the patch is exact only to {value.dtype}'s precision (a value patched onto itself changes the "
                      "output). Cache in the model's dtype (leave cache_dtype unset) for exact patches", stacklevel=3)


def check_patch_alignment(hook_fns, inputs: AudioTextInput) -> None:
    """Refuse a hook that carries activations cached from a run whose audio sits elsewhere: patching them by
    position into this run would put audio where text is (or a 2 s clip over a 4 s one) without an error.
    Likewise a hook built for other inputs (a ``functools.partial`` holding an ``AudioTextInput``: masking,
    enrichment, steering at text positions), which would act on that input's positions, not this run's. A
    partial's ``check_inputs`` keyword (a function of the run's inputs) states any other condition of its hook."""
    # every forward runs this: each hook function once (one is often installed at every layer), and nothing is
    # computed for hooks that hold nothing to check
    run_layout = None
    for fn in {id(fn): fn for fn in hook_fns}.values():
        check_inputs = getattr(fn, "keywords", {}).get("check_inputs")
        if check_inputs is not None:  # a hook's own condition on the run's inputs
            check_inputs(inputs)
        for value in [*getattr(fn, "args", ()), *getattr(fn, "keywords", {}).values()]:
            if isinstance(value, AudioTextInput):
                _check_built_for(value, inputs)
                continue
            source = _source(value)
            if source is None:
                continue
            if source.audio_layout is not None:
                run_layout = run_layout or audio_layout(inputs)  # once per forward, and only where it is needed
                if not same_audio_layout(source.audio_layout, run_layout):
                    raise ValueError(
                        "a hook patches in audio-encoder activations cached from a run whose audio has another layout "
                        f"(cached: {describe_audio_layout(source.audio_layout)}; this run: {describe_audio_layout(run_layout)}): "
                        "frame by frame they would put one clip's frames over another's, or over padding. Use clips "
                        "of the same lengths in both runs (e.g. the clean clip against silence or noise of its length)")
                continue
            theirs, kept = source.audio_mask, source.positions
            if kept is not None:
                raise ValueError(
                    f"a hook patches in activations from a cache restricted to {len(kept)} of its run's "
                    f"{theirs.shape[1]} positions (run_with_cache(positions=...); it holds positions "
                    f"{kept[:4].tolist()}{'...' if len(kept) > 4 else ''}), so patching it by position would put "
                    "each activation at the wrong position. Patch from a cache of every position "
                    "(run_with_cache without positions=), or index the activation yourself and hold a copy (.clone())"
                )
            _check_same_audio_positions(
                theirs, inputs.audio_mask.cpu(), "a hook patches in activations cached from a run whose audio positions differ from "
                "this run's", ("cached", "this run"))


def describe_audio_layout(layout: dict) -> str:
    parts = []
    for key, (shape, values) in layout.items():
        if values is None:
            parts.append(f"{key} {list(shape)}")
        else:  # a frame mask by its valid lengths; lengths as they are
            parts.append(f"{key} {list(shape)} ({(values.long().sum(-1) if values.ndim > 1 else values).tolist()})")
    return ", ".join(parts) or "no audio"


def check_same_audio_positions(source: AudioTextInput, target: AudioTextInput) -> None:
    """Refuse a pair of runs (clean and corrupted) whose audio placeholders sit at different positions, which
    position-wise patching or its estimate would misalign."""
    _check_same_audio_positions(source.audio_mask.cpu(), target.audio_mask.cpu(),
                                "the clean and corrupted inputs' audio positions differ", ("clean", "corrupted"))


def check_same_text(clean: AudioTextInput, corrupted: AudioTextInput, user: str) -> None:
    """Refuse corrupted inputs that are not the clean ones with other audio: methods that corrupt the audio only
    (causal tracing, encoder patching) compare each row with its own clean run, so another row's prompt there (the
    same prompts in another order) or another padding side (the metric reads the clean run's positions) would be
    read as the audio's effect."""
    if clean.shape != corrupted.shape:
        rows = list(range(min(clean.shape[0], corrupted.shape[0])))
    else:
        differ = (clean.input_ids.cpu() != corrupted.input_ids.cpu()) | (clean.real_mask.cpu() != corrupted.real_mask.cpu())
        rows = differ.any(-1).nonzero().flatten().tolist()
    if rows:
        raise ValueError(f"{user} corrupts the audio only, but the corrupted inputs' tokens or padding differ from the "
                         f"clean inputs' in rows {rows[:8]} (the same prompts in another order, another padding side?): "
                         "build them from the clean inputs (silence_like(clean), or the same prompts with other clips)")


def _check_same_audio_positions(theirs: torch.Tensor, ours: torch.Tensor, what: str, names: tuple[str, str]) -> None:
    if theirs.shape == ours.shape and torch.equal(theirs, ours):
        return
    raise ValueError(
        f"{what} ({names[0]}: {theirs.shape[1]} positions, audio at {_describe(theirs)}; {names[1]}: {ours.shape[1]} "
        f"positions, audio at {_describe(ours)}). Patching by position would misalign audio and text: use "
        "clean and corrupted inputs with the same prompt and clip lengths (e.g. replace each clip by "
        "silence or noise of the same length)"
    )


def check_final_position_is_last(inputs: AudioTextInput) -> None:
    """A hook built without inputs acts on the final column, which is each row's last real position only when
    no row ends in padding (left padding, or none)."""
    ends_early = (inputs.last_positions.cpu() != inputs.shape[1] - 1).nonzero().flatten().tolist()
    if ends_early:
        raise ValueError(
            f"a hook built without inputs= acts on the final position, but rows {ends_early} end in padding (right "
            "padding): it would act on a padding position there. Build it with inputs= (the inputs you run), or pad "
            "on the left")


def same_layout(a: AudioTextInput, b: AudioTextInput) -> bool:
    """Whether two inputs hold audio and text at the same positions of every row (their tokens may differ)."""
    return a is b or (a.shape == b.shape and all(
        torch.equal(getattr(a, mask).cpu(), getattr(b, mask).cpu()) for mask in ("audio_mask", "text_mask")))


def _check_built_for(built_for: AudioTextInput, inputs: AudioTextInput) -> None:
    if same_layout(built_for, inputs):
        return
    raise ValueError(
        f"a hook was built for other inputs ({built_for.shape[0]} rows x {built_for.shape[1]} positions, audio at "
        f"{_describe(built_for.audio_mask.cpu())}) than this run's ({inputs.shape[0]} x {inputs.shape[1]}, audio at "
        f"{_describe(inputs.audio_mask.cpu())}): it would act on that input's positions. Build the hooks from the "
        "inputs you run (e.g. audio_masking_hooks(inputs) for these inputs, or per batch)"
    )


def _describe(audio_mask: Bool[torch.Tensor, "batch pos"]) -> str:
    return "; ".join(",".join(f"{a}-{b}" for a, b in spans_of(row)) or "none" for row in audio_mask.tolist())
