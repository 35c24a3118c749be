"""``ScoreOptions``: every option that shapes scoring, each declared once with its default and help.

The ``fluxprm score`` command line is generated from this dataclass (see :mod:`fluxprm.cli.options`), so a
new option is one field here. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fluxprm.steps import StepConfig

__all__ = ["ScoreOptions", "LONG_POLICIES", "BATCHING_MODES", "ON_ERROR", "DEFAULT_CONTEXT_TOKENS"]

LONG_POLICIES = ("auto", "truncate", "windows")
BATCHING_MODES = ("auto", "single", "padded")
ON_ERROR = ("raise", "skip", "fail")
# Preceding text each long-trace window shows before the steps it scores (docs/LONG_TRACES.md: the figures).
DEFAULT_CONTEXT_TOKENS = 256


@dataclass
class ScoreOptions:
    """Options of ``fluxprm score`` that shape computation (model and file options live elsewhere)."""

    # None = the segmentation the model was trained with (if its checkpoint records one), else StepConfig().
    steps: StepConfig | None = field(default=None, metadata={"flatten": StepConfig})
    long: str = field(default="auto", metadata={
        "help": "Traces over the context. auto: drop the earliest thinking steps if the trace then fits with "
                "one or more kept, else score every step in windows; truncate: only drop thinking steps (a trace whose problem "
                "and response alone do not fit is rejected); windows: always score every step in windows.",
        "choices": LONG_POLICIES})
    context_tokens: int = field(default=DEFAULT_CONTEXT_TOKENS, metadata={
        "help": "In windows, tokens of the preceding text each window shows (not scores) before its own steps.",
        "min": 0})
    batch_tokens: int = field(default=16384, metadata={"help": "Padded tokens per forward batch.", "min": 1})
    batching: str = field(default="auto", metadata={
        "help": "One trace per forward or padded batches; auto measures both once per set-up and keeps the faster.",
        "choices": BATCHING_MODES})
    chunk_size: int = field(default=64, metadata={
        "help": "Traces per chunk (length-sort window and checkpoint interval).", "min": 1})
    spans: bool = field(default=False, metadata={
        "help": "Write each step's (start, end) character span in its thinking/response text."})
    on_error: str = field(default="raise", metadata={
        "help": "Bad records. skip: write them to the errors file and go on; fail: stop at the first one "
                "(exit 1) after writing every record before it.",
        "choices": ON_ERROR, "cli_choices": ("skip", "fail"), "cli_default": "skip"})

    def __post_init__(self) -> None:
        for name, allowed in (("long", LONG_POLICIES), ("batching", BATCHING_MODES), ("on_error", ON_ERROR)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.context_tokens < 0:
            raise ValueError(f"context_tokens must be >= 0, got {self.context_tokens}")
        for name in ("batch_tokens", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
