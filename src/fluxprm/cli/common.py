"""Options that are not library knobs (files, resume, the model), shared by the commands that stream records,
and the checks every such command makes on its inputs before any model loads."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from contextlib import contextmanager
from typing import Annotated, Iterator, Optional, Sequence

import typer

from fluxprm.cli.options import Expand
from fluxprm.cli.report import die, warn
from fluxprm.engine.options import ScoreOptions
from fluxprm.jobs import InputNotAFile, check_inputs, check_option_file
from fluxprm.records import count_records

__all__ = ["Inputs", "Model", "Errors", "Resume", "FIELD_OVERRIDES", "ON_ERROR_CLI", "checked_inputs",
           "checked_outputs", "count_inputs", "job_errors"]

Inputs = Annotated[list[Path], typer.Argument(
    help="Trace files: JSONL, JSON arrays or Parquet, optionally .gz; formats are detected per record.",
    metavar="INPUT", show_default=False)]
Model = Annotated[Optional[str], typer.Option(
    "-m", "--model", help="Registry name (see `fluxprm models`), local checkpoint folder or hub id.  "
                          "[default: fluxprm-mini, embedded]")]
Errors = Annotated[Optional[Path], typer.Option(
    "--errors", help="Where rejected records go (JSONL, with file, line and why).  [default: OUT.errors.jsonl]")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue an interrupted run of the same command, inputs and options; the output equals "
                     "an uninterrupted run's byte for byte.")]

# The record-field overrides (``--id-field`` ...) are FieldMap's fields with a suffix; FieldMap keeps no help.
FIELD_OVERRIDES = Expand(suffix="_field", metadata={
    "id": {"help": "Record field holding the id (default: detected; else FILE:LINE)."},
    "problem": {"help": "Record field holding the problem."},
    "response": {"help": "Record field holding the response."},
    "thinking": {"help": "Record field holding the thinking text."},
    "steps": {"help": "Record field holding a list of steps (PRMBench: original_process or modified_process)."},
    "gold": {"help": "Record field holding the gold answer."},
})

# Error handling on the command line is score's for every command that streams records: skip (default) or fail.
ON_ERROR_CLI = {k: v for k, v in next(f for f in fields(ScoreOptions) if f.name == "on_error").metadata.items()
                if k != "help"}


def checked_inputs(inputs: Sequence[Path]) -> list[str]:
    """The input paths as strings; a missing file, a directory or a pipe is a usage error (exit 2), named."""
    paths = [str(p) for p in inputs]
    try:
        check_inputs(paths)
    except (FileNotFoundError, IsADirectoryError, InputNotAFile) as exc:
        die(str(exc))
    return paths


def check_option_files(flag: str, paths: Sequence[str | Path | None], what: str) -> None:
    """Every file given to ``flag`` (``--scores``, ``--calibrate``) exists and is a file: else one line naming the
    option and ``what`` it wants (exit 2). Not an input-file error: these are not the records being read."""
    for given in paths:
        try:
            if given:
                check_option_file(flag, given, what)
        except (IsADirectoryError, InputNotAFile, FileNotFoundError) as exc:
            die(str(exc))


def checked_outputs(paths: Sequence[str], out: Path | None, errors: Path | None, resume: bool = False) -> None:
    """Refuse, before any model loads or progress shows, an output that is an input or a directory, and a
    ``--resume`` whose checkpoint or outputs are damaged (the job checks again, with the run's identity)."""
    from fluxprm.jobs import OutputPathError, check_outputs
    from fluxprm.outputs import ResumeMismatch, check_resumable, default_errors_path

    errors = errors or (default_errors_path(out) if out is not None else None)
    try:
        check_outputs(paths, out, errors)
        if resume and out is not None:
            check_resumable(out, errors)
    except (OutputPathError, ResumeMismatch) as exc:
        die(str(exc))


@contextmanager
def job_errors(out: Path | None) -> Iterator[None]:
    """Turn what a streaming job can raise into the documented exit codes: 1 for a record that stopped an
    ``--on-error fail`` run, 2 (one line, no traceback) for everything the user has to fix."""
    from fluxprm.jobs import JobFailure, OutputPathError
    from fluxprm.llm import LLMError
    from fluxprm.outputs import ResumeMismatch

    try:
        yield
    except JobFailure as exc:
        die(str(exc), code=1)
    except (ResumeMismatch, OutputPathError, FileNotFoundError, LLMError) as exc:
        die(str(exc))
    except ValueError as exc:  # e.g. a judge or policy that cannot load
        die(str(exc))
    except OSError as exc:  # an output folder that cannot be created or written
        die(f"cannot write {exc.filename or out}: {exc.strerror or exc}")


def count_inputs(paths: Sequence[str]) -> int | None:
    """Records in all inputs, for the progress total (None if a file cannot tell); warns about empty files."""
    counts = [count_records(p) for p in paths]
    for path, n in zip(paths, counts):
        if n == 0:
            warn(f"{path} holds no records")
    return None if any(n is None for n in counts) else sum(counts)  # type: ignore[arg-type]
