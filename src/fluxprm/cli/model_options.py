"""The model and machine options of the commands that load a PRM themselves (``score``, ``serve``), declared once.

They are CLI-only: the library takes them as ``load_prm`` arguments. Separate from :mod:`fluxprm.cli.common`
because the format choices come from the format registry, which imports torch, and commands on score files must
start without it.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from fluxprm.cli.options import choices
from fluxprm.models.formats import FORMATS  # torch: these commands load a model anyway
from fluxprm.scores import AGGREGATES

__all__ = ["Dtype", "Device", "Threads", "MaxLength", "Format", "Aggregate", "Alpha"]

Dtype = Annotated[str, typer.Option("--dtype", help="auto, bfloat16, float16 or float32; auto: bfloat16 on GPUs and on "
                                    "CPUs with native bf16, else float32.  [default: auto]", show_default=False)]
Device = Annotated[str, typer.Option("--device", help="cpu, cuda or auto.  [default: auto]", show_default=False)]
Threads = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (use 1 on a machine shared "
                                                "with other CPU work).  [default: all cores]")]
MaxLength = Annotated[Optional[int], typer.Option("--max-length", help="Context budget in tokens.  "
                                                  "[default: the model's]")]
Format = Annotated[Optional[choices("format", FORMATS)], typer.Option(
    "--format", help="Checkpoint format, overriding detection.")]
Aggregate = Annotated[Optional[choices("aggregate", AGGREGATES)], typer.Option(
    "--aggregate", help="How step rewards combine into the score.  [default: the model card's]")]
Alpha = Annotated[Optional[float], typer.Option("--alpha", help="Weight of the trajectory reward in the score.  "
                                                "[default: the model's, 1.0]")]
