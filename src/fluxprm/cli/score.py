"""``fluxprm score``: a thin entry over :func:`fluxprm.score_job.run_score_job`.

The scoring options are :class:`~fluxprm.engine.options.ScoreOptions` fields (generated); declared here are
only the model, file and machine options.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import fields as dataclass_fields, replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fluxprm.cli.common import (FIELD_OVERRIDES, Errors, Inputs, Model, Resume,
                                checked_inputs, checked_outputs, count_inputs, job_errors)
from fluxprm.cli.model_options import Aggregate, Alpha, Device, Dtype, Format, MaxLength, Threads
from fluxprm.cli.options import generated_options
from fluxprm.cli.report import (die, exit_if_nothing_written, print_duplicates, print_rejections, print_table,
                                progress_bar, say)
from fluxprm.distributed import DistributedError, RayOptions, RayUnavailable, scoring_model
from fluxprm.engine.options import ScoreOptions
from fluxprm.traces import FieldMap

__all__ = ["score"]

RAY_FLAGS = [f.name for f in dataclass_fields(RayOptions) if f.name != "ray"]  # the options that need --ray


@generated_options
def score(
    *,
    inputs: Inputs,
    model: Model = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Score records (JSONL), one per trace, in "
                                                "input order.  [default: stdout]")] = None,
    errors: Errors = None,
    resume: Resume = False,
    options: ScoreOptions,
    dtype: Dtype = "auto",
    device: Device = "auto",
    threads: Threads = None,
    max_length: MaxLength = None,
    format: Format = None,
    aggregate: Aggregate = None,
    alpha: Alpha = None,
    fields: Annotated[FieldMap, FIELD_OVERRIDES],
    cluster: RayOptions,
    explicit: dict[str, Any],
) -> None:
    """Score traces with a PRM: one record per trace, in input order; rejected records go to --errors.

    Steps: a checkpoint trained by `fluxprm train` cuts traces into steps the way its training data was cut,
    unless you pass --separator, --min-chars or --max-*-steps; other models use the defaults shown.

    With --ray, an actor pool on a Ray cluster scores the chunks (docs/DISTRIBUTED.md); the files written are
    byte for byte those of a run without it, and either kind of run resumes the other.
    """
    if resume and out is None:
        die("--resume needs -o/--out (stdout cannot be resumed)")
    for flag, value in (("--max-length", max_length), ("--threads", threads)):
        if value is not None and value < 1:
            die(f"{flag} must be >= 1, got {value}")
    ray_flags = [f"--{name.replace('_', '-')}" for name in RAY_FLAGS if name in explicit]
    if ray_flags and not cluster.ray:
        die(f"{', '.join(ray_flags)} only apply with --ray")
    paths = checked_inputs(inputs)
    checked_outputs(paths, out, errors, resume)
    from fluxprm.steps import step_config_for

    load_options = {"format": format and format.value, "device": device, "dtype": dtype, "max_length": max_length,
                    "aggregate": aggregate and aggregate.value, "alpha": alpha}
    with contextlib.ExitStack() as session:
        try:
            prm = session.enter_context(scoring_model(model, load_options, cluster, batching=options.batching,
                                                      threads=threads))
            options = replace(options, steps=step_config_for(prm.trained_steps, explicit))
        except (ValueError, RayUnavailable, DistributedError) as exc:
            die(str(exc))
        except FileNotFoundError as exc:
            if not _model_not_found(exc):
                raise
            die(str(exc))
        from fluxprm.score_job import run_score_job  # no torch: a --ray driver runs without it

        progress, advance = progress_bar("scoring", count_inputs(paths), enabled=out is not None)
        with job_errors(out), progress:
            try:
                result = run_score_job(prm, paths, out, errors, options, fields, resume, on_progress=advance)
            except DistributedError as exc:
                die(str(exc))
    if result.already_complete:
        say(f"{out}: already complete ({result.skipped_done} records); nothing to do")
        return
    s = result.stats
    print_table(f"fluxprm score · {prm.name}", [
        ("records", str(result.records_in)), ("scored", str(s.traces)), ("errors", str(s.errors)),
        ("truncated", str(s.truncated)), ("windowed", str(s.windowed)), ("steps", str(s.steps)),
        ("tokens", str(s.tokens)), ("tokens/s", f"{result.tokens_per_s:,.0f}"), ("batching", s.batching or "-")])
    if result.out:
        say(f"scores → {result.out}")
    if result.skipped_done:
        say(f"resumed: {result.skipped_done} records were already done")
    print_rejections(result)
    print_duplicates(result)
    exit_if_nothing_written(result, "scored")


def _model_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is :class:`fluxprm.models.ModelNotFound`, without importing :mod:`fluxprm.models` (torch)
    for the check: whatever raised it has imported the module that defines it."""
    resolve = sys.modules.get("fluxprm.models.resolve")
    return resolve is not None and isinstance(exc, resolve.ModelNotFound)
