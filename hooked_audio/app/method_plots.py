"""Plots for the AudioLens and listening-head methods (matplotlib, Agg); each returns the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .figures import finish, lines_by_layer  # noqa: E402


def plot_information_by_layer(curves: dict[str, torch.Tensor], n_labels: int | None = None, title: str = "", path=None):
    """Information score per layer (0 = embedding), one line per curve (e.g. task, correct vs wrong)."""
    return lines_by_layer(curves, "information score", title=title, references={"chance": 1 / n_labels} if n_labels else None,
                          ylim=(0, 1.05), path=path)


def plot_head_scores(scores: torch.Tensor, title: str = "listening-head score", path=None):
    """A [layer, head] heat map (e.g. ``listening_head_scores``)."""
    fig, ax = plt.subplots(figsize=(4, 3.2))
    image = ax.imshow(torch.as_tensor(scores).float().numpy(), cmap="RdBu_r", aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    return finish(fig, path)
