"""``fluxprm export``: write a trained fluxprm checkpoint in another format's layout.

``qwen-prm``: the Qwen2.5-Math-PRM / ReasonFlux-PRM-7B layout (``Qwen2ForProcessRewardModel``), which
vLLM, SGLang and the Qwen model cards load. Possible when the checkpoint was trained for it —
``layout: qwen-prm`` (steps joined by ``<extra_0>``), ``head_type: qwen-prm`` (``Linear-ReLU-Linear(h, 2)``
on the last layer) — on a Qwen2 backbone. A LoRA adapter is merged into the backbone. The format has
no trajectory head, so the exported model carries the step rewards only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from fluxprm.jobs import OutputPathError, check_folder_outputs
from fluxprm.models.fluxprm_format import FluxPRMConfig, load_fluxprm, resolve_base

__all__ = ["export_qwen_prm", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("qwen-prm",)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                    "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")


def _why_not_qwen_prm(config: FluxPRMConfig, base_config: dict) -> list[str]:
    reasons = []
    if config.layout != "qwen-prm":
        reasons.append(f"layout is {config.layout!r}, not 'qwen-prm' (train with --set layout=qwen-prm)")
    if config.head_type != "qwen-prm":
        reasons.append(f"head_type is {config.head_type!r}, not 'qwen-prm' (train with --set head_type=qwen-prm)")
    if config.feature_layers != [-1]:
        reasons.append(f"feature_layers is {config.feature_layers}, the format reads the last layer only ([-1])")
    if base_config.get("model_type") != "qwen2":
        reasons.append(f"the backbone is {base_config.get('model_type')!r}; Qwen2ForProcessRewardModel needs qwen2")
    return reasons


def export_qwen_prm(checkpoint: Path, out: Path) -> Path:
    """Write ``checkpoint`` as a ``Qwen2ForProcessRewardModel`` folder; the error lists what prevents it."""
    checkpoint, out = Path(checkpoint), Path(out)
    config = FluxPRMConfig.load(checkpoint)
    base = resolve_base(config.base, checkpoint)
    for source, what in ((checkpoint, "the checkpoint"), (base, "its base model")):
        if os.path.realpath(out) == os.path.realpath(source):
            raise OutputPathError(f"-o {out} is {what} folder: the export would overwrite its files with another "
                                  "format's; choose a new folder")
    check_folder_outputs([], out, (), "-o")  # a file, or a folder that cannot be made or written: before loading
    base_config = json.loads((base / "config.json").read_text())
    reasons = _why_not_qwen_prm(config, base_config)
    if reasons:
        raise ValueError(f"{checkpoint} cannot be exported as qwen-prm: " + "; ".join(reasons))
    prm = load_fluxprm(checkpoint, name=checkpoint.name, device=torch.device("cpu"), dtype=torch.float32,
                       max_length=None, aggregate=None, alpha=None)
    out.mkdir(parents=True, exist_ok=True)
    # the names vLLM's and SGLang's qwen2_rm.py load: model.* for the backbone, score.0/score.2 for the head
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in prm.backbone.state_dict().items()}
    tensors.update({f"score.{k}": v.detach().contiguous() for k, v in prm.step_head.score.state_dict().items()})
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = {k: v for k, v in base_config.items() if k != "auto_map"}
    cfg.update(architectures=["Qwen2ForProcessRewardModel"], num_labels=2, tie_word_embeddings=False)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for name in _TOKENIZER_FILES:
        if (base / name).exists():
            shutil.copy2(base / name, out / name)
    (out / "README.md").write_text(
        f"# {checkpoint.name} (qwen-prm export)\n\nExported by `fluxprm export --format qwen-prm` from a fluxprm "
        "checkpoint. Layout: chat template, steps joined by `<extra_0>` plus a trailing one; step reward = "
        "softmax(score(h))[1] at each separator. The trajectory head of the source checkpoint is not part of "
        "this format and was not exported.\n")
    return out
