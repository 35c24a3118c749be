"""Training examples for ``fluxprm train``: teacher-label records and labelled trace files alike.

Two kinds of input feed the same trainer:

- **label records** written by ``fluxprm label`` (keys ``thinking_steps`` and ``response_steps``):
  soft step targets ``step_rewards`` and a soft ``trajectory_reward``;
- **any trace file** fluxprm reads (PRMBench, ProcessBench, PRM800K, Math-Shepherd, Best-of-N pools):
  hard step labels (``Trace.step_labels``, on the explicit response steps) and outcome correctness.

Every example carries per-step soft targets and hard labels (``None`` where absent), so one loss
function serves both and a mixed dataset needs no special casing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from fluxprm.records import BadRecord, iter_records
from fluxprm.steps import StepConfig, prepare
from fluxprm.traces import TraceError, parse_record

__all__ = ["Example", "load_examples", "is_label_record"]


@dataclass(slots=True)
class Example:
    id: str
    problem: str
    thinking_steps: list[str]
    response_steps: list[str]
    step_targets: list[float | None]     # soft teacher rewards per step (reading order)
    step_labels: list[float | None]      # hard 0/1 labels per step
    trajectory_target: float | None      # soft trajectory reward r_final
    correct: bool | None                 # hard outcome label

    @property
    def steps(self) -> list[str]:
        return self.thinking_steps + self.response_steps

    def has_supervision(self) -> bool:
        return (any(t is not None for t in self.step_targets) or any(t is not None for t in self.step_labels)
                or self.trajectory_target is not None or self.correct is not None)


def is_label_record(data: Any) -> bool:
    return isinstance(data, dict) and "thinking_steps" in data and "response_steps" in data


def _pad(values: list[Any] | None, n: int) -> list[Any]:
    values = list(values or [])
    return (values + [None] * n)[:n]


def _from_label_record(data: dict[str, Any]) -> Example:
    thinking = [str(s) for s in data["thinking_steps"]]
    response = [str(s) for s in data["response_steps"]]
    n = len(thinking) + len(response)
    return Example(id=str(data.get("id")), problem=str(data.get("problem", "")), thinking_steps=thinking,
                   response_steps=response, step_targets=_pad(data.get("step_rewards"), n),
                   step_labels=_pad(data.get("step_labels"), n),
                   trajectory_target=data.get("trajectory_reward"), correct=data.get("correct"))


def mask_after_first_error(labels: list[float | None]) -> list[float | None]:
    """Hard labels after the first bad step become unknown: once a solution has gone wrong, whether a
    later step is "correct" is ill-defined (ProcessBench and Math-Shepherd leave them unlabelled)."""
    out: list[float | None] = []
    seen_error = False
    for lab in labels:
        out.append(None if seen_error else lab)
        seen_error = seen_error or lab == 0.0
    return out


def _from_trace_record(data: Any, source: str, line: int, cfg: StepConfig) -> list[Example]:
    out = []
    for trace in parse_record(data, source=source, line=line):
        inp = prepare(trace, cfg)
        n_think, n_resp = len(inp.thinking_steps), len(inp.response_steps)
        labels: list[float | None] = [None] * n_think
        if trace.step_labels is not None and trace.steps is not None and len(trace.steps) == n_resp:
            labels += list(trace.step_labels)
        else:
            labels += [None] * n_resp
        out.append(Example(id=trace.id, problem=inp.problem, thinking_steps=inp.thinking_steps,
                           response_steps=inp.response_steps, step_targets=[None] * (n_think + n_resp),
                           step_labels=labels, trajectory_target=None, correct=trace.correct))
    return out


def load_examples(paths: Iterable[str | Path], cfg: StepConfig | None = None,
                  errors: list[BadRecord] | None = None, mask_after_error: bool = False) -> Iterator[Example]:
    """Examples from label files and/or trace files; unusable records go to ``errors`` if given.

    ``mask_after_error`` drops hard step labels after the first bad step (see :func:`mask_after_first_error`).
    """
    cfg = cfg or StepConfig()
    for item in iter_records([str(p) for p in paths]):
        if isinstance(item, BadRecord):
            if errors is not None:
                errors.append(item)
            continue
        try:
            examples = ([_from_label_record(item.data)] if is_label_record(item.data)
                        else _from_trace_record(item.data, item.source, item.line, cfg))
        except (TraceError, ValueError, KeyError, TypeError) as exc:
            if errors is not None:
                errors.append(BadRecord(item.source, item.line, str(exc)))
            continue
        for ex in examples:
            if mask_after_error:
                ex.step_labels = mask_after_first_error(ex.step_labels)
            if ex.steps and ex.has_supervision():
                yield ex
