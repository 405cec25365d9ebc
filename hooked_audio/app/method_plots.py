"""Plots for the AudioLens and listening-head methods (matplotlib, Agg); each returns the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .figures import finish, lines_by_layer, masked_cells  # noqa: E402


def plot_information_by_layer(curves: dict[str, torch.Tensor], n_labels: int | None = None, title: str = "", path=None):
    """Information score per layer (0 = embedding), one line per curve (e.g. task, correct vs wrong)."""
    return lines_by_layer(curves, "information score", title=title, references={"chance": 1 / n_labels} if n_labels else None,
                          ylim=(0, 1.05), path=path)


def plot_head_scores(scores: torch.Tensor, title: str = "listening-head score", path=None, centre: float = 0.0):
    """A [layer, head] heat map (e.g. ``listening_head_scores``) on a diverging map whose white is ``centre``, the
    score of no effect: 0 for point-biserial and difference scores, 0.5 for ``method="auc"``. Heads scored -inf
    (excluded) or NaN are drawn grey, and the title says so (the colour map's white is a score, not a gap)."""
    values = torch.as_tensor(scores).float()
    if values.ndim != 2:
        raise ValueError(f"scores must be a [layer, head] table, got shape {tuple(values.shape)}")
    masked, cmap, n_masked = masked_cells(values.numpy(), "RdBu_r", "every head is unscored (-inf or NaN): nothing "
                                          "to plot; lower min_attention or check the inputs")
    fig, ax = plt.subplots(figsize=(4, 3.2))
    bound = float(np.nanmax(np.abs(masked.compressed() - centre))) or 1.0  # white at no effect
    image = ax.imshow(masked, cmap=cmap, aspect="auto", vmin=centre - bound, vmax=centre + bound)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    ax.set_title(f"{title} (grey: {n_masked} not scored)" if n_masked else title)
    fig.colorbar(image, ax=ax)
    return finish(fig, path)


def plot_critical_layer_vs_accuracy(correlation: dict, title: str = "", path=None):
    """One point per group of ``critical_layer_correlation`` (critical layer, accuracy), labelled, with Pearson's r
    and p in the title; groups with an undefined critical layer are left out."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, (layer, accuracy) in correlation["points"].items():
        if name in correlation["undefined"]:
            continue
        ax.scatter(layer, accuracy, s=14)
        ax.annotate(name, (layer, accuracy), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("critical layer (0 = embedding)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title + ': ' if title else ''}Pearson r = {correlation['r']:.2f} (p = {correlation['p']:.2g}, n = {correlation['n']})",
                 fontsize=9)
    return finish(fig, path)
