"""Accuracy overall and per group (task, sub-category, difficulty) with 95 % Wilson score intervals."""

from __future__ import annotations

from scipy.stats import binomtest

from .runner import GROUP_KEYS


def accuracy(correct: list[bool]) -> dict:
    """``accuracy``, ``n``, ``correct`` and a 95 % Wilson score interval (scipy): it keeps its coverage near 0 and 1
    and for few items, where a percentile bootstrap of a proportion narrows to nothing (5 of 5 right gave [1, 1])."""
    n, k = len(correct), int(sum(bool(c) for c in correct))
    result = {"accuracy": round(k / n, 4) if n else None, "n": n, "correct": k, "ci95": None}
    if n:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        result["ci95"] = [round(float(ci.low), 4), round(float(ci.high), 4)]
    return result


def summarise(results: list[dict]) -> dict:
    """Accuracy over the scored lines (``correct`` not null) overall and by each group key present; lines with
    an ``error`` are counted apart, overall and in their groups (``errors``), so a group none of whose items could
    be run is still listed, with accuracy None."""
    scored = [r for r in results if r.get("correct") is not None]
    summary = {"overall": accuracy([bool(r["correct"]) for r in scored]),
               "errors": sum(1 for r in results if r.get("correct") is None), "by": {}}
    for key in GROUP_KEYS:
        groups: dict[str, list[bool]] = {}
        errors: dict[str, int] = {}
        for r in results:
            if r.get(key) is None:
                continue
            name = str(r[key])
            groups.setdefault(name, [])
            if r.get("correct") is None:
                errors[name] = errors.get(name, 0) + 1
            else:
                groups[name].append(bool(r["correct"]))
        if groups:
            summary["by"][key] = {name: accuracy(values) | {"errors": errors.get(name, 0)}
                                  for name, values in sorted(groups.items())}
    return summary


def format_table(summary: dict) -> str:
    """The summary as a text table: one row per group, accuracy, 95 % CI, n."""
    rows = [("overall", "", summary["overall"])]
    for key, groups in summary["by"].items():
        rows += [(key, name, stats) for name, stats in groups.items()]
    width = max(len(f"{k} {n}") for k, n, _ in rows) + 2

    def line(key, name, stats):
        label = f"{key} {name}".strip()
        acc = "-" if stats["accuracy"] is None else f"{stats['accuracy']:.3f}"
        ci = "" if not stats.get("ci95") else f"[{stats['ci95'][0]:.3f}, {stats['ci95'][1]:.3f}]"
        failed = f"  ({stats['errors']} not run)" if stats.get("errors") else ""
        return f"{label:<{width}}{acc:>7}  {ci:<16}{stats['n']:>6}{failed}"

    header = f"{'group':<{width}}{'acc':>7}  {'95% CI':<16}{'n':>6}"
    text = [header, "-" * len(header)] + [line(*r) for r in rows]
    if summary.get("errors"):
        text.append(f"({summary['errors']} item(s) could not be run; see their 'error' in the results)")
    return "\n".join(text)


def write_summary(summary: dict, out: str, title: str | None = None) -> tuple[str, str]:
    """``results.summary.json`` and ``results.summary.png`` beside ``out``."""
    import json

    from .plots import plot_summary
    from .runner import summary_paths

    json_path, png_path = summary_paths(out)
    with open(json_path, "w") as handle:
        json.dump(summary, handle, indent=2)
    plot_summary(summary, png_path, title or f"{summary.get('config', {}).get('dataset', '')}: accuracy")
    return json_path, png_path
