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
    window: tuple[float, float] | None = None, title: str = "", path=None, ylabel: str = "attention from the last position",
):
    """Attention profiles over one clip's seconds (one line per profile, e.g. with / without steering), the
    clip's ``events`` ``((name, start_s, end_s), ...)`` shaded (the ``queried`` one darker) and an optional
    predicted ``window`` ``(start_s, end_s)`` outlined. NaN padding is dropped. One clip: ``seconds`` and each
    profile are 1-D over its audio tokens (``seconds[row]``, ``profile[row]``); ``ylabel`` names the query (another
    than the last position, when ``temporal_attention`` was given one)."""
    seconds = torch.as_tensor(seconds).float()
    if seconds.ndim != 1:
        raise ValueError(f"seconds must be one clip's token times (1-D), got shape {tuple(seconds.shape)}; pass seconds[row]")
    keep = ~torch.isnan(seconds)
    if not bool(keep.any()):
        raise ValueError("seconds is all NaN: the row has no audio tokens")
    if not profiles:
        raise ValueError("no profiles to plot: pass {name: profile} with at least one profile")
    for name, profile in profiles.items():
        shape = tuple(torch.as_tensor(profile).shape)
        if shape != tuple(seconds.shape):
            raise ValueError(f"profile {name!r} has shape {shape} but seconds has {tuple(seconds.shape)}; pass one "
                             "clip's profile (profile[row]) over the same audio tokens as seconds")
    times = seconds[keep]
    if bool((times[1:] < times[:-1]).any()):
        raise ValueError("seconds go back in time along the row: it holds several clips (each starts at 0 s); plot one "
                         "clip at a time (its positions of inputs.audio_spans[row])")
    step = float((times[1:] - times[:-1]).abs().median()) if len(times) > 1 else 0.0
    low, high = float(times.min()) - step, float(times.max()) + step
    if window is not None:
        start, end = (float(v) for v in window)
        if not start < end:
            raise ValueError(f"window must be (start_s, end_s) with start < end, got {tuple(window)}")
        if start < low or end > high:
            raise ValueError(f"window {start:g}-{end:g} s lies outside the clip's tokens ({float(times.min()):g}-"
                             f"{float(times.max()):g} s); pass it in seconds, for this clip")
    events = list(events)
    if queried is not None and queried not in [name for name, _, _ in events]:
        raise ValueError(f"queried {queried!r} is not one of the events {[name for name, _, _ in events]}")
    for name, start, end in events:
        if not start < end or end < low or start > high:
            raise ValueError(f"event {name!r} ({start:g}-{end:g} s) is empty or outside the clip's tokens "
                             f"({float(times.min()):g}-{float(times.max()):g} s); give events in seconds, for this clip")
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
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9, pad=14)
    ax.legend(fontsize=7)
    return finish(fig, path)
