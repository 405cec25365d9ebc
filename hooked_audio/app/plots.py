"""Matplotlib figures for the analyses, written as PNG files (headless: the Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figures import masked_cells  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lens_curves(probs: np.ndarray, layer_labels: list[str], names: list[str], path: Path, title: str) -> Path:
    """P(answer) at the answer position across layers, one line per example ([layer, example])."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape != (len(layer_labels), len(names)):
        raise ValueError(f"probs must be [layer, example] = ({len(layer_labels)}, {len(names)}) for {len(layer_labels)} "
                         f"layer labels and {len(names)} names, got shape {probs.shape}")
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(names):
        ax.plot(range(len(layer_labels)), probs[:, i], marker="o", label=name)
    ax.set_xticks(range(len(layer_labels)), layer_labels, rotation=45)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("P(correct answer)")
    ax.set_xlabel("residual stream (logit lens)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def visible(token: str) -> str:
    """A token as a tick label: line breaks and tabs written out (a bare newline label is blank)."""
    return token.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def plot_lens_heatmap(
    probs: np.ndarray, layer_labels: list[str], tokens: list[str], audio: tuple[int, int] | None,
    seconds_per_token: float, path: Path, title: str,
) -> Path:
    """P(answer) at every (layer, position): where in the sequence and how deep the answer appears."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape != (len(layer_labels), len(tokens)):
        raise ValueError(f"probs must be [layer, position] = ({len(layer_labels)}, {len(tokens)}) for {len(layer_labels)} "
                         f"layer labels and {len(tokens)} tokens, got shape {probs.shape}")
    if not np.isfinite(probs).all():
        raise ValueError("probs has NaN or inf cells; the lens probabilities must be finite")
    if audio is not None and not 0 <= audio[0] < audio[1] <= len(tokens):
        raise ValueError(f"audio span {tuple(audio)} must satisfy 0 <= start < end <= {len(tokens)} (the token count)")
    fig, ax = plt.subplots(figsize=(max(7, len(tokens) * 0.09), 3.8))
    image = ax.imshow(probs, aspect="auto", cmap="viridis", vmin=0, vmax=max(float(probs.max()), 1e-3))
    ax.set_yticks(range(len(layer_labels)), layer_labels)
    if audio is not None:
        start, end = audio
        ax.axvspan(start - 0.5, end - 0.5, color="white", alpha=0.12)
        seconds = np.arange(0, (end - start) * seconds_per_token + 1e-9, 1.0)
        for s in seconds:
            ax.axvline(start + s / seconds_per_token - 0.5, color="white", lw=0.5, alpha=0.4)
        ax.text(start, -0.7, f"audio {end - start} tokens ({(end - start) * seconds_per_token:.1f} s)", fontsize=8)
    text_positions = [i for i in range(len(tokens)) if audio is None or not (audio[0] <= i < audio[1])]
    ax.set_xticks(text_positions, [visible(tokens[i]) for i in text_positions], rotation=90, fontsize=6)
    ax.set_title(title, pad=14)  # above the audio span's label
    fig.colorbar(image, ax=ax, label="P(answer)")
    return _save(fig, path)


def plot_head_scores(scores: np.ndarray, path: Path, title: str) -> Path:
    """Heatmap of a per-(layer, head) score, each cell annotated. The colour scale runs from 0 (or the lowest
    score, when negative) to the highest; NaN / inf cells are drawn grey and counted in the title."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a [layer, head] table, got shape {scores.shape}")
    masked, cmap, n_masked = masked_cells(scores, "magma", "every cell of scores is NaN or inf: nothing to plot")
    low, high = min(0.0, float(masked.min())), float(masked.max())
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * scores.shape[1], 1.0 + 0.6 * scores.shape[0]))
    image = ax.imshow(masked, cmap=cmap, vmin=low, vmax=max(high, low + 1e-6))
    for (layer, head), value in np.ndenumerate(scores):
        ax.text(head, layer, f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="black" if np.isfinite(value) and value > low + 0.6 * (high - low) else "white")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(scores.shape[1]))
    ax.set_yticks(range(scores.shape[0]))
    ax.set_title(f"{title} (grey: {n_masked} NaN / inf)" if n_masked else title)
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def plot_ablation(
    results: dict[str, float], path: Path, title: str, ylabel: str = "accuracy", chance: float | None = None
) -> Path:
    """Bars for conditions such as clean / top heads ablated / random heads ablated."""
    import textwrap

    if not results:
        raise ValueError("no conditions to plot: pass {condition: value} with at least one entry")
    if not all(np.isfinite(float(v)) for v in results.values()):
        raise ValueError(f"every value must be finite, got {results}")
    fig, ax = plt.subplots(figsize=(max(6.5, 1.5 * len(results)), 3.8))
    names = ["\n".join(textwrap.wrap(name, 18)) for name in results]
    values = list(results.values())
    palette = ["#4c72b0", "#c44e52", "#8c8c8c", "#dd8452", "#b3b3b3", "#55a868"]
    # at 0..n-1, named by tick: two names that wrap to the same text stay two bars
    bars = ax.bar(range(len(names)), values, color=[palette[i % len(palette)] for i in range(len(names))])
    ax.set_xticks(range(len(names)), names)
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value), xytext=(0, 2 if value >= 0 else -2),
                    textcoords="offset points", ha="center", va="bottom" if value >= 0 else "top", fontsize=9)
    if chance is not None:
        ax.axhline(chance, color="black", ls="--", lw=0.8)
        ax.text(len(values) - 0.5, chance + 0.01, "chance", ha="right", fontsize=8)
    # [0, 1.08] for shares; widened (never clipped) when a value or the chance line falls outside it
    shown = values + ([chance] if chance is not None else [])
    ax.set_ylim(min(0.0, 1.08 * min(shown)), max(1.08, 1.08 * max(shown)))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def plot_attention_over_time(
    waveform: np.ndarray, sampling_rate: int, attention: np.ndarray, seconds_per_token: float, path: Path, title: str
) -> Path:
    """A clip's waveform with one head's attention (from the answer position) over its audio tokens."""
    attention = np.asarray(attention)
    if attention.ndim != 1 or len(attention) == 0:
        raise ValueError(f"attention must be one head's weights over the clip's audio tokens (non-empty 1-D), got shape {attention.shape}")
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:  # a batch or channels would be drawn as one squashed trace
        raise ValueError(f"waveform must be one mono clip (1-D samples), got shape {waveform.shape}: pass one row, "
                         "e.g. waveforms[row] (stereo: its mean over channels)")
    fig, ax = plt.subplots(figsize=(7, 3))
    t = np.arange(len(waveform)) / sampling_rate
    ax.plot(t, waveform, color="#999999", lw=0.5)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("waveform")
    twin = ax.twinx()
    centres = (np.arange(len(attention)) + 0.5) * seconds_per_token
    twin.bar(centres, attention, width=seconds_per_token, color="#c44e52", alpha=0.6)
    twin.set_ylabel("attention from answer position")
    ax.set_title(title)
    return _save(fig, path)
