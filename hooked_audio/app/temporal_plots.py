"""Plots for where in time the model listens (temporal attention profiles); matplotlib, Agg; each returns
the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .figures import finish  # noqa: E402


def plot_temporal_profiles(
    seconds: torch.Tensor, profiles: dict[str, torch.Tensor], events=(), queried: str | None = None,
    window: tuple[float, float] | None = None, title: str = "", path=None,
):
    """Attention profiles over one clip's seconds (one line per profile, e.g. with / without steering), the
    clip's ``events`` ``((name, start_s, end_s), ...)`` shaded (the ``queried`` one darker) and an optional
    predicted ``window`` ``(start_s, end_s)`` outlined. NaN padding is dropped."""
    seconds = torch.as_tensor(seconds).float()
    keep = ~torch.isnan(seconds)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, start, end in events:
        ax.axvspan(start, end, color="tab:orange", alpha=0.35 if name == queried else 0.12, lw=0)
        ax.text((start + end) / 2, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7)
    if window is not None:
        ax.axvspan(*window, fill=False, ec="k", ls="--", lw=1, label="localised window")
    for name, profile in profiles.items():
        profile = torch.as_tensor(profile).float()
        ax.plot(seconds[keep].tolist(), profile[keep].tolist(), label=name, lw=1.2)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("time in clip (s)")
    ax.set_ylabel("attention from the last position")
    ax.set_title(title, fontsize=9, pad=14)
    ax.legend(fontsize=7)
    return finish(fig, path)
