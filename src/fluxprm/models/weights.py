"""Safe weight reading: safetensors, or ``torch.load(weights_only=True)``; never pickled code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

__all__ = ["read_tensors", "load_torch_state", "linear_from"]


def _safetensor_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    return sorted(folder.glob("*.safetensors"))


def read_tensors(folder: Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Tensors whose names start with one of ``prefixes``, read lazily from the checkpoint's shards.

    Only the requested tensors are materialised, so reading a 2-layer head out of a 15 GB sharded
    checkpoint costs milliseconds.
    """
    found: dict[str, torch.Tensor] = {}
    files = _safetensor_files(folder)
    if files:
        for path in files:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    if key.startswith(prefixes):
                        found[key] = f.get_tensor(key)
        return found
    for path in sorted(folder.glob("pytorch_model*.bin")):
        state = load_torch_state(path)
        found.update({k: v for k, v in state.items() if k.startswith(prefixes)})
    return found


def load_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pt``/``.bin`` file with ``weights_only=True`` (tensors only, no code)."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def linear_from(state: dict[str, torch.Tensor], prefix: str) -> nn.Linear:
    """An ``nn.Linear`` holding ``{prefix}weight`` (and ``{prefix}bias`` if present) from ``state``."""
    weight = state[f"{prefix}weight"]
    bias = state.get(f"{prefix}bias")
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer
