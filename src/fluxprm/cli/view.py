"""``fluxprm view``: a thin entry over :func:`fluxprm.view.build_page` (no torch: a scores file is all it needs).

The page options are :class:`~fluxprm.view.ViewOptions` fields (generated, segmentation included); declared
here are only the files and the record-field overrides the traces are read with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fluxprm.cli.common import FIELD_OVERRIDES
from fluxprm.cli.options import generated_options
from fluxprm.cli.report import die, print_table, say, warn
from fluxprm.jobs import InputNotAFile, OutputPathError
from fluxprm.traces import FieldMap
from fluxprm.view import ViewOptions, build_page

__all__ = ["view"]


@generated_options
def view(
    *,
    scores: Annotated[Path, typer.Argument(help="Score records written by `fluxprm score` (best with --spans).",
                                           metavar="SCORES.jsonl", show_default=False)],
    traces: Annotated[Optional[list[Path]], typer.Option(
        "--traces", help="The input files that were scored, for the step texts (joined by source and line). "
                         "Repeat the flag for several files.  [default: scores only]")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        "--labels", help="Label records from `fluxprm label`: teacher components per thinking step and the "
                         "trajectory reward.")] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="The HTML page to write (one self-contained file).")],
    options: ViewOptions,
    fields: Annotated[FieldMap, FIELD_OVERRIDES],
) -> None:
    """Write one self-contained HTML page of scored traces: a filterable list, and per trace every thinking and
    response step coloured by its reward (with the teacher rewards where --labels is given). Opens from
    file:// with no network; large inputs are shortened to --max-bytes, and the page says what was left out."""
    try:
        report = build_page(scores, out, traces or (), labels, options, fields)
    except (FileNotFoundError, IsADirectoryError, InputNotAFile, OutputPathError) as exc:  # checked before reading
        die(str(exc))
    except OSError as exc:
        die(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    for note in report.notes:
        warn(note.line()) if note.level == "warning" else say(f"note: {note.line()}")
    print_table("fluxprm view", [("traces", f"{report.traces:,}"), ("with text", f"{report.with_text:,}"),
                                 ("shortened", f"{report.shortened:,}"), ("texts left out", f"{report.texts_left_out:,}"),
                                 ("traces left out", f"{report.traces_left_out:,}"),
                                 ("size", f"{report.bytes / 1e6:,.1f} MB")])
    say(f"page → {report.out}")
    if report.traces == 0 and report.unreadable_scores:
        die(f"none of the {report.unreadable_scores} lines of {scores} is a score record written by `fluxprm score`",
            code=1)
