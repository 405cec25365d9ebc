"""``AudioTextInput``: one batch of decoder inputs with its audio placeholders already expanded,
the family's audio feature tensors, and everything known about where the audio is.

Positions (the design brief's contract): per batch row, the audio spans ``(start, end, clip)`` in the
decoder sequence (end exclusive), the text positions around them, the last real position, and for
every audio token the seconds of its clip it covers. The object also behaves like the token tensor
where TransformerLens expects one (``.shape``, ``.size()``), so ``transformer_lens.patching`` can pass
it positionally to ``model.run_with_hooks`` and both runs carry their audio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from jaxtyping import Bool, Float, Int

from ..indices import is_index


@dataclass(frozen=True)
class AudioSpan:
    """Audio tokens ``[start, end)`` of one batch row, coming from clip ``clip`` (batch-global index)."""

    start: int
    end: int
    clip: int

    def __len__(self) -> int:
        return self.end - self.start


@dataclass
class AudioTextInput:
    input_ids: Int[torch.Tensor, "batch pos"]
    attention_mask: Int[torch.Tensor, "batch pos"] | None
    audio: dict[str, torch.Tensor] = field(default_factory=dict)  # the family's feature kwargs
    audio_token_id: int = -1
    seconds_per_token: float = 0.0
    position_ids: Int[torch.Tensor, "batch pos"] | None = None
    # The batch row each feature row (``window``) of the audio belongs to; set by the model, which knows how
    # many tokens each window yields. None for text-only input.
    window_rows: Int[torch.Tensor, "window"] | None = None

    # --- tensor-like behaviour for TransformerLens utilities ----------------------------------
    @property
    def shape(self) -> torch.Size:
        return self.input_ids.shape

    def size(self, dim: int | None = None):
        return self.input_ids.shape if dim is None else self.input_ids.shape[dim]

    @property
    def ndim(self) -> int:
        return self.input_ids.ndim

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    def __getitem__(self, rows) -> "AudioTextInput":
        """Batch rows, as for a token tensor (``inputs[1:2]``, ``inputs[[0, 2]]``), each with its own audio."""
        if isinstance(rows, tuple):
            raise TypeError("an AudioTextInput indexes batch rows only; index input_ids for positions")
        return self.select_rows(torch.arange(self.shape[0])[rows].reshape(-1).tolist())

    def select_rows(self, rows: list[int]) -> "AudioTextInput":
        """The input of some batch rows (in increasing order; negative rows count from the end), each keeping its
        own audio feature rows."""
        n, rows = self.shape[0], list(rows)
        if not all(is_index(r) for r in rows):
            raise TypeError(f"rows must be integer row indices, got {rows!r}")
        rows = [int(r) for r in rows]
        outside = [r for r in rows if not -n <= r < n]
        if outside:
            raise IndexError(f"rows {outside} are outside the batch's {n} rows")
        rows = [r % n for r in rows]
        if sorted(set(rows)) != list(rows):
            raise ValueError(f"rows must be increasing and distinct, got {rows}")
        index = torch.as_tensor(rows, dtype=torch.long)
        pick = lambda t: None if t is None else t[index.to(t.device)]  # noqa: E731
        audio, window_rows = {}, None
        if self.audio:
            if self.window_rows is None:
                raise ValueError("this input does not know which batch row each audio window belongs to")
            keep = torch.isin(self.window_rows, index)
            audio = {k: v[keep.to(v.device)] for k, v in self.audio.items()}
            window_rows = torch.searchsorted(index, self.window_rows[keep])  # renumbered 0..len(rows)-1
            if not len(window_rows):
                audio, window_rows = {}, None
        return replace(
            self, input_ids=pick(self.input_ids), attention_mask=pick(self.attention_mask),
            position_ids=pick(self.position_ids), audio=audio, window_rows=window_rows,
        )

    def with_token_rows(self, rows: list[list[int]], pad_id: int, keep_audio: bool = True) -> "AudioTextInput":
        """The input with each row's real tokens replaced by ``rows[i]`` (e.g. after cutting a span out), re-padded
        on the side this input is padded on; ``keep_audio=False`` also drops the audio."""
        if self.position_ids is not None:
            raise ValueError("inputs carry explicit position_ids, which cannot be recomputed after changing the tokens")
        if len(rows) != self.shape[0]:
            raise ValueError(f"rows must give one token list per row ({self.shape[0]}), got {len(rows)}")
        right_padded = self.attention_mask is not None and bool((self.attention_mask[:, -1] == 0).any())
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=self.input_ids.dtype)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            where = slice(0, len(r)) if right_padded else slice(width - len(r), width)
            ids[i, where], attention[i, where] = torch.tensor(r, dtype=ids.dtype), 1
        changed = replace(self, input_ids=ids.to(self.device), attention_mask=attention.to(self.device))
        return changed if keep_audio else replace(changed, audio={}, window_rows=None)

    def real_token_rows(self) -> list[list[int]]:
        """Each row's tokens without its padding."""
        if self.attention_mask is None:
            return self.input_ids.cpu().tolist()
        mask = self.attention_mask.cpu().bool()
        return [self.input_ids[row].cpu()[mask[row]].tolist() for row in range(self.shape[0])]

    def to(self, device) -> "AudioTextInput":
        move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return replace(
            self,
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            position_ids=move(self.position_ids),
            audio={k: move(v) for k, v in self.audio.items()},
            window_rows=self.window_rows,
        )

    @property
    def has_audio(self) -> bool:
        return bool(self.audio)

    def same_audio_as(self, other: "AudioTextInput") -> bool:
        """Whether ``other`` carries exactly these clips (the same audio tensors, in the same order): the
        condition for comparing two prompts about one clip."""
        return set(self.audio) == set(other.audio) and all(
            self.audio[k].shape == other.audio[k].shape and torch.equal(self.audio[k].cpu(), other.audio[k].cpu())
            for k in self.audio)

    # --- positions -------------------------------------------------------------------------------
    @property
    def audio_mask(self) -> Bool[torch.Tensor, "batch pos"]:
        return self.input_ids == self.audio_token_id

    @property
    def real_mask(self) -> Bool[torch.Tensor, "batch pos"]:
        """Positions that are tokens, not padding (all of them without an attention mask)."""
        return torch.ones_like(self.audio_mask) if self.attention_mask is None else self.attention_mask.bool()

    @property
    def text_mask(self) -> Bool[torch.Tensor, "batch pos"]:
        return self.real_mask & ~self.audio_mask

    @property
    def audio_spans(self) -> list[list[AudioSpan]]:
        """Per row, the runs of audio placeholders, numbered by clip in row-major order (as HF splices)."""
        spans, clip = [], 0
        for row in self.audio_mask.cpu().tolist():
            row_spans = []
            for start, end in spans_of(row):
                row_spans.append(AudioSpan(start, end, clip))
                clip += 1
            spans.append(row_spans)
        return spans

    @property
    def audio_positions(self) -> list[Int[torch.Tensor, "n_audio"]]:
        """Per row, the decoder positions holding audio tokens."""
        return [torch.nonzero(row).flatten() for row in self.audio_mask]

    @property
    def last_positions(self) -> Int[torch.Tensor, "batch"]:
        """Index of the last real (non-padding) token of each row, for left or right padding."""
        if self.attention_mask is None:
            return torch.full((self.shape[0],), self.shape[1] - 1, device=self.device)
        positions = torch.arange(self.shape[1], device=self.device).expand(self.shape)
        return torch.where(self.attention_mask.bool(), positions, -1).max(dim=1).values

    def token_times(self) -> Float[torch.Tensor, "batch pos 2"]:
        """``[start_s, end_s]`` within its clip for every audio position; NaN at text positions."""
        times = torch.full((*self.shape, 2), float("nan"))
        for row, row_spans in enumerate(self.audio_spans):
            for span in row_spans:
                index = torch.arange(len(span), dtype=torch.float64)
                times[row, span.start : span.end, 0] = (index * self.seconds_per_token).float()
                times[row, span.start : span.end, 1] = ((index + 1) * self.seconds_per_token).float()
        return times

    def time_to_position(self, row: int, seconds: float, clip_in_row: int | None = None) -> int:
        """The decoder position of the audio token covering ``seconds`` of a row's ``clip_in_row``-th clip,
        counted within the row from 0 (not ``AudioSpan.clip``, which counts across the batch); it may be left out
        where the row has one clip. A time on a boundary between two tokens is the later token's start."""
        spans = self.audio_spans[row]
        if clip_in_row is None:
            if len(spans) != 1:
                raise ValueError(f"row {row} has {len(spans)} clips: pass clip_in_row= (0..{len(spans) - 1}, counted "
                                 "within the row) for the clip whose time this is")
            clip_in_row = 0
        if not 0 <= clip_in_row < len(spans):
            raise ValueError(f"row {row} has {len(spans)} clip(s); clip_in_row={clip_in_row} is not one of them")
        span = spans[clip_in_row]
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite time >= 0 within the clip, got {seconds}")
        # floor with a tolerance far below a token (float32 start times and 2.32 / 0.08 = 28.999...)
        offset = math.floor(seconds / self.seconds_per_token + 1e-4)
        if not 0 <= offset < len(span):
            raise ValueError(
                f"{seconds} s is outside clip {clip_in_row} of row {row}, "
                f"which covers 0–{len(span) * self.seconds_per_token:.2f} s"
            )
        return span.start + offset


def spans_of(flags: list[bool]) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of True values (end exclusive)."""
    runs, start = [], None
    for pos, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = pos
        elif not flag and start is not None:
            runs.append((start, pos))
            start = None
    return runs


def as_tensor_dict(inputs: Mapping) -> dict[str, torch.Tensor]:
    """A processor's ``BatchFeature`` (or any mapping) as a plain dict of tensors: numpy arrays become tensors,
    other values that are not tensors (a processor's metadata) are left out, but an input the model reads
    (ids, masks, features) given as a list is refused rather than dropped."""
    return {k: tensor for k, v in dict(inputs).items() if (tensor := as_input_tensor(k, v)) is not None}


def as_input_tensor(name: str, value) -> torch.Tensor | None:
    """``value`` as a tensor where it is one or a numpy array; None for other values, except that a model input
    (ids, masks, features) as a list or tuple is a TypeError (dropping it would run without it, e.g. unmasked)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (list, tuple)) and _is_model_input(name):
        raise TypeError(f"{name} is a {type(value).__name__}: pass tensors (the processor's return_tensors='pt', "
                        "or torch.as_tensor)")
    return None


def _is_model_input(name: str) -> bool:
    return name in ("input_ids", "attention_mask", "position_ids") or "feature" in name or name.endswith("_mask")
