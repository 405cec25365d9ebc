"""Plots for the AudioLens and listening-head methods (matplotlib, Agg); each returns the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def plot_information_by_layer(curves: dict[str, torch.Tensor], n_labels: int | None = None, title: str = "", path=None):
    """Information score per layer (0 = embedding), one line per curve (e.g. task, correct vs wrong)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, scores in curves.items():
        ax.plot(range(len(scores)), torch.as_tensor(scores).tolist(), marker="o", label=name)
    if n_labels:
        ax.axhline(1 / n_labels, color="grey", ls=":", label="chance")
    ax.set_xlabel("layer (0 = embedding)")
    ax.set_ylabel("information score")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def plot_head_scores(scores: torch.Tensor, title: str = "listening-head score", path=None):
    """A [layer, head] heat map (e.g. ``listening_head_scores``)."""
    fig, ax = plt.subplots(figsize=(4, 3.2))
    image = ax.imshow(torch.as_tensor(scores).float().numpy(), cmap="RdBu_r", aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
