"""``fluxprm bon``: a thin entry over :func:`fluxprm.bon.run_bon`; its options are ``BonOptions`` fields."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from fluxprm.bon import BonError, BonOptions, format_table, run_bon
from fluxprm.cli.common import (FIELD_OVERRIDES, Inputs, Model, Resume, check_option_files, checked_inputs, count_inputs,
                                job_errors)
from fluxprm.cli.model_options import ScoringDevice, ScoringDtype
from fluxprm.cli.options import Expand, generated_options
from fluxprm.cli.report import die, print_causes, progress_bar, say, warn
from fluxprm.distributed import DistributedError, RayOptions, RayUnavailable, ray_flags_without_ray
from fluxprm.grading import GradingError
from fluxprm.jobs import CauseCounter
from fluxprm.scored import scoring_cluster
from fluxprm.traces import FieldMap

__all__ = ["bon"]


@generated_options
def bon(
    *,
    inputs: Inputs,
    model: Model = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: metrics.json, accuracy_vs_n.png, "
                                      "picks.jsonl, summary.json; scores.jsonl when a model scores, "
                                      "candidates.jsonl with --generate, errors.jsonl when records are rejected.",
                                      show_default=False)],
    resume: Resume = False,
    dtype: ScoringDtype = "auto",
    device: ScoringDevice = "auto",
    options: Annotated[BonOptions, Expand(exclude=("model",))],
    fields: Annotated[FieldMap, FIELD_OVERRIDES],
    cluster: RayOptions,
    explicit: dict[str, Any],
) -> None:
    """Reward-guided Best-of-N: pick a response per problem and measure every rule against the gold answers.

    Rules: argmax of the score; argmax of min/last/mean/prod of the step rewards; majority vote and
    PRM-weighted vote over math-verify answer classes; pass@1 and oracle pass@N as references. Accuracy at
    N = 1, 2, 4, ... up to the pool size, sub-sampling N candidates per problem (exact where all subsets can
    be enumerated). Scores: --scores files, --score-field, or a model run now (-m; default fluxprm-mini).
    With --ray the model scores on a Ray cluster's actor pool (docs/DISTRIBUTED.md); the files are the same.
    """
    paths = checked_inputs(inputs)
    if out.exists() and not out.is_dir():
        die(f"-o {out} is a file; give a folder for the outputs")
    resolved = {Path(p).resolve() for p in paths}
    if out.resolve() in resolved:
        die(f"-o {out} is an input file")
    try:
        options = replace(options, model=model)  # -m is the shared --model option, not a generated one
    except ValueError as exc:
        die(str(exc))
    check_option_files("--scores", options.scores or [], "the scores file")  # named by its option, not an OSError
    scoring = not options.scores and not options.score_field
    if misplaced := ray_flags_without_ray(cluster, explicit):
        die(f"{', '.join(misplaced)} only apply with --ray")
    if cluster.ray and not scoring:
        die("--ray applies to scoring with a model (-m), not to --scores or --score-field")
    progress, advance = progress_bar("scoring", None if options.generate else count_inputs(paths), enabled=scoring)
    with job_errors(out), progress:
        try:
            with scoring_cluster(cluster, options.threads):
                result = run_bon(paths, out, options, fields, resume=resume, on_progress=advance, on_status=say,
                                 model_options={"dtype": dtype, "device": device})
        except BonError as exc:  # records were read, but nothing honest can be reported
            die(str(exc), code=1)
        except (GradingError, RayUnavailable, DistributedError) as exc:
            die(str(exc))
    if result.rejected:
        causes = CauseCounter()
        for bad in result.rejected:
            causes.add(bad)
        print_causes(len(result.rejected), result.files.get("errors"), causes.summary())
    if not result.problems:
        die("no candidate could be read; see the causes above", code=1)
    s = result.summary
    say(f"fluxprm bon · {result.problems} problems · {result.candidates} candidates "
        f"({'/'.join(map(str, s['candidates_per_problem']))} per problem) · scores: {s['scores']}"
        + (f" ({', '.join(s['scored_by'])})" if s["scored_by"] and not options.score_field else ""))
    if result.rows:
        say(format_table(result.rows, options.samples))
    for note in result.notes:
        (warn if note.startswith("no gold") else say)(note)
    if (checked := s.get("correctness") or {}).get("compared") and not checked.get("disagreements"):
        say(f"math-verify agrees with the pool's correctness flags on all {checked['compared']} candidates")
    for name in ("metrics", "plot", "picks", "summary", "scores", "candidates"):
        if name in result.files:
            say(f"{name} → {result.files[name]}")
