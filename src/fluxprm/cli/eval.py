"""``fluxprm eval``: a thin entry over :func:`fluxprm.eval.run_eval`; the task options are ``EvalOptions`` fields.

Declared here are only the task, the files and where the scores come from: ``-m`` and ``--scores`` may be
repeated, each one a column of the comparison. No torch is imported unless a model scores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fluxprm.cli.common import FIELD_OVERRIDES, Inputs, check_option_files, checked_inputs, count_inputs
from fluxprm.cli.model_options import ScoringDevice, ScoringDtype
from fluxprm.cli.options import generated_options
from fluxprm.cli.report import die, print_causes, progress_bar, say, warn
from fluxprm.distributed import DistributedError, RayOptions, RayUnavailable, ray_flags_without_ray
from fluxprm.eval.context import EvalOptions, options_not_read_by
from fluxprm.eval.tasks import TASKS
from fluxprm.traces import FieldMap

__all__ = ["eval"]


@generated_options
def eval(  # noqa: A001 (the command's name)
    *,
    task: Annotated[str, typer.Argument(help="One of: " + "; ".join(f"{k}: {t.help}" for k, t in TASKS.items()),
                                        metavar="TASK", show_default=False)],
    inputs: Inputs,
    out: Annotated[Path, typer.Option("-o", "--out", help="Report folder: metrics.json, summary.md, PNG plots, "
                                      "errors.jsonl when records are rejected, scores/ (the models' cached "
                                      "scores: a rerun does not rescore).", show_default=False)],
    model: Annotated[Optional[list[str]], typer.Option(
        "-m", "--model", help="PRM to score with now (registry name, checkpoint folder or hub id); repeat to "
                              "compare models side by side.  [default: fluxprm-mini when no --scores or "
                              "--score-field]")] = None,
    scores: Annotated[Optional[list[Path]], typer.Option(
        "--scores", help="Score file from `fluxprm score` on these inputs; repeat to compare several (one "
                         "column each).")] = None,
    score_field: Annotated[Optional[str], typer.Option(
        "--score-field", help="A number already in each record used as the trace score.")] = None,
    dtype: ScoringDtype = "auto",
    device: ScoringDevice = "auto",
    options: EvalOptions,
    fields: Annotated[FieldMap, FIELD_OVERRIDES],
    cluster: RayOptions,
    explicit: dict[str, Any],
) -> None:
    """Benchmark PRMs as the benchmarks' own code does and compare them side by side: PRMBench PRMScore,
    ProcessBench F1 (optionally with a threshold calibrated on another file), outcome AUROC/AUPRC/ECE, score
    separation between groups, Best-of-N. Writes metrics.json, summary.md and plots to -o; prints a table.
    With --ray every -m model scores on a Ray cluster's actor pool (docs/DISTRIBUTED.md), with the same scores.
    """
    from fluxprm.eval.sources import EvalError, sources_from
    from fluxprm.scored import scoring_cluster
    from fluxprm.eval.tasks import records_per_model, run_eval

    if task not in TASKS:
        die(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if unread := options_not_read_by(task, explicit):  # run as if absent, they would mislead: refused
        die("; ".join(f"{flag} applies to eval {' and '.join(tasks)}, not {task}" for flag, tasks in unread.items()))
    paths = checked_inputs(inputs)
    if out.exists() and not out.is_dir():
        die(f"-o {out} is a file; give a folder for the report")
    if out.resolve() in {Path(p).resolve() for p in paths}:
        die(f"-o {out} is an input file")
    check_option_files("--scores", scores or [], "the scores file")
    check_option_files("--calibrate", [options.calibrate], "the calibration file")
    if options.threads:  # read by torch when first imported (only scoring imports it)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(options.threads)
    sources = sources_from(model, [str(s) for s in scores or []], score_field, {"dtype": dtype, "device": device})
    scoring = any(src.scored_now for src in sources)
    if misplaced := ray_flags_without_ray(cluster, explicit):
        die(f"{', '.join(misplaced)} only apply with --ray")
    if cluster.ray and not scoring:
        die("--ray applies to scoring with a model (-m), not to --scores or --score-field")
    # each model run now scores the same records (a model whose cached scores are reused counts them as resumed)
    per_model = records_per_model(task, paths, options, count_inputs(paths)) if scoring else None
    total = None if per_model is None else per_model * sum(src.scored_now for src in sources)
    progress, advance = progress_bar("scoring", total, enabled=scoring)
    try:
        with scoring_cluster(cluster, options.threads), progress:
            result = run_eval(task, paths, sources, out, options, fields, on_progress=advance, on_status=say)
    except EvalError as exc:
        die(str(exc), code=1)
    except (RayUnavailable, DistributedError) as exc:
        die(str(exc))
    except (FileNotFoundError, ValueError) as exc:
        die(str(exc))
    except OSError as exc:
        die(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    if result.nothing_evaluated and result.rejected:  # records read, none usable: causes instead of an all-"–"
        # table, exit 1 (the CLI contract; an input with no records at all is a warning and exit 0, as elsewhere)
        from fluxprm.jobs import CauseCounter

        for note in result.output.notes:
            warn(note)
        counter = CauseCounter()
        for bad in result.rejected:
            counter.add(bad)
        print_causes(len({(b.source, b.line) for b in result.rejected}), result.files.get("errors"),
                     counter.summary())
        die(f"nothing to evaluate: no record of {', '.join(map(str, paths))} could be used for {task}; see the "
            "causes above", code=1)
    typer.echo(f"fluxprm eval {task} · {', '.join(src.name for src in sources)}")
    typer.echo(result.output.table)
    for note in result.output.notes:
        warn(note)
    if result.rejected:
        say(f"{result.output.metrics['rejected']} records rejected → {result.files.get('errors')} (file, line, why)")
    for name, path in result.files.items():
        if name != "errors":
            say(f"{name} → {path}")
