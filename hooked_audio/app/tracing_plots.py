"""Plots for causal tracing and attribution patching (matplotlib, Agg); each returns the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .figures import finish, lines_by_layer  # noqa: E402


def plot_recovery_by_layer(curves: dict, threshold: float | None = 0.5, title: str = "causal tracing", path=None):
    """Recovery rate per layer, one line per ``CausalTrace`` restored by layer (e.g. per corruption or
    control): ``{label: trace}`` or ``{label: rr}`` with ``rr`` a [layer] tensor (then layers 0..n-1)."""
    lines = {}
    for label, curve in curves.items():
        layers, rr = (curve.layers, curve.recovery) if hasattr(curve, "recovery") else (None, torch.as_tensor(curve))
        if rr.dim() != 1:
            raise ValueError(f"{label!r}: a by-layer trace (one RR per layer) is needed, got shape {tuple(rr.shape)}")
        lines[label] = (list(range(len(rr))) if layers is None else layers, rr)
    references = {"RR = 0": 0.0, **({f"RR = {threshold}": threshold} if threshold is not None else {})}
    return lines_by_layer(lines, "recovery rate", xlabel="restored layer (hook_resid_post)", title=title,
                          references=references, path=path)


def plot_recovery_heatmap(trace, title: str = "recovery rate by layer and position group", path=None):
    """A [layer, position group] heat map of a ``CausalTrace`` restored by position group, each cell
    annotated with its RR (diverging colours centred on 0, so a negative recovery shows)."""
    if trace.groups is None:
        raise ValueError("the trace was restored by layer; use plot_recovery_by_layer, or by='position_group'")
    rr = trace.recovery.float()
    bound = max(1.0, float(rr.abs().max()))
    fig, ax = plt.subplots(figsize=(1.2 * len(trace.groups) + 1.8, 0.45 * len(trace.layers) + 1.4))
    image = ax.imshow(rr.numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for i in range(rr.shape[0]):
        for j in range(rr.shape[1]):
            value = float(rr[i, j])
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(value) > 0.6 * bound else "black")
    ax.set_xticks(range(len(trace.groups)), trace.groups)
    ax.set_yticks(range(len(trace.layers)), trace.layers)
    ax.set_xlabel("restored position group")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    return finish(fig, path)


def plot_attribution_vs_activation(result: dict, title: str = "", path=None):
    """Attribution-patching estimate against the activation-patching effect, one point per cell, for
    ``attribution_vs_activation_patching``'s result (Spearman in the title, the y = x line for scale)."""
    effect, attribution = torch.as_tensor(result["effect"]).float(), torch.as_tensor(result["attribution"]).float()
    if effect.shape != attribution.shape:
        raise ValueError(f"effect {tuple(effect.shape)} and attribution {tuple(attribution.shape)} must have the same "
                         "shape (one estimate per patched cell); is one of them transposed?")
    if effect.numel() == 0:
        raise ValueError("the result has no cells to plot")
    if not bool(torch.isfinite(effect).all() & torch.isfinite(attribution).all()):
        raise ValueError("effect and attribution must be finite in every cell (NaN or inf would be dropped from the "
                         "scatter and break the y = x line)")
    x, y = effect.flatten(), attribution.flatten()
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.scatter(x.numpy(), y.numpy(), s=14)
    low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([low, high], [low, high], color="grey", ls=":", lw=1)
    ax.set_xlabel("activation patching effect")
    ax.set_ylabel("attribution patching estimate")
    ax.set_title(f"{title} Spearman {result['rank_correlation']:.3f}".strip(), fontsize=9)
    return finish(fig, path)
