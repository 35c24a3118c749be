"""``fluxprm select``: a thin entry over :func:`fluxprm.select.run_select`.

The selection options are :class:`~fluxprm.select.SelectOptions` fields (generated); declared here are only the
files, where the scores come from (``-m`` / ``--scores`` / ``--score-field``) and the model options ``-m`` needs.
No torch is imported unless ``-m`` (or no source at all: the embedded model) scores the inputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fluxprm.cli.common import FIELD_OVERRIDES, Errors, Inputs, Model, checked_inputs, count_inputs
from fluxprm.cli.model_options import ScoringDevice, ScoringThreads, ScoringDtype
from fluxprm.cli.options import generated_options
from fluxprm.cli.report import die, print_causes, print_table, progress_bar, say, warn
from fluxprm.distributed import DistributedError, RayOptions, RayUnavailable, ray_flags_without_ray
from fluxprm.scored import ScoreSource, scoring_cluster
from fluxprm.select import SelectFailure, SelectOptions
from fluxprm.traces import FieldMap

__all__ = ["select"]


Resume = Annotated[bool, typer.Option(
    "--resume", help="With a model: continue an interrupted scoring run into --scores-out (verified, as "
                     "`fluxprm score --resume`); the selection itself always runs anew.")]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@generated_options
def select(
    *,
    inputs: Inputs,
    out: Annotated[Path, typer.Option("-o", "--out", help="The selected input records, unchanged, plus their "
                                      "scores under \"fluxprm\" (one per trace; input order).")],
    errors: Errors = None,
    model: Model = None,
    scores: Annotated[Optional[list[Path]], typer.Option(
        "--scores", help="Score files written by `fluxprm score` on these inputs (no model is loaded). "
                         "Repeat the flag for several files.")] = None,
    score_field: Annotated[Optional[str], typer.Option(
        "--score-field", help="Rank by a number already in each record (e.g. a pool's own reward-model score "
                              "pred_score).")] = None,
    scores_out: Annotated[Optional[Path], typer.Option(
        "--scores-out", help="Where scoring with a model writes its scores.  [default: OUT.scores.jsonl]")] = None,
    resume: Resume = False,
    dtype: ScoringDtype = "auto",
    device: ScoringDevice = "auto",
    threads: ScoringThreads = None,
    options: SelectOptions,
    fields: Annotated[FieldMap, FIELD_OVERRIDES],
    cluster: RayOptions,
    explicit: dict[str, Any],
) -> None:
    """Keep the best-scored traces (top K or fraction F, overall or per problem, duplicates dropped) as
    distillation data: the selected records with their scores, optionally chat messages for SFT (--sft) and a
    report (--report). Scores come from --scores, --score-field or a model run now (-m; default: fluxprm-mini).

    With --ray the model scores on a Ray cluster's actor pool (docs/DISTRIBUTED.md): the scores file and the
    selection are byte for byte those of a run without it.
    """
    given = [flag for flag, value in (("-m", model), ("--scores", scores), ("--score-field", score_field)) if value]
    if len(given) > 1:
        die(f"give one source of scores, not {' and '.join(given)}")
    if threads is not None and threads < 1:
        die(f"--threads must be >= 1, got {threads}")
    if not (scores or score_field):
        model = model or "fluxprm-mini"
        if threads:  # read by torch when it is first imported (scoring imports it; nothing before does)
            os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    elif resume or scores_out or cluster.ray:
        die("--resume, --scores-out and --ray apply to scoring with a model (-m)")
    if misplaced := ray_flags_without_ray(cluster, explicit):
        die(f"{', '.join(misplaced)} only apply with --ray")
    paths = checked_inputs(inputs)
    source = ScoreSource(scores=[str(s) for s in scores] if scores else None, model=model, score_field=score_field,
                         model_options={"dtype": dtype, "device": device})
    from fluxprm.jobs import JobFailure, OutputPathError
    from fluxprm.outputs import ResumeMismatch
    from fluxprm.select import run_select

    progress, advance = progress_bar("scoring", count_inputs(paths) if model else None,
                                     enabled=bool(model))
    try:
        with scoring_cluster(cluster, threads), progress:
            result = run_select(paths, out, source, options, errors=errors, fields=fields, scores_out=scores_out,
                                resume=resume, on_progress=advance)
    except (SelectFailure, JobFailure) as exc:
        die(str(exc), code=1)
    except (RayUnavailable, DistributedError) as exc:
        die(str(exc))
    except (ResumeMismatch, OutputPathError, FileNotFoundError, IsADirectoryError, ValueError) as exc:
        die(str(exc))
    except OSError as exc:
        die(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    c = result.counts
    cells = [("records", str(c.records_in)), ("traces", str(c.traces)), ("scored", str(c.scored)),
             ("errors", str(c.errors)), ("unscored", str(c.unscored))]
    if options.min_score is not None:
        cells.append(("below min", str(c.below_min_score)))
    if options.dedup:
        cells.append(("duplicates", str(c.duplicates)))
    if c.problems is not None:
        cells.append(("problems", str(c.problems)))
    cells += [("not selected", str(c.not_selected)), ("selected", str(c.selected))]
    q = result.correctness
    if q.get("known"):
        cells += [("correct: selected", _rate(q["selected"])), ("random", _rate(q["random_expected"])),
                  ("best", _rate(q["best_possible"]))]
    print_table("fluxprm select", cells)
    if not q.get("known") and c.scored:
        say("correctness: unknown (no record says whether its answer is correct)")
    if result.scores:
        say(f"scores → {result.scores}")
    say(f"selected → {result.out}")
    if result.sft:
        say(f"sft → {result.sft}")
    if result.report:
        say(f"report → {result.report / 'report.json'}")
    for message in result.warnings:
        warn(message)
    print_causes(c.errors + c.unscored, result.errors, result.error_causes)
    if c.traces and not c.scored:
        die(f"none of the {c.traces} traces has a score; see the causes above", code=1)
