"""One label per row (a task, a stratum, a prompt layout), checked and made comparable by value.

Helpers that group rows by a label accept a list, a numpy array or a tensor. Tensor elements hash by
identity, so grouping them as they come would make every row its own group: they are turned into Python
values first (a row of a 2-d tensor or array becomes a tuple)."""

import numpy as np
import torch


def row_labels(labels, n_rows: int, name: str) -> list:
    """``labels`` as a list of hashable Python values, one per row; a wrong length is refused."""
    if isinstance(labels, str):
        raise TypeError(f"{name} is one string {labels!r}: give a list with one label per row")
    if len(labels) != n_rows:
        raise ValueError(f"{name} has {len(labels)} labels but there are {n_rows} rows: give one label per row")
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        labels = labels.tolist()
    return [tuple(label) if isinstance(label, list) else label for label in labels]
