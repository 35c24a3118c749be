"""``ViewOptions``: every knob of ``fluxprm view``, declared once (the CLI flags are generated from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fluxprm.steps import StepConfig

__all__ = ["ViewOptions", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 200_000_000


@dataclass(frozen=True)
class ViewOptions:
    """How the page is built. The segmentation options matter only for score files written without ``--spans``:
    the traces are then cut again into steps, and must be cut the way they were when scored."""

    max_bytes: int = field(default=DEFAULT_MAX_BYTES, metadata={
        "help": "Page-size guard in bytes: above it the longest step texts are shortened in the middle (then "
                "texts, then traces, are left out) and the page says what was left out.", "min": 100_000})
    title: str | None = field(default=None, metadata={"help": "Page title.  [default: the scores file's name]"})
    page_size: int = field(default=100, metadata={"help": "Traces per page of the list.", "min": 10})
    steps: StepConfig = field(default_factory=StepConfig, metadata={
        "help": "Segmentation for scores without spans (must match the scoring run's)."})
