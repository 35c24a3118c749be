"""CLI options shared by several commands (segmentation, field overrides, error handling), defined once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from fluxprm.steps import StepConfig
from fluxprm.traces import FieldMap

_STEPS = StepConfig()


class OnError(str, Enum):
    skip = "skip"
    fail = "fail"


Separator = Annotated[str, typer.Option("--separator", help="Step separator in free text.", show_default="\\n\\n")]
MinChars = Annotated[int, typer.Option("--min-chars", help="Merge steps shorter than this into their predecessor.")]
MaxThinkingSteps = Annotated[int, typer.Option("--max-thinking-steps", help="Cap on thinking steps (neighbours merged evenly).")]
MaxResponseSteps = Annotated[int, typer.Option("--max-response-steps", help="Cap on response steps.")]
IdField = Annotated[Optional[str], typer.Option("--id-field", help="Record field holding the id.")]
ProblemField = Annotated[Optional[str], typer.Option("--problem-field", help="Record field holding the problem.")]
ResponseField = Annotated[Optional[str], typer.Option("--response-field", help="Record field holding the response.")]
ThinkingField = Annotated[Optional[str], typer.Option("--thinking-field", help="Record field holding the thinking.")]
StepsField = Annotated[Optional[str], typer.Option("--steps-field", help="Record field holding a step list.")]
GoldField = Annotated[Optional[str], typer.Option("--gold-field", help="Record field holding the gold answer.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run of the same command.")]
Errors = Annotated[Optional[Path], typer.Option("--errors", help="Rejected records (JSONL); default OUT.errors.jsonl.")]
OnErrorOpt = Annotated[OnError, typer.Option("--on-error", help="skip: log bad records and go on; fail: stop.")]

DEFAULT_SEPARATOR = _STEPS.separator
DEFAULT_MIN_CHARS = _STEPS.min_chars
DEFAULT_MAX_THINKING_STEPS = _STEPS.max_thinking_steps
DEFAULT_MAX_RESPONSE_STEPS = _STEPS.max_response_steps


def step_config(separator: str, min_chars: int, max_thinking_steps: int, max_response_steps: int) -> StepConfig:
    return StepConfig(separator=separator, min_chars=min_chars, max_thinking_steps=max_thinking_steps,
                      max_response_steps=max_response_steps)


def field_map(id_field: str | None, problem_field: str | None, response_field: str | None,
              thinking_field: str | None, steps_field: str | None, gold_field: str | None) -> FieldMap:
    return FieldMap(id=id_field, problem=problem_field, response=response_field, thinking=thinking_field,
                    steps=steps_field, gold=gold_field)
