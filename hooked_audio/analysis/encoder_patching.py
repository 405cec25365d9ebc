"""Activation patching inside the audio encoder, on an encoder time axis.

``transformer_lens.patching`` sweeps decoder layers and positions; this sweeps encoder layers by time window
(encoder frames <-> seconds) or by head. Each cell is one forward of the corrupted input with one encoder
activation replaced by the clean run's, over the frames of a time window (of every clip in the batch) or for one
head over all frames; the metric of the patched run is returned.

Time axis: seconds from the start of each clip. Frame ``f`` of a feature row covers ``[f, f + 1) *
cfg.audio.seconds_per_frame`` seconds from that row's start; a clip longer than one feature window (Audio
Flamingo 3, Voxtral, GLM-ASR) has several rows, laid end to end, so frame ``f`` of its ``w``-th row is frame
``w * frames_per_row + f`` of the clip. Qwen-Omni encoders run their blocks on attention windows (``k`` rows per
feature row); frame ``f`` of the ``j``-th such row is frame ``j * window + f`` of its feature row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from ..audio.inputs import AudioTextInput
from ..cache import (
    AudioActivationCache, audio_layout, check_same_text, describe_audio_layout, same_audio_layout,
    warn_if_patching_rounds,
)
from ..indices import checked_layers
from .metric_value import metric_value

Metric = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EncoderPatchingResult:
    values: Float[torch.Tensor, "layer cell"]  # the metric with that cell patched in
    cells: str  # "time": cell j covers [start_s[j], end_s[j]); "head": cell j is head j
    start_s: Float[torch.Tensor, "cell"] | None
    end_s: Float[torch.Tensor, "cell"] | None
    clean: float  # the metric on the clean and on the corrupted run, for normalising
    corrupted: float

    def recovery(self) -> Float[torch.Tensor, "layer cell"]:
        """(patched - corrupted) / (clean - corrupted): 1 where a cell restores the clean metric."""
        if abs(self.clean - self.corrupted) < 1e-12:
            raise ValueError("the clean and corrupted runs give the same metric: recovery is undefined")
        return (self.values - self.corrupted) / (self.clean - self.corrupted)


def encoder_frame_times(model, n_frames: int) -> Float[torch.Tensor, "frame 2"]:
    """``[start_s, end_s]`` of each encoder frame from the start of its feature row."""
    step = model.cfg.audio.seconds_per_frame
    index = torch.arange(n_frames, dtype=torch.float64)
    return torch.stack([index * step, (index + 1) * step], dim=1).float()


def encoder_patching(
    model,
    corrupted: AudioTextInput,
    clean_cache: AudioActivationCache,
    metric: Metric,
    activation: str = "hook_resid_pre",
    by: str = "time",
    window_s: float = 0.2,
    layers: list[int] | None = None,
) -> EncoderPatchingResult:
    """Patch ``audio_encoder.blocks.{l}.{activation}`` from ``clean_cache`` into the ``corrupted`` run, cell by
    cell. ``by="time"``: windows of ``window_s`` seconds of clip time (an activation with one frame axis after
    its row: the residual stream, ``attn.hook_z``, ``mlp.hook_post``, ...; not an attention pattern, which has two);
    ``by="head"``: one head over all frames (``activation`` must have a head axis: ``attn.hook_z``,
    ``attn.hook_pattern``, ...)."""
    corrupted = model.to_inputs(corrupted)
    _check_same_audio_layout(clean_cache.inputs, corrupted, model)
    check_same_text(clean_cache.inputs, corrupted, "encoder_patching")
    n_layers = model.cfg.audio.n_layers
    layers = checked_layers(layers, n_layers, "encoder layers")
    names = [f"audio_encoder.blocks.{layer}.{activation}" for layer in layers]
    missing = [n for n in names if n not in clean_cache.cache_dict]
    if missing:
        raise KeyError(f"the clean cache lacks {missing[:3]}: run run_with_cache with them (names_filter)")
    example = clean_cache.cache_dict[names[0]]
    warn_if_patching_rounds(example, model, "encoder_patching")
    n_rows_per_window = example.shape[0] // len(clean_cache.inputs.window_rows)
    frames_per_row = example.shape[1]
    two_frame_axes = activation.endswith(("hook_pattern", "hook_attn_scores"))  # [row, head, query, key]
    if by == "time":
        if two_frame_axes:
            raise ValueError(f"{activation!r} has two frame axes (query and key), so a time window is not one slice "
                             "of it: patch the residual stream or attn.hook_z by time, or this pattern by='head'")
        if isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or not 0 < window_s < math.inf:
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
        row_offsets = _rows_before_in_clip(model.window_clips(clean_cache.inputs))
        total = (int(row_offsets.max()) + 1) * n_rows_per_window * frames_per_row
        step = model.cfg.audio.seconds_per_frame
        frames_per_cell = max(1, round(window_s / step))
        n_cells = math.ceil(total / frames_per_cell)
        start = torch.arange(n_cells) * frames_per_cell
        cells = [(int(s), int(min(s + frames_per_cell, total))) for s in start]
        start_s = start.float() * step
        end_s = torch.tensor([e for _, e in cells]).float() * step
    elif by == "head":
        if example.ndim != 4:
            raise ValueError(f"by='head' needs an activation with a head axis ([row, frame, head, d_head] or a "
                             f"pattern [row, head, query, key]), not {activation!r}")
        head_axis = 1 if two_frame_axes else 2
        cells, start_s, end_s = list(range(example.shape[head_axis])), None, None
    else:
        raise ValueError(f"by must be 'time' or 'head', got {by!r}")

    with torch.no_grad():
        clean_value = metric_value(metric(model(clean_cache.inputs)))
        corrupted_value = metric_value(metric(model(corrupted)))
        values = torch.zeros(len(layers), len(cells))
        for i, name in enumerate(names):
            clean_act = clean_cache.cache_dict[name]
            for j, cell in enumerate(cells):
                hook = (_time_patch(clean_act, cell, n_rows_per_window, row_offsets) if by == "time"
                        else _head_patch(clean_act, cell, head_axis))
                values[i, j] = metric_value(metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])))
    return EncoderPatchingResult(values, by, start_s, end_s, clean_value, corrupted_value)


def _rows_before_in_clip(window_clips: Int[torch.Tensor, "window"]) -> Int[torch.Tensor, "window"]:
    """For each feature row, how many rows of its clip come before it (0 for a clip within one window)."""
    return torch.tensor([int((window_clips[:w] == clip).sum()) for w, clip in enumerate(window_clips)])


def _time_patch(clean: torch.Tensor, frames: tuple[int, int], rows_per_window: int,
                row_offsets: Int[torch.Tensor, "window"]):
    """Replace frames ``[start, end)`` of every clip: of each feature row, the frames that fall there once the
    clip's rows are laid end to end (and each row's attention-window rows after one another)."""
    start, end = frames
    width = clean.shape[1]

    def hook(x: torch.Tensor, hook) -> torch.Tensor:
        x = x.clone()
        for row, offset in enumerate(row_offsets.tolist()):
            for j in range(rows_per_window):  # the j-th attention window of this feature row
                first = (offset * rows_per_window + j) * width  # its first frame in clip time
                lo, hi = max(start - first, 0), min(end - first, width)
                if lo < hi:
                    k = row * rows_per_window + j
                    x[k, lo:hi] = clean[k, lo:hi].to(x.device)
        return x

    return hook


def _head_patch(clean: torch.Tensor, head: int, axis: int):
    index = (slice(None),) * axis + (head,)

    def hook(x: torch.Tensor, hook) -> torch.Tensor:
        x = x.clone()
        x[index] = clean[index].to(x.device)
        return x

    return hook


def _check_same_audio_layout(clean: AudioTextInput, corrupted: AudioTextInput, model) -> None:
    """Patching frame by frame needs the same windows, frames and valid lengths in both runs."""
    spec = model.cfg.audio_inputs
    for key in filter(None, (spec.features, spec.frame_mask)):
        if clean.audio.get(key) is None or corrupted.audio.get(key) is None:
            raise ValueError(f"both runs need audio (`{key}`) to patch inside the encoder")
    theirs, ours = audio_layout(clean), audio_layout(corrupted)
    if not same_audio_layout(theirs, ours):
        raise ValueError(
            f"the clean and corrupted runs have different audio layouts ({describe_audio_layout(theirs)} vs "
            f"{describe_audio_layout(ours)}): patching by encoder frame would misalign them; use clips of the same "
            "lengths (e.g. the clean clip against silence or noise of its length)"
        )
