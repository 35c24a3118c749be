"""``fluxprm label``: a thin entry over :func:`fluxprm.labels.pipeline.run_label_job`.

Every labelling option is a :class:`~fluxprm.labels.pipeline.LabelConfig` field (generated), the cluster
options are :class:`~fluxprm.distributed.RayOptions` fields (generated, as in ``fluxprm score``); declared here
are only the files, ``--no-judge`` (the CLI's way to set ``judge`` to None) and the field overrides.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from fluxprm.cli.common import (FIELD_OVERRIDES, ON_ERROR_CLI, Errors, Inputs, Resume,
                                checked_inputs, checked_outputs, count_inputs, job_errors)
from fluxprm.cli.options import Expand, generated_options
from fluxprm.cli.report import (die, exit_if_nothing_written, print_duplicates, print_rejections, print_table,
                                progress_bar, say)
from fluxprm.distributed import DistributedError, RayOptions, RayUnavailable, ray_flags_without_ray
from fluxprm.labels.pipeline import LabelConfig
from fluxprm.traces import FieldMap

__all__ = ["label"]

# The --ray flags are RayOptions' own (as in `fluxprm score`); only the wording that says "score" changes here.
RAY_HELP = {
    "ray": {"help": "Label on a Ray cluster with Ray Data: an actor pool of --workers labelers (encoder, judge and "
                    "policy loaded on each actor); output, errors file and --resume are the same as without "
                    "--ray. Needs pip install 'fluxprm[ray]'."},
    "workers": {"help": "Actors labelling at once (with --ray), each holding its own encoder, judge and policy."},
    "gpus_per_worker": {"help": "GPUs each actor reserves (with --ray; fractions share a GPU). 0 labels on CPUs."},
    "cpus_per_worker": {"help": "CPUs each actor reserves (with --ray); a CPU actor runs that many torch threads."},
}


@generated_options
def label(
    *,
    inputs: Inputs,
    out: Annotated[Path, typer.Option("-o", "--out", help="Label records (JSONL), one per trace, in input order.")],
    errors: Errors = None,
    resume: Resume = False,
    config: Annotated[LabelConfig, Expand(metadata={"on_error": ON_ERROR_CLI})],
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Switch the quality reward (the judge) off.")] = False,
    fields: Annotated[FieldMap, FIELD_OVERRIDES],
    cluster: Annotated[RayOptions, Expand(metadata=RAY_HELP)],
    explicit: dict[str, Any],
) -> None:
    """Compute ReasonFlux-PRM teacher rewards: per thinking step alignment, quality (a judge LLM) and
    coherence, fused by a softmax over the components present; per trace a template-guided trajectory
    reward (--policy). One record per trace, in input order; rejected records go to --errors.

    With --ray, an actor pool on a Ray cluster labels the chunks, each actor with its own encoder, judge and
    policy (docs/DISTRIBUTED.md); the files written are byte for byte those of a run without it, and either
    kind of run resumes the other."""
    if misplaced := ray_flags_without_ray(cluster, explicit):
        die(f"{', '.join(misplaced)} only apply with --ray")
    paths = checked_inputs(inputs)
    checked_outputs(paths, out, errors, resume)
    if config.expert is not None and config.policy is None:
        die("--expert needs --policy (the template is only used by the policy's rollouts)")
    if no_judge:
        config = replace(config, judge=None)
    if not (config.alignment or config.coherence or config.judge or config.policy):
        die("every component is switched off: keep one of alignment, coherence, --judge or --policy")
    from fluxprm.labels.pipeline import run_label_job

    progress, advance = progress_bar("labelling", count_inputs(paths))
    with job_errors(out), progress:
        try:
            result = run_label_job(paths, out, errors, config, resume, fields=fields, on_progress=advance,
                                   cluster=cluster)
        except (RayUnavailable, DistributedError) as exc:
            die(str(exc))
    if result.already_complete:
        say(f"{out}: already complete ({result.skipped_done} records); nothing to do")
        return
    s = result.stats
    print_table("fluxprm label", [
        ("records", str(result.records_in)), ("traces", str(s.traces)), ("thinking steps", str(s.thinking_steps)),
        ("errors", str(s.errors)), ("quality missing", str(s.quality_missing)), ("rollouts", str(s.rollouts)),
        ("encode s", f"{s.encode_seconds + s.pool_seconds:.1f}"), ("judge s", f"{s.judge_seconds:.1f}"),
        ("trajectory s", f"{s.trajectory_seconds:.1f}"), ("total s", f"{result.seconds:.1f}")])
    say(f"labels → {result.out}")
    if result.skipped_done:
        say(f"resumed: {result.skipped_done} records were already done")
    print_rejections(result)
    print_duplicates(result)
    exit_if_nothing_written(result, "labelled")
