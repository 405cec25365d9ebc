"""What every method plot shares (matplotlib, Agg): lines over layers, heat maps with gaps, and saving."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def masked_cells(values, cmap: str, empty: str):
    """A table's NaN / inf cells masked, a colour map drawing them light grey (a map's own colours, white
    included, are values, not gaps) and their count; ``empty`` is the error when every cell is masked."""
    masked = np.ma.masked_invalid(np.asarray(values, dtype=float))
    if masked.mask.all():
        raise ValueError(empty)
    return masked, plt.get_cmap(cmap).with_extremes(bad="lightgrey"), int(np.ma.getmaskarray(masked).sum())


def finish(fig, path=None):
    """Tight layout, saved to ``path`` when given; returns the figure."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def lines_by_layer(curves: dict, ylabel: str, xlabel: str = "layer (0 = embedding)", title: str = "",
                   references: dict[str, float] | None = None, ylim: tuple[float, float] | None = None, path=None):
    """One line per curve: ``{label: values}`` (layers 0..n-1) or ``{label: (layers, values)}``; ``references``:
    labelled horizontal lines (e.g. chance)."""
    if not curves:
        raise ValueError("no curves to plot: pass {label: values} with at least one curve")
    lines = []
    for label, curve in curves.items():
        layers, values = curve if isinstance(curve, tuple) else (None, curve)
        values = torch.as_tensor(values).float()
        if values.ndim != 1 or len(values) == 0:
            raise ValueError(f"curve {label!r}: one value per layer (a non-empty 1-D series) is needed, got shape "
                             f"{tuple(values.shape)}; plot each row of a table as its own curve")
        layers = list(range(len(values))) if layers is None else list(layers)
        if len(layers) != len(values):
            raise ValueError(f"curve {label!r}: {len(layers)} layers but {len(values)} values; give one layer per value")
        lines.append((label, layers, values.tolist()))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, layers, values in lines:
        ax.plot(layers, values, marker="o", label=label)
    for label, y in (references or {}).items():
        ax.axhline(y, color="grey", ls=":", lw=0.9, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return finish(fig, path)
