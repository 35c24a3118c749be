"""What every task receives: the inputs, the sources to compare, options, the report folder, and a place for
rejected records and notes — so a task module is only its metric and its plots."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from fluxprm.records import BadRecord, RawRecord, count_records, iter_records, json_text
from fluxprm.scores import AGGREGATES, TraceScore, aggregate
from fluxprm.eval.sources import EvalSource, Scored, load_scored
from fluxprm.traces import FieldMap, Trace

__all__ = ["DEFAULT_THRESHOLD", "TRACE_NUMBERS", "EvalOptions", "TaskContext", "TaskOutput", "by_label", "trace_number",
           "label_problem", "options_not_read_by",
           "prmbench_original_file", "sample_file"]


DEFAULT_THRESHOLD = 0.5  # PRMBench's validity rule; processbench's when a model records no threshold of its own

#: Which number of a score record ``outcome`` and ``separation`` evaluate (``--by``): the score, the trajectory
#: reward, or one of :data:`fluxprm.scores.AGGREGATES` over the step rewards (``mean-step``, ``min-step``, ...).
TRACE_NUMBERS = ("score", "trajectory") + tuple(f"{how}-step" for how in AGGREGATES)
_STEP_NAMES = {"mean": "mean step reward", "min": "lowest step reward", "last": "last step reward",
               "prod": "product of the step rewards", "max": "highest step reward"}


@dataclass
class EvalOptions:
    """Every option of ``fluxprm eval`` that is not a file or a model (the command line is generated from these)."""

    threshold: float | None = field(default=None, metadata={
        "help": "Step-reward threshold: prmbench calls a step valid when its reward is above it (default 0.5, "
                "PRMBench's rule); processbench predicts the first step below it as the first error (default: "
                "the threshold a fluxprm checkpoint records, chosen on its own training data, else 0.5).",
        "tasks": ("prmbench", "processbench")})
    calibrate: str | None = field(default=None, metadata={
        "help": "processbench: choose the threshold maximising F1 on this labelled file (scored by the same "
                "model) instead of --threshold.", "tasks": ("processbench",)})
    calibrate_limit: int | None = field(default=None, metadata={
        "help": "Use a seeded random sample of this many records of --calibrate (a big file is slow to score).",
        "min": 1, "tasks": ("processbench",)})
    seed: int = field(default=0, metadata={"help": "Seed of --calibrate-limit's sample.", "tasks": ("processbench",)})
    group_field: str = field(default="model", metadata={
        "help": "separation: the record field whose values are the groups compared (e.g. the source model).",
        "tasks": ("separation",)})
    bins: int = field(default=10, metadata={"help": "outcome: bins of the reliability diagram and ECE.", "min": 1,
                                            "tasks": ("outcome",)})
    by: str = field(default="score", metadata={
        "help": "outcome, separation: the number of each score record evaluated. score: the model's trace score; "
                "trajectory: its trajectory reward alone (a correctness probability for checkpoints trained on "
                "outcomes, fluxprm-mini's among them, so ECE applies where the 0-2 score has none); mean-step, "
                "min-step, last-step, prod-step, max-step: that aggregate of its step rewards.",
        "choices": TRACE_NUMBERS, "tasks": ("outcome", "separation")})
    threads: int | None = field(default=None, metadata={
        "help": "CPU threads for torch when a model scores (1 on a shared machine).  [default: all cores]",
        "min": 1})

    def __post_init__(self) -> None:
        if self.by not in TRACE_NUMBERS:
            raise ValueError(f"unknown --by {self.by!r}; choose from {', '.join(TRACE_NUMBERS)}")
        if self.bins < 1:
            raise ValueError(f"bins must be >= 1, got {self.bins}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"--threshold must be a finite number, got {self.threshold}")
        if self.calibrate_limit is not None and self.calibrate_limit < 1:
            raise ValueError(f"calibrate_limit must be >= 1, got {self.calibrate_limit}")
        if self.calibrate_limit is not None and not self.calibrate:
            raise ValueError("--calibrate-limit needs --calibrate FILE")


def options_not_read_by(task: str, given: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``{flag: the tasks that read it}`` for the ``given`` :class:`EvalOptions` fields that ``task`` never
    reads (their ``tasks`` metadata): ``eval outcome --calibrate f`` would otherwise run as if it were not there."""
    read_by = {f.name: f.metadata.get("tasks") for f in fields(EvalOptions)}
    return {f"--{name.replace('_', '-')}": read_by[name] for name in given
            if read_by.get(name) and task not in read_by[name]}


@dataclass
class TaskOutput:
    """A task's result: ``metrics`` (written to metrics.json), the printed table, files written, notes."""

    metrics: dict[str, Any]
    table: str
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class TaskContext:
    inputs: list[str]
    sources: list[EvalSource]
    options: EvalOptions
    out_dir: Path
    fields: FieldMap = field(default_factory=FieldMap)
    on_progress: Callable[[int], None] | None = None
    on_status: Callable[[str], None] | None = None
    rejected: list[BadRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def scored(self, src: EvalSource, inputs: Sequence[str] | None = None, fields: FieldMap | None = None,
               tag: str = "") -> Scored:
        """One source's scores on ``inputs`` (default: the task's); rejected records join :attr:`rejected`."""
        result = load_scored(list(inputs or self.inputs), src, fields or self.fields, self.out_dir, tag=tag,
                             on_progress=self.on_progress, on_status=self.on_status)
        self.rejected.extend(result.rejected)
        return result


def label_problem(trace: Trace) -> str | None:
    """Why a trace's step labels cannot be trusted (PRMBench ``error_steps`` past the steps), else None.

    ``fluxprm.traces`` keeps such rows for training and notes ``meta["label_warning"]``; a benchmark must not
    score a sample whose gold is wrong, so eval sends it to the errors file instead.
    """
    warning = trace.meta.get("label_warning")
    if warning is None:
        return None
    return warning.removesuffix("; ignored") + ": the sample's gold labels cannot be trusted; not evaluated"


def reject(trace: Trace, why: str, hint: str | None = None) -> BadRecord:
    return BadRecord(trace.source, trace.line, why, id=trace.id, hint=hint)


def trace_number(score: TraceScore, by: str) -> tuple[float | None, str]:
    """The number of ``score`` that ``--by`` names, or None and why there is none (the record is then rejected)."""
    if by == "trajectory":
        value = score.trajectory_reward
        return (None, "no trajectory reward (the model has no trajectory head)") if value is None else (float(value), "")
    if by.endswith("-step"):
        value = aggregate(score.step_rewards, by.removesuffix("-step"))
        return (None, "no step rewards") if value is None else (value, "")
    return (None, "scored with no trace score") if score.score is None else (float(score.score), "")


def by_label(by: str) -> str:
    """How reports name the evaluated number."""
    if by.endswith("-step"):
        return _STEP_NAMES[by.removesuffix("-step")]
    return {"score": "trace score", "trajectory": "trajectory reward"}[by]


def _raw_records(paths: Sequence[str]) -> list[RawRecord]:
    return [r for r in iter_records(paths) if isinstance(r, RawRecord)]


def prmbench_original_file(inputs: Sequence[str], out_dir: Path) -> tuple[Path | None, dict[str, str]]:
    """The PRMBench rows whose ``original_process`` is scored as an all-correct sample: the first row of each
    ``idx`` (one correct sample per problem, as upstream's ``correct_{idx}``), written to
    ``out_dir/prmbench_original.jsonl``. Returns the file (None when no row has an original process) and
    ``{idx: classification of every row of that idx joined by ','}``, so PRMBench's "correct" class can keep
    only the problems that have a ``redundency`` row, as upstream does.
    """
    first, classes = _original_rows(_raw_records(inputs))
    if not first:
        return None, {}
    path = out_dir / "prmbench_original.jsonl"
    body = "".join(json_text(d) + "\n" for d in first.values())
    if not path.exists() or path.read_text(encoding="utf-8") != body:  # keep the mtime (and the score cache)
        path.write_text(body, encoding="utf-8")
    return path, classes


def count_originals(inputs: Sequence[str]) -> int:
    """How many original processes :func:`prmbench_original_file` gives ``inputs`` (one per PRMBench ``idx``)."""
    return len(_original_rows(_raw_records(inputs))[0])


def count_calibration(options: EvalOptions) -> int:
    """How many records a model scores for ``--calibrate`` (its ``--calibrate-limit`` sample, if any): the
    records plus one original process per PRMBench problem among them, as :func:`sample_file` and
    :func:`prmbench_original_file` give them. 0 without ``--calibrate``."""
    if not options.calibrate:
        return 0
    records = _raw_records([options.calibrate])
    chosen = _sample(records, options.calibrate_limit, options.seed)
    # the whole file is scored: its unreadable lines count too, as for the inputs
    scored = (count_records(options.calibrate) or len(records)) if len(chosen) == len(records) else len(chosen)
    return scored + len(_original_rows(chosen)[0])


def _original_rows(records: Sequence[RawRecord]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The first row of each PRMBench ``idx`` with an ``original_process``, and the classes of each idx's rows."""
    first: dict[str, dict[str, Any]] = {}
    classes: dict[str, str] = {}
    for raw in records:
        data = raw.data
        if not isinstance(data, dict) or not isinstance(data.get("original_process"), list):
            continue
        idx = str(data.get("idx"))
        first.setdefault(idx, data)
        classes[idx] = ",".join(filter(None, [classes.get(idx), str(data.get("classification"))]))
    return first, classes


def sample_file(path: str, limit: int | None, seed: int, out_dir: Path) -> str:
    """``path`` itself, or a seeded random sample of ``limit`` of its records (in file order) written to
    ``out_dir/calibration_sample.jsonl``: reproducible, and small enough to score on a CPU."""
    if limit is None:
        return path
    records = _raw_records([path])
    chosen = _sample(records, limit, seed)
    if len(chosen) == len(records):
        return path
    out = out_dir / "calibration_sample.jsonl"
    body = "".join(json_text(raw.data) + "\n" for raw in chosen)
    if not out.exists() or out.read_text(encoding="utf-8") != body:
        out.write_text(body, encoding="utf-8")
    return str(out)


def _sample(records: list[RawRecord], limit: int | None, seed: int) -> list[RawRecord]:
    """A seeded random sample of ``limit`` of ``records``, in their order (all of them when ``limit`` is None or
    not below their number): the one rule behind :func:`sample_file` and :func:`count_calibration`."""
    if limit is None or limit >= len(records):
        return records
    return [records[i] for i in sorted(random.Random(seed).sample(range(len(records)), limit))]
