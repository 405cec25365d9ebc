"""Bar plot of an evaluation summary: accuracy per group with its 95 % Wilson interval (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path


def plot_summary(summary: dict, path: str | Path, title: str = "accuracy") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("overall", {"all": summary["overall"]})] + list(summary["by"].items())
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 + 2.2 * sum(len(g) for _, g in panels) ** 0.8, 3.6),
                             squeeze=False, gridspec_kw={"width_ratios": [max(len(g), 1) for _, g in panels]})
    for ax, (key, groups) in zip(axes[0], panels):
        names = list(groups)
        acc = [groups[n]["accuracy"] or 0.0 for n in names]  # None (n = 0): a bar of height 0, labelled below
        low = [a - (groups[n]["ci95"] or [a, a])[0] for a, n in zip(acc, names)]
        high = [(groups[n]["ci95"] or [a, a])[1] - a for a, n in zip(acc, names)]
        ax.bar(range(len(names)), acc, yerr=[low, high], capsize=3, color="#4c72b0")
        for x, n in enumerate(names):  # a group with nothing scored has no accuracy: say so, not a bar at 0
            if groups[n]["accuracy"] is None:
                ax.text(x, 0.5, "no item\nscored", ha="center", va="center", fontsize=7, color="#a33")
        ax.set_xticks(range(len(names)), [f"{n}\n(n={groups[n]['n']})" for n in names], fontsize=7,
                      rotation=30 if len(names) > 3 else 0)
        ax.set_ylim(0, 1.05)
        ax.set_title(key, fontsize=9)
    axes[0][0].set_ylabel("accuracy (95% Wilson interval)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
