"""Running totals of a scoring run, for its summary table.

Apart from :mod:`fluxprm.engine.score` because that module imports torch, and a ``--ray`` driver, which only
adds up the totals its actors send back, must not pay for it (~7 s cold and a few hundred MB).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Stats"]


@dataclass
class Stats:
    """Running totals for the summary table."""

    traces: int = 0
    steps: int = 0
    tokens: int = 0
    errors: int = 0
    truncated: int = 0
    windowed: int = 0
    batching: str = ""
