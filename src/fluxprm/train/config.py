"""``TrainConfig``: every knob of ``fluxprm train``, each declared once with its default and help text.

The model options (backbone, feature layers, heads, layout, context length, scoring defaults) are
inherited from :class:`~fluxprm.models.fluxprm_config.FluxPRMOptions`, the very fields the checkpoint
records, and the segmentation options take their default and help from
:class:`~fluxprm.steps.StepConfig`; so no option is typed twice with two defaults. The help texts
(``field(metadata={"help": ...})``) are what the generated CLI shows.

Every value is checked when a ``TrainConfig`` is built (:meth:`TrainConfig.validate`): its type against the
field's annotation and its range, so a typo such as ``batch_size: -1`` or ``lr: fast`` fails at once with one
line naming the option (:class:`ConfigError`) instead of spinning, training on garbage or dying in a
traceback an hour later. :meth:`TrainConfig.from_yaml` and :func:`parse_overrides` do the same for config
files and ``--set KEY=VALUE`` (with the file and line of a bad key).
"""

from __future__ import annotations

import difflib
import math
import re
import types
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Union, get_args, get_origin, get_type_hints

from fluxprm.models.fluxprm_config import EMBEDDED_BASES, FluxPRMConfig, FluxPRMOptions
from fluxprm.scores import AGGREGATES
from fluxprm.steps import StepConfig

__all__ = ["TrainConfig", "SEGMENTATION_OPTIONS", "ConfigError", "parse_overrides", "MODES", "LAYOUTS", "HEAD_TYPES",
           "DTYPES", "MIXED_PRECISIONS"]

MODES = ("frozen", "lora", "full")
LAYOUTS = ("chat", "qwen-prm")
HEAD_TYPES = ("mlp", "qwen-prm")
DTYPES = ("auto", "bfloat16", "float16", "float32", "bf16", "fp16", "fp32")  # what fluxprm.device.resolve_dtype reads
MIXED_PRECISIONS = ("no", "bf16", "fp16")


class ConfigError(ValueError):
    """A training option that is unknown, of the wrong type or out of range, or a config file that cannot be
    read; the message is one line naming the option (and the file and line when it came from one).

    ``option`` is the option's name (None for a problem with the file as a whole), so a caller that merged
    several sources can say which one set the bad value.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option

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


# YAML 1.1 (PyYAML) reads ``1e-3`` as a string: it wants ``1.0e-3``. Float options accept that spelling.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(hint: Any) -> str:
    """A type annotation in words, for messages: ``int | None`` → ``an integer or null``."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        words = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if origin is list:
        (item,) = get_args(hint) or (Any,)
        return "a list" if item is Any else f"a list of {_describe(item).split(' ', 1)[1]}s"
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(
        hint, f"a {getattr(hint, '__name__', hint)}")


def _typed(name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint`` (ints are widened to float); raises ``ConfigError``.

    Strict on purpose: ``batch_size: "8"`` or ``correct: "yes"``-style coercions hide typos, and a bool
    is not an integer here even though Python says it is.
    """
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _typed(name, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{name}: expected {_describe(hint)}, got {_show(value)}", name)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected {_describe(hint)}, got {_show(value)}", name)
        (item,) = get_args(hint) or (Any,)
        return [_typed(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {_show(value)}", name)
        return value
    ok = False
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{name}: expected a finite number, got {value}", name)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, hint) if isinstance(hint, type) else True
    if not ok:
        raise ConfigError(f"{name}: expected {_describe(hint)}, got {_show(value)}", name)
    return value


def _unknown_option(name: str, known: Iterable[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    tip = f" (did you mean {close[0]}?)" if close else "; `fluxprm train --help` lists every option"
    return ConfigError(f"{where}unknown training option {str(name)!r}{tip}", str(name))


def _tag_refused(exc: Exception) -> str | None:
    """The message for a YAML tag ``safe_load`` refused (``!!python/object/apply:os.system``), else None."""
    import yaml

    found = re.search(r"tag '([^']+)'", str(getattr(exc, "problem", "") or ""))
    if not isinstance(exc, yaml.constructor.ConstructorError) or not found:
        return None
    tag = found.group(1).replace("tag:yaml.org,2002:", "!!")
    return (f"YAML tag {tag} is not allowed: options hold plain values (numbers, strings, lists, true/false); "
            "nothing was executed")


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A config file's mapping and the line of each key; a ``ConfigError`` naming the file (and line) otherwise.

    Only ``yaml.safe_load`` reads it, so a tag like ``!!python/object/apply:os.system`` is refused, never run.
    """
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; give a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; give a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
        refused = _tag_refused(exc)
        if refused:
            raise ConfigError(f"{path}{f' line {mark.line + 1}' if mark else ''}: {refused}") from None
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        opened = (f" ({exc.context.removeprefix('while ')} that starts at line {context.line + 1})"
                  if exc.context and context and mark and context.line != mark.line else "")
        raise ConfigError(f"{path}{where}: invalid YAML: {exc.problem or exc.context}{opened}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value (such as `max_steps: 200`), "
                          f"got {'a list' if isinstance(data, list) else _show(data)}")
    lines: dict[str, int] = {}
    try:  # where each key is, for messages; composing builds no objects
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        node = None
    for key, _ in getattr(node, "value", []):
        name, line = str(getattr(key, "value", "")), key.start_mark.line + 1
        if name in lines:  # YAML keeps the last silently: the run would not be the one the file seems to ask for
            raise ConfigError(f"{path} line {line}: option '{name}' is given twice (first at line {lines[name]}); "
                              "keep one")
        lines[name] = line
    return data, lines


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
        "Share of problems held out (by a hash of the problem); each head keeps the epoch with its best "
        "held-out loss (frozen)."))
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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every option's type (against its annotation) and range; raise ``ConfigError`` naming the first bad one.

        Ints given for float options become floats. Runs when the config is built and again when a run
        starts (fields may have been assigned since). Options that depend on the backbone
        (``feature_layers`` against its depth) are checked by :meth:`check_backbone` once it is known.
        """
        hints = get_type_hints(type(self))
        for f in fields(self):
            try:
                setattr(self, f.name, _typed(f.name, getattr(self, f.name), hints[f.name]))
            except ConfigError as exc:  # an element's error (feature_layers[1]) still names its option
                raise ConfigError(str(exc), f.name) from None

        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {_show(getattr(self, name))}", name)

        for name, allowed in (("mode", MODES), ("layout", LAYOUTS), ("head_type", HEAD_TYPES), ("dtype", DTYPES),
                              ("mixed_precision", MIXED_PRECISIONS), ("aggregate", tuple(AGGREGATES))):
            need(getattr(self, name) in allowed, name, "one of " + ", ".join(allowed))
        for name in ("batch_size", "grad_accum", "epochs", "log_every", "head_hidden", "max_length", "lora_r",
                     "lora_alpha"):
            need(getattr(self, name) >= 1, name, ">= 1")
        for name in ("max_steps", "max_examples"):
            need(getattr(self, name) is None or getattr(self, name) >= 1, name, "null or >= 1")
        for name in ("min_chars", "max_thinking_steps", "max_response_steps"):
            need(getattr(self, name) >= 0, name, ">= 0")
        need(0 <= self.seed < 2**63, "seed", "in [0, 2**63)")  # what torch.manual_seed accepts
        for name in ("lr", "lr_backbone"):
            need(getattr(self, name) > 0, name, "> 0")
        for name in ("weight_decay", "lambda_step", "lambda_final", "lambda_step_bce", "lambda_outcome_bce"):
            need(getattr(self, name) >= 0, name, ">= 0")
        lambdas = ("lambda_step", "lambda_final", "lambda_step_bce", "lambda_outcome_bce")
        if not any(getattr(self, name) > 0 for name in lambdas):
            raise ConfigError(f"every loss weight ({', '.join(lambdas)}) is 0: nothing would be trained", lambdas[0])
        for name in ("val_fraction", "head_dropout", "lora_dropout"):
            need(0 <= getattr(self, name) < 1, name, "in [0, 1)")
        need(bool(self.feature_layers), "feature_layers", "a non-empty list of layer indices (-1 = last)")
        need(self.head_type != "qwen-prm" or self.feature_layers == [-1], "feature_layers",
             "[-1] with head_type qwen-prm (it reads the last layer only)")
        need(bool(self.lora_targets) and all(t.strip() for t in self.lora_targets), "lora_targets",
             "a non-empty list of module names (q_proj, v_proj, ...)")
        need(bool(self.base.strip()), "base", "a backbone: smollm2, a folder or a hub id")
        need(bool(self.separator), "separator", "a non-empty string")
        from fluxprm.signals import SIGNALS

        need(all(n in SIGNALS for n in self.trajectory_signals) and len(set(self.trajectory_signals))
             == len(self.trajectory_signals), "trajectory_signals",
             "a list of distinct signal names from " + ", ".join(SIGNALS))

    def check_backbone(self, num_hidden_layers: int) -> None:
        """``feature_layers`` must index the backbone's hidden states: ``-(L+1) .. L`` for ``L`` layers
        (index 0 is the embeddings); raises ``ConfigError`` before any weights load."""
        limit = num_hidden_layers
        bad = [i for i in self.feature_layers if not -(limit + 1) <= i <= limit]
        if bad:
            raise ConfigError(f"feature_layers {bad} out of range: the backbone {self.base} has {limit} layers, so "
                              f"use indices from {-(limit + 1)} to {limit} (-1 = last)", "feature_layers")

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        """The defaults, then the YAML file's keys, then non-None ``overrides``.

        Unknown keys are an error (a typo must not silently train with a default), and so is any value of the
        wrong type or range: a ``ConfigError`` of one line naming the option, and the file and line when the
        value came from the file. The file is read with ``yaml.safe_load`` only.
        """
        data: dict[str, Any] = {}
        lines: dict[str, int] = {}
        if path:
            data, lines = _read_yaml(Path(path))
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        known = [f.name for f in fields(cls)]

        def where(key: Any) -> str:
            return f"{path} line {lines[str(key)]}: " if str(key) in lines else f"{path}: "

        for key in data:
            if key not in known:
                raise _unknown_option(key, known, where(key))
        for key in overrides:
            if key not in known:
                raise _unknown_option(key, known, "")
        merged = {**data, **overrides}
        try:
            return cls(**merged)
        except ConfigError as exc:
            if exc.option in data and exc.option not in overrides:  # the file set it: say where
                raise ConfigError(where(exc.option) + str(exc), exc.option) from None
            raise

    def step_config(self) -> StepConfig:
        """How free text in trace files is cut into steps for training."""
        return StepConfig(**self.segmentation())

    def segmentation(self) -> dict[str, Any]:
        """The segmentation options by name, as the checkpoint records them (``FluxPRMConfig.steps``)."""
        return {name: getattr(self, name) for name in SEGMENTATION_OPTIONS}

    def model_config(self) -> FluxPRMConfig:
        """What the checkpoint records: the model options copied by name, whether a LoRA adapter is saved,
        and the segmentation trained with.

        A ``base`` given as a local folder is recorded as its absolute path: a checkpoint reads ``./x`` as
        relative to itself (where a full fine-tune saves its backbone), so ``--base ./tinyqwen`` recorded as
        given named a folder inside the checkpoint, and score, export and serve could not load it.
        """
        config = FluxPRMConfig.from_options(self, lora=self.mode == "lora", steps=self.segmentation())
        local = Path(self.base).expanduser()
        if self.base not in EMBEDDED_BASES and local.is_dir():
            config.base = str(local.resolve())
        return config


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["batch_size=8", "feature_layers=[-1,-2]"]`` → ``{"batch_size": 8, "feature_layers": [-1, -2]}``.

    Each value is read as YAML (``safe_load``: tags are refused) and type-checked against its option, so
    ``--set 'batch_size=['`` or ``--set lora_targets=5`` fails with a ``ConfigError`` naming the option;
    ``-`` in a key reads as ``_`` (``--set max-steps=5``). An empty value (``max_steps=``) is null.
    """
    import yaml

    hints = get_type_hints(TrainConfig)
    known = [f.name for f in fields(TrainConfig)]
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {_show(item)}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in known:
            raise _unknown_option(key, known, "--set: ")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            refused = _tag_refused(exc)
            if refused:
                raise ConfigError(f"--set {key}: {refused}", key) from None
            problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
            raise ConfigError(f"--set {key}: {_show(raw)} is not a valid YAML value ({problem}); write lists as "
                              "[-1, -2] and quote the whole --set argument in the shell", key) from None
        try:
            out[key] = value if value is None else _typed(key, value, hints[key])
        except ConfigError as exc:
            raise ConfigError(f"--set {exc}", key) from None
    return out
