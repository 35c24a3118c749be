"""The ``fluxprm`` command line: parse arguments, call the library, print. No logic lives here."""

from __future__ import annotations

import os
import shutil
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from fluxprm import cli_options as opts

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Trajectory-aware process reward models: score, select, Best-of-N, label, train.")
err = Console(stderr=True, soft_wrap=True)


class Long(str, Enum):
    truncate = "truncate"
    windows = "windows"


class Batching(str, Enum):
    auto = "auto"
    single = "single"
    padded = "padded"


def _die(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


ModelOpt = Annotated[Optional[str], typer.Option("-m", "--model", help="Registry name, local checkpoint folder "
                                                 "or hub id (default: the embedded fluxprm-mini).")]


@app.command()
def score(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL / JSON / Parquet files, optionally .gz.")],
    model: ModelOpt = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Score records (JSONL); stdout if absent.")] = None,
    errors: opts.Errors = None,
    on_error: opts.OnErrorOpt = opts.OnError.skip,
    resume: opts.Resume = False,
    batch_tokens: Annotated[int, typer.Option("--batch-tokens", help="Padded tokens per forward batch.")] = 16384,
    batching: Annotated[Batching, typer.Option("--batching", help="auto measures single vs padded on the first chunk.")] = Batching.auto,
    dtype: Annotated[str, typer.Option("--dtype", help="auto | bfloat16 | float16 | float32.")] = "auto",
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Context budget in tokens (default: the model's).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda | auto.")] = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (default: all cores; use 1 "
                                                   "on a machine shared with other CPU work).")] = None,
    long: Annotated[Long, typer.Option("--long", help="Traces over the context: drop earliest thinking steps, or score in windows.")] = Long.truncate,
    format: Annotated[Optional[str], typer.Option("--format", help="Override checkpoint format detection.")] = None,
    aggregate: Annotated[Optional[str], typer.Option("--aggregate", help="Step rewards → score: mean | min | last | prod | max.")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="Weight of the trajectory reward in score (default: the model's, 1.0).")] = None,
    separator: opts.Separator = opts.DEFAULT_SEPARATOR,
    min_chars: opts.MinChars = opts.DEFAULT_MIN_CHARS,
    max_thinking_steps: opts.MaxThinkingSteps = opts.DEFAULT_MAX_THINKING_STEPS,
    max_response_steps: opts.MaxResponseSteps = opts.DEFAULT_MAX_RESPONSE_STEPS,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Traces per chunk (sort window and checkpoint interval).")] = 64,
    id_field: opts.IdField = None,
    problem_field: opts.ProblemField = None,
    response_field: opts.ResponseField = None,
    thinking_field: opts.ThinkingField = None,
    steps_field: opts.StepsField = None,
    gold_field: opts.GoldField = None,
    ray: Annotated[bool, typer.Option("--ray", help="Distributed scoring with Ray Data (extra 'ray').")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Ray workers.")] = 1,
) -> None:
    """Score traces with a PRM: one record per trace, in input order; bad records go to --errors."""
    from fluxprm.engine import ScoreFailure, ScoreOptions
    from fluxprm.models.loading import ModelNotFound, load_prm
    from fluxprm.outputs import ResumeMismatch
    from fluxprm.score_job import count_records, run_score_job

    if ray:
        _die("--ray needs the 'ray' extra and a Ray cluster; it is not available in this build yet")
    if resume and out is None:
        _die("--resume needs -o/--out (stdout cannot be resumed)")
    paths = [str(p) for p in inputs]
    for p in paths:
        if not os.path.exists(p):
            _die(f"input file not found: {p}")
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        prm = load_prm(model, format=format, device=device, dtype=dtype, max_length=max_length,
                       aggregate=aggregate, alpha=alpha)
    except (ModelNotFound, ValueError) as exc:
        _die(str(exc))
    options = ScoreOptions(
        steps=opts.step_config(separator, min_chars, max_thinking_steps, max_response_steps),
        batch_tokens=batch_tokens, batching=batching.value, long=long.value, chunk_size=chunk_size,
        on_error=on_error.value)
    fields = opts.field_map(id_field, problem_field, response_field, thinking_field, steps_field, gold_field)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    total = count_records(paths)
    progress = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=err, transient=False, disable=out is None)
    try:
        with progress:
            task = progress.add_task("score", total=total)
            result = run_score_job(prm, paths, out, errors, options, fields, resume,
                                   on_progress=lambda n: progress.advance(task, n))
    except ScoreFailure as exc:
        _die(str(exc), code=1)
    except ResumeMismatch as exc:
        _die(str(exc))
    if result.already_complete:
        err.print(f"{out}: already complete ({result.skipped_done} records); nothing to do")
        return
    _print_summary(result, prm.name)


def _print_summary(result, model_name: str) -> None:
    s = result.stats
    table = Table(title=f"fluxprm score · {model_name}", show_header=True, header_style="bold")
    for col in ("records", "scored", "steps", "tokens", "tokens/s", "errors", "truncated", "batching"):
        table.add_column(col, justify="right")
    table.add_row(str(s.traces + s.errors + result.skipped_done), str(s.traces), str(s.steps), str(s.tokens),
                  f"{result.tokens_per_s:,.0f}", str(s.errors), str(s.truncated), s.batching or "-")
    err.print(table)
    if result.out:
        err.print(f"scores → {result.out}" + (f"   rejected → {result.errors}" if s.errors else ""))
    if result.skipped_done:
        err.print(f"resumed: {result.skipped_done} records were already done")


def _register_label() -> None:
    from fluxprm.labels.cli_command import label

    app.command("label")(label)


_register_label()


@app.command()
def train(
    labels: Annotated[list[Path], typer.Argument(help="Label files from `fluxprm label` and/or labelled trace files "
                                                 "(PRMBench, ProcessBench, PRM800K, Math-Shepherd, Best-of-N pools).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Checkpoint folder (loads with `fluxprm score -m`).")],
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML with any TrainConfig keys.")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Backbone: smollm2 (embedded), a folder or hub id.")] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="frozen | lora | full.")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps (overrides epochs).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE override of any TrainConfig field "
                                                      "(value parsed as YAML), repeatable.")] = None,
) -> None:
    """Train a PRM with the joint step + trajectory objective (see fluxprm.train.TrainConfig for every knob)."""
    import yaml

    from fluxprm.train import TrainConfig, train as run_train

    overrides: dict = {"base": base, "mode": mode, "max_steps": max_steps, "seed": seed}
    for item in set_ or []:
        if "=" not in item:
            _die(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip().replace("-", "_")] = yaml.safe_load(value)
    for p in labels:
        if not p.exists():
            _die(f"input file not found: {p}")
    try:
        cfg = TrainConfig.from_yaml(config, overrides)
    except (ValueError, TypeError, OSError) as exc:
        _die(str(exc))
    from rich.progress import Progress

    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("features", total=None)

        def on_progress(stage: str, i: int, n: int) -> None:
            progress.update(task, description=stage, completed=i, total=n)

        try:
            summary = run_train([str(p) for p in labels], out, cfg, on_progress)
        except ValueError as exc:
            _die(str(exc))
    err.print(f"trained {summary['mode']} on {summary['train']} examples "
              f"({summary['val']} held out, {summary['rejected']} rejected) in {summary['seconds']} s → {out}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `fluxprm train`.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder to write.")],
    format: Annotated[str, typer.Option("--format", help="Target layout: qwen-prm (Qwen2ForProcessRewardModel).")] = "qwen-prm",
) -> None:
    """Write a trained checkpoint in another format's layout (e.g. for vLLM / SGLang serving)."""
    from fluxprm.export import EXPORT_FORMATS, export_qwen_prm

    if format not in EXPORT_FORMATS:
        _die(f"unknown export format {format!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if not (checkpoint / "fluxprm_config.json").exists():
        _die(f"{checkpoint}: not a fluxprm checkpoint (no fluxprm_config.json)")
    try:
        folder = export_qwen_prm(checkpoint, out)
    except ValueError as exc:
        _die(str(exc))
    err.print(f"exported {checkpoint} as {format} → {folder}")


@app.command()
def models() -> None:
    """List the PRMs fluxprm knows by name, with their formats and where they come from."""
    from fluxprm.models.registry import REGISTRY

    table = Table(show_header=True, header_style="bold")
    for col in ("name", "format", "source", "description"):
        table.add_column(col)
    for e in REGISTRY.values():
        table.add_row(e.name, e.format, e.hub_id or f"bundled:{e.bundled}", e.description)
    Console(width=max(160, shutil.get_terminal_size().columns)).print(table)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
