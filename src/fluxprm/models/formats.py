"""The checkpoint formats fluxprm reads, by name, in detection order; each format module declares itself.

Adding a format is one module with a ``FORMAT = CheckpointFormat(name, detect, load)`` and one line
below (the idea of lm-evaluation-harness's registries). Detection asks each format in this order
whether a folder is its own, so the formats with unambiguous marker files come first and the
name-based guess (math-shepherd) last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fluxprm.models import fluxprm_format, math_shepherd, qwen_prm, scalar_head, token_classification
from fluxprm.models.base import CheckpointFormat

__all__ = ["FORMATS", "detect_format", "get_format"]

FORMATS: dict[str, CheckpointFormat] = {f.name: f for f in [
    fluxprm_format.FORMAT,
    scalar_head.FORMAT,
    qwen_prm.FORMAT,
    token_classification.FORMAT,
    math_shepherd.FORMAT,
]}


def get_format(name: str) -> CheckpointFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def detect_format(folder: Path) -> str:
    """The checkpoint format of ``folder``, from the files present and ``config.json``."""
    config_path = folder / "config.json"
    config: dict[str, Any] = {}
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{config_path}: unreadable ({exc})") from exc
    for fmt in FORMATS.values():
        if fmt.detect(folder, config):
            return fmt.name
    if not config_path.exists():
        raise ValueError(f"{folder}: no config.json, not a transformers checkpoint")
    archs = " ".join(config.get("architectures") or [])
    raise ValueError(f"{folder}: cannot tell the PRM format from config.json (architectures: {archs or 'none'}); "
                     f"pass --format one of {', '.join(FORMATS)}")
