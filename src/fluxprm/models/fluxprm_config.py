"""What a ``fluxprm`` checkpoint records (``fluxprm_config.json``): the model options and how it was trained.

Kept apart from :mod:`fluxprm.models.fluxprm_format` (the heads and the loader) because it needs no torch:
``TrainConfig`` inherits :class:`FluxPRMOptions`, and ``fluxprm train --help`` or a config error must answer
at once instead of after a ~7 s torch import.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_NAME", "HEADS_NAME", "SUPPORTED_VERSION", "EMBEDDED_BASES", "FluxPRMOptions", "FluxPRMConfig",
           "recorded_error_threshold"]

CONFIG_NAME = "fluxprm_config.json"
EMBEDDED_BASES = ("smollm2", "smollm2-135m-instruct")  # ``base`` names of the embedded SmolLM2, never a folder
SUPPORTED_VERSION = 2
HEADS_NAME = "heads.safetensors"


@dataclass
class FluxPRMOptions:
    """The model options a user chooses, declared once: ``TrainConfig`` inherits them as training knobs and
    :class:`FluxPRMConfig` records them in the checkpoint, so each has one default and one help text."""

    base: str = field(default="smollm2", metadata={
        "help": "Backbone: smollm2 (the embedded SmolLM2-135M-Instruct), a folder, or a cached hub id."})
    feature_layers: list[int] = field(default_factory=lambda: [-1], metadata={
        "help": "Hidden-state layers concatenated as the heads' input (-1 = last)."})
    head_hidden: int = field(default=256, metadata={"help": "Hidden width of the step and trajectory heads."})
    joiner: str = field(default="\n\n", metadata={
        "help": "Text between steps in the assistant turn (layout chat); backslash escapes are read (\\n).",
        "escapes": True})
    system_prompt: str | None = field(default=None, metadata={
        "help": "System turn placed before the problem; none by default."})
    aggregate: str = field(default="mean", metadata={
        "help": "How step rewards combine into the trace score: mean, min, last, prod or max."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the trajectory reward in the score."})
    max_length: int = field(default=2048, metadata={
        "help": "Context in tokens: training lays examples out in it, and the checkpoint scores in it by default "
                "(earliest thinking steps dropped to fit)."})
    layout: str = field(default="chat", metadata={
        "help": "chat: steps joined by `joiner`, read at each step's last token; qwen-prm: the Qwen2.5-Math-PRM "
                "chat with <extra_0> separators, read there (exportable)."})
    trajectory_signals: list[str] = field(default_factory=list, metadata={
        "help": "Whole-trace signals the trajectory head reads beside the hidden state (fluxprm.signals: "
                "answer_stated, unfinished_thinking, hesitation_rate, log_chars); none by default."})
    head_type: str = field(default="mlp", metadata={
        "help": "mlp: LayerNorm-Linear-GELU-Linear(1); qwen-prm: Linear-ReLU-Linear(h, 2) on the last layer "
                "(exportable)."})


@dataclass
class FluxPRMConfig(FluxPRMOptions):
    """Everything needed to rebuild a fluxprm PRM around its backbone, and how it was trained."""

    lora: bool = field(default=False, metadata={"help": "A peft LoRA adapter is saved next to the heads."})
    steps: dict[str, Any] | None = field(default=None, metadata={
        "help": "Segmentation of free text the checkpoint was trained with (StepConfig fields: separator, "
                "min_chars, max_thinking_steps, max_response_steps); None in checkpoints older than it."})
    error_threshold: float | None = field(default=None, metadata={
        "help": "Step reward below which a step is called the first error, chosen on rows of the training data "
                "the heads never fitted (fluxprm train: its held-out rows with step labels; fluxprm-mini: "
                "out-of-fold, scripts/mini/kfold_threshold.py); the default of `fluxprm eval processbench`. "
                "None: not calibrated."})
    version: int = 1  # 2 when the checkpoint reads trajectory signals (a reader that ignores them would be wrong)

    @classmethod
    def from_options(cls, options: FluxPRMOptions, **recorded: Any) -> "FluxPRMConfig":
        """Copy every model option by name from ``options`` (e.g. a ``TrainConfig``), plus ``recorded``."""
        return cls(**{f.name: copy.deepcopy(getattr(options, f.name)) for f in fields(FluxPRMOptions)}, **recorded)

    def save(self, folder: Path) -> None:
        self.version = 2 if self.trajectory_signals else 1
        (folder / CONFIG_NAME).write_text(json.dumps({"format": "fluxprm", **asdict(self)}, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "FluxPRMConfig":
        data = json.loads((folder / CONFIG_NAME).read_text())
        if isinstance(data.get("version"), int) and data["version"] > SUPPORTED_VERSION:
            raise ValueError(f"{folder / CONFIG_NAME} is version {data['version']}; this fluxprm reads fluxprm "
                             f"checkpoints up to version {SUPPORTED_VERSION}: upgrade fluxprm")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def recorded_error_threshold(model: str) -> float | None:
    """The first-error threshold a fluxprm checkpoint records; ``None`` for another format or none recorded.

    Reads only ``fluxprm_config.json`` (no torch), so an evaluation can ask after scoring without loading twice.
    """
    from fluxprm.models.resolve import resolve_model

    folder, _ = resolve_model(model)
    if not (folder / CONFIG_NAME).is_file():
        return None
    return FluxPRMConfig.load(folder).error_threshold
