"""Loading a checkpoint's transformer backbone and tokenizer without remote code."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

from fluxprm.quiet import no_loading_bars

__all__ = ["read_config", "load_backbone", "load_tokenizer", "load_standard"]


def read_config(folder: Path) -> PretrainedConfig:
    """The checkpoint's config as the built-in transformers class of its ``model_type``.

    ``auto_map`` (pointers to remote modeling code, as Qwen2.5-Math-PRM ships) is dropped: the
    backbone is a stock architecture and the head is rebuilt here, so no remote code is ever needed —
    and new transformers releases cannot break it.
    """
    data: dict[str, Any] = json.loads((folder / "config.json").read_text())
    data.pop("auto_map", None)
    model_type = data.pop("model_type", None)
    if not model_type:
        raise ValueError(f"{folder / 'config.json'}: field 'model_type' is missing")
    return AutoConfig.for_model(model_type, **data)


def load_backbone(folder: Path, config: PretrainedConfig, dtype: torch.dtype,
                  device: torch.device) -> torch.nn.Module:
    """The base model (no LM or task head) with weights from ``folder``, in ``dtype`` on ``device``.

    Checkpoints store the backbone under ``model.*`` next to their head; transformers strips the
    prefix and we load the head ourselves, so the "unused weights" notice is expected and silenced.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), no_loading_bars():
            warnings.simplefilter("ignore")
            model = AutoModel.from_pretrained(str(folder), config=config, dtype=dtype, trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(level)
    return model.to(device).eval()


def load_tokenizer(folder: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def load_standard(folder: Path, dtype: torch.dtype, device: torch.device) -> tuple[PretrainedConfig, Any, torch.nn.Module]:
    """Config, tokenizer and backbone of a checkpoint that stores its backbone in transformers' layout."""
    config = read_config(folder)
    return config, load_tokenizer(folder), load_backbone(folder, config, dtype, device)
