"""Frozen-backbone features for ``mode: frozen``: computed once per example, cached on disk.

With the backbone frozen, the heads only ever see its hidden states at each step's read position and
at the last token. Those are computed with the very ``encode`` used at scoring time (so training and
inference lay traces out identically) and stored as float16 safetensors keyed by a hash of the
backbone, layers, dtype, context and token ids — a rerun, a new head size or a new objective reuse them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from fluxprm.models.base import TraceTooLong
from fluxprm.models.fluxprm_format import FluxPRM
from fluxprm.steps import PRMInput
from fluxprm.train.config import TrainConfig
from fluxprm.train.data import Example

__all__ = ["Features", "extract_features"]


@dataclass
class Features:
    """One example's backbone features at its read positions."""

    steps: torch.Tensor    # (n_kept_steps, F)
    last: torch.Tensor     # (F,)
    kept: tuple[int, int]  # first kept step index, number kept (earliest thinking steps may be dropped)


def _feature_cache_dir(cfg: TrainConfig) -> Path:
    if cfg.feature_cache:
        return Path(cfg.feature_cache)
    from fluxprm.embedded import cache_dir

    return cache_dir() / "features"


@torch.inference_mode()
def extract_features(prm: FluxPRM, examples: list[Example], cfg: TrainConfig,
                     progress: Callable[[int, int], None] | None = None) -> list[Features | None]:
    """Backbone features at each example's read positions and last token, cached on disk.

    An example whose problem and response alone exceed ``max_length`` yields ``None`` (it cannot be
    laid out without cutting the response, which the PRM never sees cut at scoring time either).
    """
    from safetensors.torch import load_file, save_file

    folder = _feature_cache_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    tag = json.dumps([cfg.base, cfg.feature_layers, str(prm.dtype), prm.max_length])
    out: list[Features | None] = []
    for i, ex in enumerate(examples):
        try:
            enc = prm.encode(PRMInput(ex.problem, ex.thinking_steps, ex.response_steps))
        except TraceTooLong:
            out.append(None)
            continue
        key = hashlib.sha256((tag + json.dumps(enc.input_ids) + json.dumps(enc.read_positions)).encode()).hexdigest()
        path = folder / f"{key[:40]}.safetensors"
        if path.exists():
            t = load_file(str(path))
        else:
            ids = torch.tensor([enc.input_ids], device=prm.device)
            h = prm.features(ids, None)[0]
            t = {"steps": h[torch.tensor(enc.read_positions)].to(torch.float16).cpu().contiguous(),
                 "last": h[-1].to(torch.float16).cpu().contiguous()}
            tmp = path.with_suffix(".tmp")
            save_file(t, str(tmp))
            tmp.replace(path)  # atomic: a killed run never leaves a half-written cache entry
        out.append(Features(t["steps"], t["last"], (enc.dropped_thinking, len(enc.read_positions))))
        if progress:
            progress(i + 1, len(examples))
    return out
