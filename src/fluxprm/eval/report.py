"""Output of every task: ``metrics.json``, a Markdown summary, a plain-text table, PNG plots (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from fluxprm.records import json_text

__all__ = ["fmt", "text_table", "markdown_table", "write_json", "write_markdown"]


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: floats rounded, ``None`` as an en dash (undefined, not zero)."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width table for the terminal (first column left-aligned, numbers right-aligned)."""
    cells = [list(header)] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json_text(data, indent=2) + "\n", encoding="utf-8")
    return path


def write_markdown(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """``# title`` then ``## heading`` + body per section."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    path.write_text("\n".join(parts), encoding="utf-8", errors="backslashreplace")  # a lone surrogate as \udXXX
    return path


