"""What the benchmark scripts share: a target verdict and writing the Markdown table."""

from __future__ import annotations

from pathlib import Path


def verdict(ratio: float, target: float | None) -> str:
    """``"<= 1.2x ok"`` / ``"... MISSED"``, or ``"-"`` for a row without a target."""
    return "-" if target is None else f"<= {target}x {'ok' if ratio <= target else 'MISSED'}"


def write_report(lines: list[str], out: str) -> int:
    """Print the table and write it to ``out``; the scripts' exit status."""
    text = "\n".join(lines) + "\n"
    print(text)
    Path(out).write_text(text)
    return 0
