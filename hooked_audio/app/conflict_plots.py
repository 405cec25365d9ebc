"""Plots for audio-text conflicts: the two answers through the layers, and the back-patching sweep (matplotlib,
Agg); each returns the figure."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .figures import finish, lines_by_layer, masked_cells  # noqa: E402


def plot_answers_by_layer(curves: dict[str, torch.Tensor], ylabel: str = "probability", title: str = "", path=None):
    """One line per curve over layers (0 = embedding), e.g. the lens probability of the audio's and the text's
    answer, or a probe's accuracy with and without the conflicting text."""
    return lines_by_layer(curves, ylabel, title=title, path=path)


def plot_back_patching(sweep: torch.Tensor, baseline: float, title: str = "text-dominance rate", path=None):
    """``back_patching_sweep`` output [source, destination] minus the unpatched value (NaN: not swept, drawn grey;
    the colour map's white means no change)."""
    sweep = torch.as_tensor(sweep).float()
    if sweep.ndim != 2 or sweep.shape[0] != sweep.shape[1]:
        raise ValueError(f"sweep must be back_patching_sweep's square [source, destination] table, got shape {tuple(sweep.shape)}")
    if not math.isfinite(float(baseline)):
        raise ValueError(f"baseline must be the finite unpatched value, got {baseline}")
    if bool(torch.isinf(sweep).any()):
        raise ValueError("sweep has inf cells; the metric must be finite for every swept pair")
    change, cmap, n_masked = masked_cells((sweep - float(baseline)).numpy(), "RdBu_r",
                                          "sweep is all NaN (no pair swept): nothing to plot")
    limit = max(float(np.abs(change).max()), 1e-6)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    image = ax.imshow(change, cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(change.shape[1]))
    ax.set_yticks(range(change.shape[0]))
    ax.set_xlabel("destination layer")
    ax.set_ylabel("source layer")
    ax.set_title("\n".join(textwrap.wrap(f"change of the {title}" + (" (grey: not swept)" if n_masked else ""), 48)),
                 fontsize=9)
    fig.colorbar(image, ax=ax)
    return finish(fig, path)
