"""``load_prm``: resolve a name or folder, pick its checkpoint format, let the format build the PRM."""

from __future__ import annotations

from typing import Any

import torch

from fluxprm.device import resolve_device, resolve_dtype
from fluxprm.models.base import LoadRequest, TransformerPRM
from fluxprm.models.formats import detect_format, get_format
from fluxprm.models.identity import folder_fingerprint
from fluxprm.models.resolve import DEFAULT_MODEL, resolve_model

__all__ = ["load_prm"]


def load_prm(name_or_path: str | None = None, *, format: str | None = None, device: str = "auto",
             dtype: str | torch.dtype = "auto", max_length: int | None = None, aggregate: str | None = None,
             alpha: float | None = None, **options: Any) -> TransformerPRM:
    """Load a PRM by registry name, local folder or hub id (default: the embedded ``fluxprm-mini``).

    ``format`` overrides detection; ``options`` are format options (``system_prompt`` for qwen-prm,
    ``separator`` for token-classification, ``joiner`` for scalar-head, ``step_tag`` for math-shepherd).
    Weights load through safetensors or ``torch.load(weights_only=True)``; remote code never runs.
    """
    folder, entry = resolve_model(name_or_path or DEFAULT_MODEL)
    fmt = get_format(format or (entry.format if entry else None) or detect_format(folder))
    opts = dict(entry.options) if entry else {}
    opts.update({k: v for k, v in options.items() if v is not None})
    dev = resolve_device(device)
    request = LoadRequest(folder, entry.name if entry else folder.name, dev, resolve_dtype(dtype, dev),
                          max_length, aggregate, alpha, opts)
    prm = fmt.load(request)
    prm.weights_id = folder_fingerprint(folder)
    return prm
