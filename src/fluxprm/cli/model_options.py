"""The model and machine options of the commands that load a PRM, declared once.

``score`` and ``serve`` always load one (``Dtype``, ``Device``, ...); ``select``, ``bon`` and ``eval`` load one only
when ``-m`` (or no other source of scores) is given (``ScoringDtype``, ``ScoringDevice``, ``ScoringThreads``;
``bon`` takes its threads from ``BonOptions``, as its local policy uses them too).

They are CLI-only: the library takes them as ``load_prm`` arguments. The ``--format`` choices are
:data:`FORMAT_NAMES`, a copy of the names of the format registry (:data:`fluxprm.models.formats.FORMATS`): the
registry imports torch (~7 s cold), and ``score --help`` or a usage error must not pay for it before anything
loads. ``tests/test_cli_help.py`` checks that the copy is the registry's names, in its detection order.
"""

from __future__ import annotations

import math
from typing import Annotated, Optional

import typer

from fluxprm.cli.options import choices
from fluxprm.scores import AGGREGATES

__all__ = ["FORMAT_NAMES", "Dtype", "Device", "ScoringDtype", "ScoringDevice", "ScoringThreads", "Threads",
           "MaxLength", "Format", "Aggregate", "Alpha"]

# The names of fluxprm.models.formats.FORMATS, in detection order, without importing it (it imports torch).
FORMAT_NAMES = ("fluxprm", "scalar-head", "qwen-prm", "token-classification", "math-shepherd")

Dtype = Annotated[str, typer.Option("--dtype", help="auto, bfloat16, float16 or float32; auto: bfloat16 on GPUs and on "
                                    "CPUs with native bf16, else float32.  [default: auto]", show_default=False)]
Device = Annotated[str, typer.Option("--device", help="cpu, cuda or auto.  [default: auto]", show_default=False)]
ScoringDtype = Annotated[str, typer.Option("--dtype", help="With a model: auto, bfloat16, float16 or float32.  "
                                           "[default: auto]", show_default=False)]
ScoringDevice = Annotated[str, typer.Option("--device", help="With a model: cpu, cuda or auto.  [default: auto]",
                                            show_default=False)]
Threads = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (use 1 on a machine shared "
                                                "with other CPU work).  [default: all cores]")]
ScoringThreads = Annotated[Optional[int], typer.Option("--threads", help="With a model: CPU threads for torch (use "
                                                       "1 on a machine shared with other CPU work).  [default: all "
                                                       "cores]")]
MaxLength = Annotated[Optional[int], typer.Option("--max-length", help="Context budget in tokens.  "
                                                  "[default: the model's]")]
Format = Annotated[Optional[choices("format", FORMAT_NAMES)], typer.Option(
    "--format", help="Checkpoint format, overriding detection.")]
Aggregate = Annotated[Optional[choices("aggregate", AGGREGATES)], typer.Option(
    "--aggregate", help="How step rewards combine into the score.  [default: the model card's]")]
def _finite(value: float | None) -> float | None:
    """``--alpha nan`` (or ``inf``) made every score null, exit 0: a weight must be a finite number."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}", param_hint="--alpha")
    return value


Alpha = Annotated[Optional[float], typer.Option("--alpha", callback=_finite, help="Weight of the trajectory reward in "
                                                "the score.  [default: the model's, 1.0]")]
