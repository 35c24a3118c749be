"""``load_prm``: resolve a name or folder, detect its format, build the PRM."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fluxprm.device import resolve_device, resolve_dtype
from fluxprm.models.backbone import load_backbone, load_tokenizer, read_config
from fluxprm.models.base import TransformerPRM
from fluxprm.models.registry import REGISTRY, ModelEntry, lookup
from fluxprm.models.weights import load_torch_state, read_tensors

__all__ = ["FORMATS", "load_prm", "detect_format", "resolve_model"]

FORMATS = ("qwen-prm", "scalar-head", "math-shepherd", "token-classification", "fluxprm")
DEFAULT_MODEL = "fluxprm-mini"


class ModelNotFound(FileNotFoundError):
    pass


def resolve_model(name_or_path: str) -> tuple[Path, ModelEntry | None]:
    """A local folder for ``name_or_path``: a folder as given, a registry name, or a hub id.

    Hub models come from the local Hugging Face cache; they are downloaded only where the hub is
    reachable and ``HF_HUB_OFFLINE`` is unset. The error says exactly what to do otherwise.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, None
    entry = lookup(name_or_path)
    if entry and entry.bundled:
        from fluxprm.models.bundled import bundled_model_dir

        return bundled_model_dir(entry.bundled), entry
    hub_id = entry.hub_id if entry else name_or_path
    if not hub_id or "/" not in hub_id:
        known = ", ".join(sorted(REGISTRY))
        raise ModelNotFound(f"model {name_or_path!r} is neither a folder nor a known name ({known}) nor a hub id")
    try:
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        folder = snapshot_download(hub_id, local_files_only=offline,
                                   allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.pt",
                                                   "*.tiktoken", "*.jinja"])
    except Exception as exc:  # noqa: BLE001 - any hub failure gets the same actionable message
        raise ModelNotFound(
            f"model {name_or_path!r} (hub id {hub_id}) is not in the local Hugging Face cache and could not be "
            f"downloaded ({type(exc).__name__}). Download it where the hub is reachable "
            f"(`huggingface-cli download {hub_id} --local-dir DIR`) and pass -m DIR.") from exc
    return Path(folder), entry


def detect_format(folder: Path) -> str:
    """The checkpoint format from the files present and ``config.json``'s architectures."""
    if (folder / "fluxprm_config.json").exists():
        return "fluxprm"
    if (folder / "reward_head.pt").exists():
        return "scalar-head"
    config_path = folder / "config.json"
    if not config_path.exists():
        raise ValueError(f"{folder}: no config.json, not a transformers checkpoint")
    config = json.loads(config_path.read_text())
    archs = " ".join(config.get("architectures") or [])
    if "ProcessRewardModel" in archs:
        return "qwen-prm"
    if "ForTokenClassification" in archs:
        return "token-classification"
    if "shepherd" in str(config.get("_name_or_path", "")).lower() or "shepherd" in folder.name.lower():
        return "math-shepherd"
    raise ValueError(f"{folder}: cannot tell the PRM format from config.json (architectures: {archs or 'none'}); "
                     f"pass --format one of {', '.join(FORMATS)}")


def _context_length(config: Any, requested: int | None) -> int:
    if requested:
        return int(requested)
    return int(getattr(config, "max_position_embeddings", None) or 4096)


def _linear_from(state: dict[str, torch.Tensor], prefix: str) -> nn.Linear:
    weight = state[f"{prefix}weight"]
    bias = state.get(f"{prefix}bias")
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def load_prm(name_or_path: str | None = None, *, format: str | None = None, device: str = "auto",
             dtype: str | torch.dtype = "auto", max_length: int | None = None, aggregate: str | None = None,
             alpha: float | None = None, **options: Any) -> TransformerPRM:
    """Load a PRM by registry name, local folder or hub id (default: the embedded ``fluxprm-mini``).

    ``format`` overrides detection; ``options`` are format options (``system_prompt`` for qwen-prm,
    ``separator`` for token-classification, ``joiner`` for scalar-head, ``step_tag`` for math-shepherd).
    Weights load through safetensors or ``torch.load(weights_only=True)``; remote code never runs.
    """
    name_or_path = name_or_path or DEFAULT_MODEL
    folder, entry = resolve_model(name_or_path)
    fmt = format or (entry.format if entry else None) or detect_format(folder)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    opts = dict(entry.options) if entry else {}
    opts.update({k: v for k, v in options.items() if v is not None})
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    name = entry.name if entry else folder.name
    if fmt == "fluxprm":
        from fluxprm.models.fluxprm_format import load_fluxprm

        return load_fluxprm(folder, name=name, device=dev, dtype=dt, max_length=max_length,
                            aggregate=aggregate, alpha=alpha, **opts)
    config = read_config(folder)
    tokenizer = load_tokenizer(folder)
    backbone = load_backbone(folder, config, dt, dev)
    common = dict(name=name, device=dev, dtype=dt, max_length=_context_length(config, max_length),
                  aggregate=aggregate, alpha=1.0 if alpha is None else alpha)
    if fmt == "qwen-prm":
        from fluxprm.models.qwen_prm import QwenPRM, make_score_head

        state = read_tensors(folder, ("score.",))
        if not state:
            raise ValueError(f"{folder}: no 'score.*' weights: not a qwen-prm checkpoint")
        head = make_score_head(config.hidden_size, state["score.2.weight"].shape[0])
        head.load_state_dict({k.removeprefix("score."): v for k, v in state.items()})
        return QwenPRM(backbone, tokenizer, head.to(dev, dt), system_prompt=opts.get("system_prompt"), **common)
    if fmt == "scalar-head":
        from fluxprm.models.scalar_head import ScalarHeadPRM

        head = _linear_from(load_torch_state(folder / "reward_head.pt"), "")
        return ScalarHeadPRM(backbone, tokenizer, head.to(dev, dt), joiner=opts.get("joiner", "\n\n"), **common)
    if fmt == "math-shepherd":
        from fluxprm.models.math_shepherd import STEP_TAG, MathShepherdPRM

        good = opts.get("good_token", "+")
        bad = opts.get("bad_token", "-")
        cand = tokenizer.encode(f"{good} {bad}", add_special_tokens=False)
        state = read_tensors(folder, ("lm_head.weight",))
        rows = state.get("lm_head.weight")
        if rows is None:  # tied embeddings
            rows = backbone.get_input_embeddings().weight.detach().cpu()
        candidate_rows = rows[[cand[0], cand[-1]]].to(dev, dt)
        return MathShepherdPRM(backbone, tokenizer, candidate_rows, step_tag=opts.get("step_tag", STEP_TAG),
                               **common)
    from fluxprm.models.token_classification import TokenClassificationPRM

    state = read_tensors(folder, ("score.", "classifier."))
    prefix = "score." if "score.weight" in state else "classifier."
    if f"{prefix}weight" not in state:
        raise ValueError(f"{folder}: no 'score.weight' or 'classifier.weight': not a token-classification PRM")
    head = _linear_from(state, prefix)
    return TokenClassificationPRM(backbone, tokenizer, head.to(dev, dt), separator=opts.get("separator", "\n"),
                                  **common)
