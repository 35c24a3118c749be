"""Every PNG fluxprm draws goes through here: matplotlib on the Agg backend, and one way to save a figure.

Plots carry the user's own strings (model names from score records, group values, titles built from fields);
one holding a lone surrogate (valid JSON, not valid text) made matplotlib's font code raise in the middle of a
report. :func:`save_figure` writes such a character as its ``\\udXXX`` escape instead, for every text in the
figure at once, so no plotting function has to remember to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only; imported when a plot is drawn, not before)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _drawable(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def save_figure(fig: Any, path: Path, dpi: int, tight: bool = True) -> Path:
    """Lay out (``tight``: ``tight_layout``; figures made with ``layout="constrained"`` pass False), write
    ``path`` and close the figure; every text is made drawable first."""
    from matplotlib.text import Text
    from matplotlib.ticker import FixedFormatter, FuncFormatter

    for artist in fig.findobj(Text):
        text = artist.get_text()
        if text and _drawable(text) is not text:
            artist.set_text(_drawable(text))
    for ax in fig.axes:  # tick labels set from data (set_yticklabels) are redrawn by their formatter at layout
        for axis in (ax.xaxis, ax.yaxis):
            formatter = axis.get_major_formatter()
            if isinstance(formatter, (FixedFormatter, FuncFormatter)):
                axis.set_major_formatter(FuncFormatter(lambda x, pos, f=formatter: _drawable(str(f(x, pos)))))
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
