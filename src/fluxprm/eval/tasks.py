"""The registry of ``fluxprm eval`` tasks and :func:`run_eval`, which runs one and writes its report.

Adding a task is one function ``run_x(ctx: TaskContext) -> TaskOutput`` and one line in :data:`TASKS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from fluxprm.eval.bontask import run_bon_task
from fluxprm.eval.context import EvalOptions, TaskContext, TaskOutput, count_calibration, count_originals
from fluxprm.eval.outcome import run_outcome
from fluxprm.eval.prmbench import run_prmbench
from fluxprm.eval.processbench import run_processbench
from fluxprm.eval.report import write_json
from fluxprm.eval.separation import run_separation
from fluxprm.eval.sources import EvalError, EvalSource, write_errors
from fluxprm.jobs import check_folder_outputs, check_inputs, report_folder
from fluxprm.records import BadRecord
from fluxprm.traces import FieldMap

__all__ = ["TASKS", "EvalOptions", "EvalResult", "run_eval", "records_per_model"]

class Task(NamedTuple):
    run: Callable[[TaskContext], TaskOutput]
    help: str  # one line for --help
    evaluated: Callable[[dict[str, Any]], int] | None  # samples one model's metrics were computed on (None: n/a)


TASKS: dict[str, Task] = {
    "prmbench": Task(run_prmbench, "PRMBench PRMScore, overall and per error class (ssmisya/PRMBench's code)",
                     lambda m: m.get("samples") or 0),
    "processbench": Task(run_processbench, "ProcessBench first-error F1 (QwenLM/ProcessBench's code) at the "
                         "checkpoint's threshold, --threshold or --calibrate",
                         lambda m: (m.get("n_error") or 0) + (m.get("n_correct") or 0)),
    "outcome": Task(run_outcome, "AUROC, AUPRC, ECE and reliability diagram of trace scores vs correctness",
                    lambda m: m.get("n") or 0),
    "separation": Task(run_separation, "score distributions per group (e.g. source model), pairwise AUROC, "
                       "overlap", lambda m: sum(g["n"] for g in m.get("groups", {}).values())),
    # bon stops by itself (BonError) when no candidate has a score
    "bon": Task(run_bon_task, "Best-of-N accuracy of every rule, by fluxprm bon's evaluator", None),
}


def records_per_model(task: str, inputs: Sequence[str], options: EvalOptions, records: int | None) -> int | None:
    """How many records each model scored now reads for ``task``, given the ``records`` of ``inputs``: the
    progress total per model. PRMBench rows bring one original process per problem besides (prmbench and
    processbench score those with -m), and processbench scores its ``--calibrate`` file (or sample) too. ``bon``
    scores the records as they are (``eval bon`` never generates candidates; ``fluxprm bon --generate`` does, and
    counts on its own). None when ``records`` is None.
    """
    if records is None:
        return None
    if task == "prmbench":
        return records + count_originals(inputs)
    if task == "processbench":
        return records + count_originals(inputs) + count_calibration(options)
    return records


@dataclass
class EvalResult:
    task: str
    output: TaskOutput
    rejected: list[BadRecord] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    evaluated: int | None = None  # the most samples any model was evaluated on; 0: nothing could be used

    @property
    def nothing_evaluated(self) -> bool:
        return self.evaluated == 0


# what a task writes at the top of the report folder: no file it reads may be one of them
EVAL_FILES = ("metrics.json", "summary.md", "errors.jsonl", "prmbench_original.jsonl", "roc.png", "reliability.png",
              "separation.png", "prmscore.png", "f1_vs_threshold.png")


def run_eval(task: str, inputs: Sequence[str], sources: Sequence[EvalSource], out_dir: str | Path,
             options: EvalOptions | None = None, fields: FieldMap | None = None, *,
             on_progress: Callable[[int], None] | None = None,
             on_status: Callable[[str], None] | None = None) -> EvalResult:
    """Run ``task`` on ``inputs`` for every source; write metrics.json, summary.md, PNGs and errors.jsonl.

    ``metrics.json`` holds the first source's metrics at the top level (the keys the task documents) and every
    source's under ``"models"``.
    """
    if task not in TASKS:
        raise EvalError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if not sources:
        raise EvalError("no source of scores")
    check_inputs(list(map(str, inputs)))  # a missing file or a pipe is refused, not drained
    out = Path(out_dir)
    read = [*map(str, inputs), *(f for src in sources for f in src.source.scores or []),
            *([options.calibrate] if options is not None and options.calibrate else [])]
    check_folder_outputs(read, out, EVAL_FILES)
    ctx = TaskContext(list(map(str, inputs)), list(sources), options or EvalOptions(), out, fields or FieldMap(),
                      on_progress, on_status)
    with report_folder(out):
        output = TASKS[task].run(ctx)
    output.notes = ctx.notes + output.notes
    metrics: dict[str, Any] = {"task": task, **output.metrics, "inputs": ctx.inputs,
                               "rejected": len({(b.source, b.line) for b in ctx.rejected}), "notes": output.notes}
    files = {"metrics": write_json(out / "metrics.json", metrics), **output.files}
    errors = write_errors(out / "errors.jsonl", ctx.rejected)
    if errors is not None:
        files["errors"] = errors
    elif (out / "errors.jsonl").exists():
        (out / "errors.jsonl").unlink()  # a stale file from an earlier run would misreport this one
    output.metrics = metrics
    count = TASKS[task].evaluated
    models = list(output.metrics.get("models", {}).values())
    evaluated = max((count(m) for m in models), default=0) if count is not None else None
    return EvalResult(task, output, ctx.rejected, files, evaluated)
