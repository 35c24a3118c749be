"""Saving a trained model as a checkpoint folder that ``fluxprm score -m FOLDER`` loads.

The folder holds ``fluxprm_config.json`` (the model options, the context and the segmentation it
was trained with: :class:`~fluxprm.models.fluxprm_format.FluxPRMConfig`), ``heads.safetensors``,
and the trained backbone part: a peft adapter (``lora``) or the whole backbone under ``backbone/``
(``full``); a ``frozen`` run references its backbone by name. ``train_config.yaml`` keeps every
training knob, so the run can be repeated.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from fluxprm.models.fluxprm_format import FluxPRM, save_heads
from fluxprm.train.config import TrainConfig

__all__ = ["save_checkpoint"]


def save_checkpoint(prm: FluxPRM, out: Path, cfg: TrainConfig) -> None:
    """Write config, heads and (LoRA) adapter or (full) backbone; the folder loads with ``-m``."""
    import yaml

    model_config = prm.config  # built by cfg.model_config(): records lora and the segmentation
    if cfg.mode == "lora":
        prm.backbone.save_pretrained(str(out))  # adapter_config.json + adapter_model.safetensors
    elif cfg.mode == "full":
        prm.backbone.save_pretrained(str(out / "backbone"))
        prm.tokenizer.save_pretrained(str(out / "backbone"))
        model_config.base = "./backbone"  # relative to the checkpoint, so the folder can move
    save_heads(out, prm.step_head, prm.traj_head, prm.signal_head)
    model_config.save(out)
    (out / "train_config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
