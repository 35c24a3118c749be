"""``fluxprm export``: a thin entry over :func:`fluxprm.export.export_qwen_prm`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fluxprm.cli.report import die, say

__all__ = ["export"]



def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `fluxprm train`.",
                                               metavar="CHECKPOINT", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder to write.")],
    format: Annotated[str, typer.Option("--format", help="Target layout: qwen-prm (Qwen2ForProcessRewardModel, "
                                        "served by vLLM and SGLang).  [default: qwen-prm]",
                                        show_default=False)] = "qwen-prm",
) -> None:
    """Write a trained checkpoint in another format's layout (e.g. for vLLM / SGLang serving)."""
    from fluxprm.export import EXPORT_FORMATS, export_qwen_prm

    if format not in EXPORT_FORMATS:
        die(f"unknown export format {format!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if not (checkpoint / "fluxprm_config.json").exists():
        die(f"{checkpoint}: not a fluxprm checkpoint (no fluxprm_config.json)")
    try:
        folder = export_qwen_prm(checkpoint, out)
    except (ValueError, FileNotFoundError) as exc:  # FileNotFoundError: ModelNotFound, a missing backbone
        die(str(exc))
    except OSError as exc:  # a disk that fills, a folder that vanishes mid-write
        die(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    say(f"exported {checkpoint} as {format} → {folder}")
