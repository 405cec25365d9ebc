"""Plots for audio-text conflicts: the two answers through the layers, and the back-patching sweep (matplotlib,
Agg); each returns the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .figures import finish, lines_by_layer  # noqa: E402


def plot_answers_by_layer(curves: dict[str, torch.Tensor], ylabel: str = "probability", title: str = "", path=None):
    """One line per curve over layers (0 = embedding), e.g. the lens probability of the audio's and the text's
    answer, or a probe's accuracy with and without the conflicting text."""
    return lines_by_layer(curves, ylabel, title=title, path=path)


def plot_back_patching(sweep: torch.Tensor, baseline: float, title: str = "text-dominance rate", path=None):
    """``back_patching_sweep`` output [source, destination] minus the unpatched value (NaN: not swept)."""
    fig, ax = plt.subplots(figsize=(4, 3.2))
    change = (torch.as_tensor(sweep).float() - baseline).numpy()
    limit = max(float(abs(change[~(change != change)]).max(initial=0.0)), 1e-6)
    image = ax.imshow(change, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xlabel("destination layer")
    ax.set_ylabel("source layer")
    ax.set_title(f"change of the {title}")
    fig.colorbar(image, ax=ax)
    return finish(fig, path)
