"""``TrainConfig``: every knob of ``fluxprm train``, each declared once with its default and help text.

The model options (backbone, feature layers, heads, layout, context length, scoring defaults) are
inherited from :class:`~fluxprm.models.fluxprm_format.FluxPRMOptions`, the very fields the checkpoint
records, and the segmentation options take their default and help from
:class:`~fluxprm.steps.StepConfig`; so no option is typed twice with two defaults. The help texts
(``field(metadata={"help": ...})``) are what the generated CLI shows.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from fluxprm.models.fluxprm_format import FluxPRMConfig, FluxPRMOptions
from fluxprm.steps import StepConfig

__all__ = ["TrainConfig", "SEGMENTATION_OPTIONS"]

# The segmentation a checkpoint records (FluxPRMConfig.steps) and scoring can reuse.
SEGMENTATION_OPTIONS = ("separator", "min_chars", "max_thinking_steps", "max_response_steps")


def _segmentation_option(name: str) -> Any:
    """A field with ``StepConfig``'s default and metadata (help), so segmentation is declared only there."""
    [spec] = [f for f in fields(StepConfig) if f.name == name]
    if spec.default is MISSING:
        raise TypeError(f"StepConfig.{name} needs a plain default to be a training option")
    return field(default=spec.default, metadata=dict(spec.metadata))


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig(FluxPRMOptions):
    """Every knob of ``fluxprm train``; a YAML file with any subset of these keys sets them.

    Inherited model options (``base``, ``feature_layers``, ``head_hidden``, ``joiner``, ``system_prompt``,
    ``aggregate``, ``alpha``, ``max_length``, ``layout``, ``head_type``) are written into the checkpoint.
    """

    mode: str = field(default="frozen", metadata=_help(
        "frozen: cached backbone features, heads only (minutes on a CPU); lora: LoRA adapters + heads; "
        "full: full fine-tune. lora/full run on accelerate."))
    head_dropout: float = field(default=0.0, metadata=_help("Dropout on the heads' inputs while training."))
    lambda_step: float = field(default=1.0, metadata=_help("Weight of the step MSE against soft teacher rewards."))
    lambda_final: float = field(default=1.0, metadata=_help(
        "Weight of the trajectory MSE against the soft trajectory reward."))
    lambda_step_bce: float = field(default=1.0, metadata=_help("Weight of the step BCE against hard step labels."))
    lambda_outcome_bce: float = field(default=1.0, metadata=_help(
        "Weight of the trajectory BCE against outcome correctness."))
    balance_classes: bool = field(default=True, metadata=_help(
        "Weight the BCE terms by inverse class frequency, so rare error steps are not drowned out."))
    mask_after_error: bool = field(default=False, metadata=_help(
        "Ignore hard step labels after a trace's first bad step (their correctness is ill-defined)."))
    lr: float = field(default=1e-3, metadata=_help("Learning rate of the heads."))
    lr_backbone: float = field(default=1e-4, metadata=_help("Learning rate of the backbone (lora / full)."))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay."))
    epochs: int = field(default=30, metadata=_help("Passes over the training examples (unless max_steps is set)."))
    max_steps: int | None = field(default=None, metadata=_help("Optimizer steps; overrides epochs when set."))
    batch_size: int = field(default=16, metadata=_help("Examples per optimizer step (per device)."))
    grad_accum: int = field(default=1, metadata=_help("Gradient accumulation steps (lora / full)."))
    val_fraction: float = field(default=0.1, metadata=_help(
        "Share of problems held out (by a hash of the problem) to keep the epoch with the best held-out "
        "loss (frozen)."))
    seed: int = field(default=0, metadata=_help("Seed of shuffling, splits and head initialisation."))
    dtype: str = field(default="auto", metadata=_help(
        "Backbone dtype in frozen mode: auto, bfloat16 or float32."))
    mixed_precision: str = field(default="no", metadata=_help(
        "accelerate mixed precision (lora / full): no, bf16 or fp16."))
    gradient_checkpointing: bool = field(default=False, metadata=_help(
        "Recompute activations in the backward pass to save memory (lora / full)."))
    lora_r: int = field(default=16, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA scaling alpha."))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout."))
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                    metadata=_help("Backbone modules that get LoRA adapters."))
    feature_cache: str | None = field(default=None, metadata=_help(
        "Folder of cached frozen-backbone features (default: the fluxprm user cache)."))
    log_every: int = field(default=10, metadata=_help("Log the training loss every N optimizer steps."))
    max_examples: int | None = field(default=None, metadata=_help(
        "Train on at most N examples (the first N after a seeded shuffle)."))
    # segmentation of free text in trace files; recorded in the checkpoint
    separator: str = _segmentation_option("separator")
    min_chars: int = _segmentation_option("min_chars")
    max_thinking_steps: int = _segmentation_option("max_thinking_steps")
    max_response_steps: int = _segmentation_option("max_response_steps")

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        """The defaults, then the YAML file's keys, then non-None ``overrides``; unknown keys are an error,
        so a typo cannot silently train with a default."""
        import yaml

        data: dict[str, Any] = {}
        if path:
            data = yaml.safe_load(Path(path).read_text()) or {}
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path or 'overrides'}: unknown training option(s) {', '.join(unknown)}")
        return cls(**data)

    def step_config(self) -> StepConfig:
        """How free text in trace files is cut into steps for training."""
        return StepConfig(**self.segmentation())

    def segmentation(self) -> dict[str, Any]:
        """The segmentation options by name, as the checkpoint records them (``FluxPRMConfig.steps``)."""
        return {name: getattr(self, name) for name in SEGMENTATION_OPTIONS}

    def model_config(self) -> FluxPRMConfig:
        """What the checkpoint records: the model options copied by name, whether a LoRA adapter is saved,
        and the segmentation trained with."""
        return FluxPRMConfig.from_options(self, lora=self.mode == "lora", steps=self.segmentation())
