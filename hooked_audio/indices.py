"""Layer lists, index arrays and position masks given to the analysis helpers (and row indices of an activation
store), checked before use.

The shapes of mistake they catch all return a plausible number otherwise: a float layer (1.7) truncated to
layer 1, a negative layer or duplicated layer, a float or bool answer index taken as 0/1, and a bool mask
that arrives as a Python list or numpy array and would be read as the position indices 0 and 1."""

from __future__ import annotations

import re

import numpy as np
import torch
from jaxtyping import Bool, Int


def is_index(value) -> bool:
    """True for one integer (Python, numpy or 0-d integer tensor); False for bools and floats, even 1.0."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool
    if isinstance(value, np.ndarray):  # arrays have __index__ (it works only on 0-d integer ones)
        return value.ndim == 0 and value.dtype.kind in "iu"
    return isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, float))


def whole_number_from_text(text: str) -> int:
    """A whole number written in decimal digits (``"12"``, ``"-1"``), for command lines and SPEC strings. Python's
    ``int`` would also read ``"1_0"`` as 10; that and anything else not plain digits raises ValueError."""
    if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def checked_layers(layers, n_layers: int | None, name: str = "layers") -> list[int]:
    """``layers`` as distinct ints in ``0..n_layers-1`` (None: every layer; ``n_layers=None``: no upper
    bound known, checked when the hooks run). Floats, bools, negative layers (not counted from the end),
    duplicates (they would count a layer twice) and an empty list (hooks that do nothing) are refused."""
    return _distinct_indices(layers, n_layers, name, "layer")


def checked_heads(heads, n_heads: int, name: str = "heads") -> list[int]:
    """Head indices of one layer, checked as ``checked_layers`` checks layers (None: every head)."""
    return _distinct_indices(heads, n_heads, name, "head")


def _distinct_indices(values, n: int | None, name: str, unit: str) -> list[int]:
    if values is None:
        if n is None:
            raise ValueError(f"{name}=None means every {unit}, which needs the model's number of {unit}s")
        return list(range(n))
    if isinstance(values, (torch.Tensor, np.ndarray)):
        values = values.reshape(-1).tolist()
    elif is_index(values):
        values = [values]
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: nothing would be hooked (None means every {unit})")
    if not all(is_index(v) for v in values):
        raise TypeError(f"{name} must be integer {unit} indices, got {values!r}")
    values = [int(v) for v in values]
    bad = [v for v in values if v < 0 or (n is not None and v >= n)]
    if bad:
        where = f"outside 0..{n - 1} (there are {n} {unit}s" if n is not None else "negative ("
        raise ValueError(f"{name} {bad} {where}; negative {unit}s are refused, not counted from the end)")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} {values} names a {unit} more than once (it would be counted twice)")
    return values


def checked_count(value, name: str) -> int:
    """A count (a batch size, a number of draws or iterations) as an int >= 1; floats, bools, 0 and negatives are
    refused (they would run nothing, or return NaN)."""
    if not is_index(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer (a whole number >= 1), got {value!r}")
    return int(value)


def index_tensor(values, name: str) -> Int[torch.Tensor, "..."]:
    """``values`` (list, array or tensor of integers) as a long tensor; float and bool values are refused
    rather than truncated or read as 0/1."""
    if isinstance(values, str):
        raise TypeError(f"{name} must be integers, got the string {values!r}")
    if isinstance(values, (list, tuple)) and values and not all(is_index(v) for v in np.ravel(np.asarray(values, dtype=object))):
        raise TypeError(f"{name} must be integers, got {values!r}")
    tensor = torch.as_tensor(np.asarray(values) if isinstance(values, (list, tuple)) else values)
    if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must be integers, got {tensor.dtype} (floats are not truncated, bools are not 0/1)")
    return tensor.long()


def as_bool_mask(positions) -> Bool[torch.Tensor, "..."] | None:
    """``positions`` as a bool tensor when it is a mask in any container (a tensor, a numpy array or a
    nested list of bools); None when it is something else (indices, a string)."""
    if isinstance(positions, torch.Tensor):
        return positions if positions.dtype == torch.bool else None
    if isinstance(positions, np.ndarray):
        return torch.from_numpy(positions) if positions.dtype == np.bool_ else None
    if isinstance(positions, (list, tuple)) and len(positions):
        flat = np.ravel(np.asarray(positions, dtype=object))
        if len(flat) and all(isinstance(v, (bool, np.bool_)) for v in flat):
            return torch.as_tensor(np.asarray(positions, dtype=bool))
    return None


def position_indices(positions) -> Int[torch.Tensor, " n"]:
    """``positions`` as a 1-d long tensor of position indices (applied to every row). An integer tensor of
    0s and 1s is refused: it is almost always an attention mask that would be read as positions 0 and 1."""
    indices = index_tensor(positions, "positions")
    if isinstance(positions, torch.Tensor) and indices.numel() > 2 and set(indices.flatten().tolist()) <= {0, 1}:
        raise TypeError(
            "positions is an integer tensor of 0s and 1s (an attention mask?): pass a bool mask "
            "(positions.bool()) or the position indices themselves"
        )
    if indices.ndim != 1:
        raise ValueError(
            f"position indices must be 1-d (applied to every row), got shape {tuple(indices.shape)}; for positions "
            "that differ by row pass a bool mask [batch, pos]"
        )
    if len(indices) == 0:
        raise ValueError("positions is empty: nothing would be changed")
    return indices


def rows_on_padding(selected: Bool[torch.Tensor, "batch pos"], attention_mask: torch.Tensor | None) -> list[int]:
    """The rows where a selected position is padding (attention mask 0); none without a mask. ``selected`` may be
    one row for all, and wider than the mask (its first columns are read)."""
    if attention_mask is None:
        return []
    padding = ~attention_mask.cpu().bool()
    return (selected.cpu()[:, : padding.shape[1]] & padding).any(-1).nonzero().flatten().tolist()


def is_subsequence(short: list, long: list) -> bool:
    """Whether ``short`` is ``long`` with some items left out (order kept)."""
    remaining = iter(long)
    return all(item in remaining for item in short)


def refuse_marked_padding(selected: Bool[torch.Tensor, "batch pos"], attention_mask: torch.Tensor | None,
                          what: str) -> None:
    """Refuse a mask of key (or target) positions that marks padding: nothing there means anything, and a mask of
    other inputs (e.g. the same rows padded on the other side) looks like that; one of these inputs is taken once
    its padding is dropped."""
    rows = rows_on_padding(selected, attention_mask)
    if rows:
        raise ValueError(f"{what} marks padding positions in rows {rows}: a mask of other inputs (e.g. the same rows "
                         "padded on the other side) looks like this, and would act on other columns. If it is these "
                         "inputs' own, drop the padding (mask & inputs.attention_mask.bool()); else build it from "
                         "these inputs")


def rows_padded_at(columns: Int[torch.Tensor, "n"], attention_mask: torch.Tensor | None) -> list[int]:
    """The rows where one of ``columns`` (the same for every row) is padding; none without a mask."""
    if attention_mask is None:
        return []
    return (~attention_mask.cpu().bool()[:, columns.cpu()]).any(-1).nonzero().flatten().tolist()
