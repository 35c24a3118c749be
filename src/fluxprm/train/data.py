"""Training examples for ``fluxprm train``: teacher-label records and labelled trace files alike.

Two kinds of input feed the same trainer:

- **label records** written by ``fluxprm label`` (keys ``thinking_steps`` and ``response_steps``):
  soft step targets ``step_rewards`` and a soft ``trajectory_reward``;
- **any trace file** fluxprm reads (PRMBench, ProcessBench, PRM800K, Math-Shepherd, Best-of-N pools):
  hard step labels (``Trace.step_labels``, on the explicit response steps) and outcome correctness.

Every example carries per-step soft targets and hard labels (``None`` where absent), so one loss
function serves both and a mixed dataset needs no special casing.

Records are checked one by one, as ``fluxprm score`` does: a record that cannot be trained on (a
target that is not a finite number in [0, 1], ``correct: "yes"``, ``thinking_steps: "a string"``, a missing
problem, no steps or no target at all) becomes a :class:`~fluxprm.records.BadRecord` naming the field,
and the others train. One NaN target would otherwise turn the loss, and then every head weight, into NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from fluxprm.records import BadRecord, iter_records
from fluxprm.steps import StepConfig, prepare
from fluxprm.traces import CORRECT_FIELDS, TraceError, parse_record, truth_value

__all__ = ["Example", "RecordError", "load_examples", "is_label_record", "check_example"]


class RecordError(ValueError):
    """One record cannot be trained on; the message names the field and what was expected."""


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
    source: str = ""                     # the input file and line it came from, for the errors file
    line: int = 0

    def rejected(self, reason: str) -> BadRecord:
        """This example's record as an errors-file entry."""
        return BadRecord(self.source, self.line, reason, self.id)

    @property
    def steps(self) -> list[str]:
        return self.thinking_steps + self.response_steps

    def has_supervision(self) -> bool:
        return (any(t is not None for t in self.step_targets) or any(t is not None for t in self.step_labels)
                or self.trajectory_target is not None or self.correct is not None)


def is_label_record(data: Any) -> bool:
    return isinstance(data, dict) and "thinking_steps" in data and "response_steps" in data


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _steps(data: dict[str, Any], name: str) -> list[str]:
    """A list of non-blank strings (a string is refused: it would become one step per character)."""
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"field {name!r} must be a list of strings, got {_show(value)}")
    for k, step in enumerate(value):
        if not isinstance(step, str):
            raise RecordError(f"{name}[{k}] must be a string, got {_show(step)}")
        if not step.strip():
            raise RecordError(f"{name}[{k}] is empty")
    return list(value)


def _target(value: Any, name: str) -> float | None:
    """A soft target: null, or a finite number in [0, 1] (a string or a bool is a typo, not a reward)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{name} must be a number in [0, 1] or null, got {_show(value)}")
    if not math.isfinite(value):
        raise RecordError(f"{name} is {value}: targets must be finite numbers in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise RecordError(f"{name} is {value}: targets must be in [0, 1]")
    return float(value)


def _label(value: Any, name: str) -> float | None:
    """A hard step label: null, true/false, or a number in [0, 1] (0 = bad step, 1 = good)."""
    return float(value) if isinstance(value, bool) else _target(value, name)


def _targets(data: dict[str, Any], name: str, n: int, read: Any) -> list[float | None]:
    """A per-step target list (null, or a list no longer than the steps, padded with null)."""
    values = data.get(name)
    if values is None:
        return [None] * n
    if not isinstance(values, list):
        raise RecordError(f"field {name!r} must be a list (one value per step) or null, got {_show(values)}")
    if len(values) > n:
        raise RecordError(f"field {name!r} has {len(values)} values for {n} steps")
    return [read(v, f"{name}[{k}]") for k, v in enumerate(values)] + [None] * (n - len(values))


def _correct(value: Any, name: str = "correct") -> bool | None:
    """Outcome correctness: null, or a flag as the trace reader takes one (true/false, 0/1, "yes"/"no"); anything
    else ("maybe", 2, inf) is refused, not guessed."""
    if value is None:
        return None
    flag = truth_value(value)
    if flag is None:
        raise RecordError(f"{name} must be true, false, 0, 1 or null, got {_show(value)}")
    return flag


def _from_label_record(data: dict[str, Any], source: str, line: int) -> Example:
    problem = data.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise RecordError("field 'problem' is missing" if problem is None
                          else f"field 'problem' must be a non-empty string, got {_show(problem)}")
    thinking, response = _steps(data, "thinking_steps"), _steps(data, "response_steps")
    n = len(thinking) + len(response)
    ident = data.get("id")
    return Example(id=f"{Path(source).name}:{line}" if ident is None else str(ident), problem=problem,
                   thinking_steps=thinking, response_steps=response,
                   step_targets=_targets(data, "step_rewards", n, _target),
                   step_labels=_targets(data, "step_labels", n, _label),
                   trajectory_target=_target(data.get("trajectory_reward"), "trajectory_reward"),
                   correct=_correct(data.get("correct")), source=source, line=line)


def check_example(ex: Example) -> None:
    """Raise ``RecordError`` unless ``ex`` can be trained on: steps, at least one target, every target a finite
    number in [0, 1] (trace files are checked here too: a Parquet column may hold NaN)."""
    if not ex.steps:
        raise RecordError("no steps to train on: thinking and response are both empty")
    texts = [("problem", ex.problem)] + [(f"thinking_steps[{k}]", t) for k, t in enumerate(ex.thinking_steps)] \
        + [(f"response_steps[{k}]", t) for k, t in enumerate(ex.response_steps)]
    for name, text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # no tokenizer can read it; it would stop the run mid-way
            raise RecordError(f"{name} is not valid Unicode: a lone surrogate at character {exc.start}") from None
    for k, value in enumerate(ex.step_targets):
        _target(value, f"step_rewards[{k}]")
    for k, value in enumerate(ex.step_labels):
        _label(value, f"step_labels[{k}]")
    _target(ex.trajectory_target, "trajectory_reward")
    _correct(ex.correct)
    if not ex.has_supervision():
        raise RecordError("no training target: step_rewards, step_labels, trajectory_reward and correct are all "
                          "missing")


def mask_after_first_error(labels: list[float | None]) -> list[float | None]:
    """Hard labels after the first bad step become unknown: once a solution has gone wrong, whether a
    later step is "correct" is ill-defined (ProcessBench and Math-Shepherd leave them unlabelled)."""
    out: list[float | None] = []
    seen_error = False
    for lab in labels:
        out.append(None if seen_error else lab)
        seen_error = seen_error or lab == 0.0
    return out


def _labels_of_kept_steps(steps: list[str], step_labels: list[float | None], n_resp: int) -> list[float | None]:
    """The labels of the explicit steps that segmentation keeps: it drops empty steps, so their labels go too.

    An empty step labelled bad (< 0.5) is refused rather than dropped: it may be the first error, and
    dropping it would move the first error onto a later step or erase it.
    """
    dropped = [i + 1 for i, s in enumerate(steps) if not s.strip()]
    bad = [i for i in dropped if step_labels[i - 1] is not None and step_labels[i - 1] < 0.5]
    if bad:
        raise RecordError(f"step(s) {bad} are empty but labelled bad: segmentation drops empty steps, so the "
                          "first error could not be placed")
    kept = [label for s, label in zip(steps, step_labels) if s.strip()]
    if len(kept) != n_resp:  # segmentation kept other steps than the non-empty ones: not expected
        raise RecordError(f"its {len(steps)} labelled steps became {n_resp} after segmentation, so the step "
                          "labels cannot be aligned")
    return kept


def _from_trace_record(data: Any, source: str, line: int, cfg: StepConfig) -> list[Example]:
    out = []
    for trace in parse_record(data, source=source, line=line):
        for key in ("step_rewards", "trajectory_reward"):  # targets a trace record would silently lose
            if trace.meta.get(key) is not None:
                raise RecordError(f"field '{key}' is read from label records only (with 'thinking_steps' and "
                                  "'response_steps', as `fluxprm label` writes them); this record is a trace, so "
                                  "its targets would be lost: write it as a label record")
        for key in CORRECT_FIELDS:  # a flag the reader could not take (2, inf, "maybe") is an error here
            if trace.meta.get(key) is not None:
                _correct(trace.meta[key], key)
        inp = prepare(trace, cfg)
        n_think, n_resp = len(inp.thinking_steps), len(inp.response_steps)
        labels: list[float | None] = [None] * n_think
        if trace.step_labels is not None and trace.steps is not None:
            labels += _labels_of_kept_steps(trace.steps, trace.step_labels, n_resp)
        else:
            labels += [None] * n_resp
        out.append(Example(id=trace.id, problem=inp.problem, thinking_steps=inp.thinking_steps,
                           response_steps=inp.response_steps, step_targets=[None] * (n_think + n_resp),
                           step_labels=labels, trajectory_target=None, correct=trace.correct,
                           source=source, line=line))
    return out


def load_examples(paths: Iterable[str | Path], cfg: StepConfig | None = None,
                  errors: list[BadRecord] | None = None, mask_after_error: bool = False) -> Iterator[Example]:
    """Examples from label files and/or trace files, in input order; every record that cannot be trained on
    goes to ``errors`` (if given) as a ``BadRecord`` saying why, and costs only itself.

    ``mask_after_error`` drops hard step labels after the first bad step (see :func:`mask_after_first_error`).
    """
    cfg = cfg or StepConfig()

    def reject(bad: BadRecord) -> None:
        if errors is not None:
            errors.append(bad)

    for item in iter_records([str(p) for p in paths]):
        if isinstance(item, BadRecord):
            reject(item)
            continue
        ident = item.data.get("id") if isinstance(item.data, dict) else None
        ident = None if ident is None else str(ident)
        try:
            examples = ([_from_label_record(item.data, item.source, item.line)] if is_label_record(item.data)
                        else _from_trace_record(item.data, item.source, item.line, cfg))
        except (TraceError, ValueError, KeyError, TypeError) as exc:
            # (a TraceError's hint names a `fluxprm score` flag, which train does not have: left out)
            reject(BadRecord(item.source, item.line, str(exc), getattr(exc, "id", None) or ident))
            continue
        for ex in examples:
            try:
                check_example(ex)
            except RecordError as exc:
                reject(ex.rejected(str(exc)))
                continue
            if mask_after_error:
                ex.step_labels = mask_after_first_error(ex.step_labels)
            yield ex
