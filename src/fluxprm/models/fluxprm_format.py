"""``fluxprm``: the checkpoint ``fluxprm train`` writes — a causal-LM backbone with two small heads.

Layout: the backbone's chat template with the problem as the user turn and the steps (thinking steps,
then response steps) joined by a blank line as the assistant turn. The *step head* is read at the last
token of every step — with a causal backbone that is R(s_t | x, s_<t) — and the *trajectory head*
at the last token of the sequence, R(x, y). ``score = aggregate(step rewards) + α · trajectory``.

A checkpoint folder holds ``fluxprm_config.json``, ``heads.safetensors`` and, when trained with
LoRA, a peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``). The backbone itself is
referenced, not copied (``base``: ``"smollm2"`` for the embedded SmolLM2-135M-Instruct, a folder, or a
hub id), so a trained model is a few megabytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fluxprm.models.base import CheckpointFormat, LoadRequest, TransformerPRM
from fluxprm.models.fluxprm_config import (CONFIG_NAME, EMBEDDED_BASES, HEADS_NAME, SUPPORTED_VERSION, FluxPRMConfig,
                                           FluxPRMOptions)
from fluxprm.steps import PRMInput

__all__ = ["CONFIG_NAME", "HEADS_NAME", "SUPPORTED_VERSION", "FluxPRMOptions", "FluxPRMConfig", "FluxPRM", "RewardHead",
           "SignalHead", "FORMAT", "load_fluxprm", "resolve_base", "make_heads", "make_signal_head", "save_heads",
           "feature_size"]


class RewardHead(nn.Module):
    """LayerNorm → Linear → GELU → Linear(1): a logit. The norm makes mid-layer features usable."""

    def __init__(self, in_features: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)  # active in training only; holds no weights
        self.net = nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, hidden), nn.GELU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.dropout(x)).squeeze(-1)


class SignalHead(nn.Module):
    """A linear term on standardised trajectory signals, added to the trajectory head's logit.

    Linear, not inside the MLP: the MLP's LayerNorm would rescale a handful of signals together with
    1,728 hidden features, and a weight per signal stays readable (the model card quotes them). ``mean`` and
    ``std`` are the training examples' statistics, saved with the weights so scoring standardises alike.
    """

    def __init__(self, n_signals: int):
        super().__init__()
        self.linear = nn.Linear(n_signals, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("mean", torch.zeros(n_signals))
        self.register_buffer("std", torch.ones(n_signals))

    def fit_scale(self, signals: torch.Tensor) -> None:
        """Set ``mean``/``std`` from the training examples' signals (n, k); a constant signal keeps std 1."""
        self.mean.copy_(signals.mean(0))
        std = signals.std(0) if signals.size(0) > 1 else torch.ones_like(self.std)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        return self.linear((signals.float() - self.mean) / self.std).squeeze(-1)


def resolve_base(base: str, checkpoint: Path | None = None) -> Path:
    """The backbone folder of a fluxprm checkpoint: the embedded SmolLM2, a folder (``./x`` is relative
    to the checkpoint, as a full fine-tune saves it), or a cached hub id."""
    if checkpoint is not None and base.startswith("./"):
        from fluxprm.models.resolve import ModelNotFound

        inside = checkpoint / base[2:]
        if not (inside / "config.json").is_file():
            raise ModelNotFound(f"{checkpoint}: its backbone (base {base!r} in {checkpoint / 'fluxprm_config.json'}) "
                                f"is missing: {inside} has no config.json; put the backbone there or set base to "
                                "its folder")
        return inside
    if base in EMBEDDED_BASES:
        from fluxprm.embedded import smollm2_dir

        return smollm2_dir()
    path = Path(base).expanduser()
    if path.is_dir():
        return path
    from fluxprm.models.resolve import resolve_model

    return resolve_model(base)[0]


class FluxPRM(TransformerPRM):
    format = "fluxprm"
    default_aggregate = "mean"

    def __init__(self, backbone: nn.Module, tokenizer: Any, step_head: nn.Module, traj_head: RewardHead,
                 config: FluxPRMConfig, signal_head: SignalHead | None = None, **kw: Any):
        super().__init__(backbone, tokenizer, **kw)
        self.step_head = step_head.eval()
        self.traj_head = traj_head.eval()
        if bool(config.trajectory_signals) != (signal_head is not None):
            raise ValueError("a signal head is needed exactly when the config names trajectory_signals")
        self.signal_head = signal_head.eval() if signal_head is not None else None
        self.config = config
        self.trained_steps: dict[str, Any] | None = config.steps  # segmentation it was trained with
        self.error_threshold = config.error_threshold  # first-error threshold chosen when it was trained
        self.separator_id = None
        if config.layout == "qwen-prm":
            from fluxprm.models.qwen_prm import SEPARATOR, separator_id

            self.separator_id = separator_id(tokenizer)
            if self.separator_id is None:
                raise ValueError(f"layout qwen-prm needs a tokenizer with {SEPARATOR}; the base {config.base} has none")

    def build_text(self, problem: str, steps: list[str]) -> tuple[str, list[int]]:
        """The chat text and, per step, the index of the step's last character in it."""
        content = self.config.joiner.join(steps)
        messages = []
        if self.config.system_prompt:
            messages.append({"role": "system", "content": self.config.system_prompt})
        messages += [{"role": "user", "content": problem}, {"role": "assistant", "content": content}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        pos = text.rfind(content) if content else -1
        ends = []
        for k, step in enumerate(steps):
            pos += (len(self.config.joiner) if k else 0) + len(step)
            ends.append(pos - 1)
        return text, ends

    def encode_ids(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        if self.separator_id is not None:
            from fluxprm.models.qwen_prm import qwen_prm_layout

            return qwen_prm_layout(self.tokenizer, self.separator_id, problem, steps, self.config.system_prompt)
        text, ends = self.build_text(problem, steps)
        return self.offsets_to_positions(text, ends)

    def features(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        layers = self.config.feature_layers
        if layers == [-1]:
            return self.backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        out = self.backbone(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
        return torch.cat([out.hidden_states[i] for i in layers], dim=-1)

    def step_logits(self, feats: torch.Tensor) -> torch.Tensor:
        return self.step_head(feats.to(next(self.step_head.parameters()).dtype)).float()

    def traj_logits(self, feats: torch.Tensor, signals: torch.Tensor | None = None) -> torch.Tensor:
        """The trajectory logit: the MLP on the last token's features plus, if trained with them, the signal term."""
        logits = self.traj_head(feats.to(next(self.traj_head.parameters()).dtype)).float()
        if self.signal_head is not None:
            if signals is None:
                raise ValueError(f"this checkpoint's trajectory head reads signals "
                                 f"({', '.join(self.config.trajectory_signals)}); none were given")
            logits = logits + self.signal_head(signals.to(logits.device))
        return logits

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.step_logits(hidden))

    def trajectory(self, hidden_last: torch.Tensor, signals: torch.Tensor | None = None) -> torch.Tensor | None:
        return torch.sigmoid(self.traj_logits(hidden_last, signals))

    def trace_signals(self, item: PRMInput) -> list[float] | None:
        if not self.config.trajectory_signals:
            return None
        from fluxprm.signals import trace_signals

        return trace_signals(item, self.config.trajectory_signals)


def feature_size(backbone: nn.Module, layers: list[int]) -> int:
    return backbone.config.hidden_size * len(layers)


def make_signal_head(config: FluxPRMConfig) -> SignalHead | None:
    """A fresh signal head for the config's ``trajectory_signals`` (None when it names none)."""
    if not config.trajectory_signals:
        return None
    from fluxprm.signals import check_signals

    check_signals(config.trajectory_signals)
    return SignalHead(len(config.trajectory_signals))


def make_heads(config: FluxPRMConfig, in_features: int, dropout: float = 0.0) -> tuple[nn.Module, RewardHead]:
    """Fresh step and trajectory heads of the shapes ``config`` names."""
    if config.head_type == "qwen-prm":
        from fluxprm.models.qwen_prm import QwenStepHead

        if config.feature_layers != [-1]:
            raise ValueError("head_type qwen-prm reads the last layer only: set feature_layers: [-1]")
        step: nn.Module = QwenStepHead(in_features)
    elif config.head_type == "mlp":
        step = RewardHead(in_features, config.head_hidden, dropout)
    else:
        raise ValueError(f"unknown head_type {config.head_type!r}: use mlp or qwen-prm")
    return step, RewardHead(in_features, config.head_hidden, dropout)


def save_heads(folder: Path, step_head: nn.Module, traj_head: RewardHead, signal_head: SignalHead | None = None
               ) -> None:
    heads = {"step_head": step_head, "traj_head": traj_head}
    if signal_head is not None:
        heads["signal_head"] = signal_head
    tensors = {f"{name}.{k}": v.detach().float().contiguous().cpu()
               for name, head in heads.items() for k, v in head.state_dict().items()}
    save_file(tensors, str(folder / HEADS_NAME))


def load_fluxprm(folder: Path, *, name: str, device: torch.device, dtype: torch.dtype, max_length: int | None,
                 aggregate: str | None, alpha: float | None, **_: Any) -> FluxPRM:
    """Backbone from ``config.base`` (+ LoRA adapter if saved, merged for speed), heads from safetensors."""
    from fluxprm.models.backbone import load_backbone, load_tokenizer, read_config

    config = FluxPRMConfig.load(folder)
    base = resolve_base(config.base, folder)
    backbone = load_backbone(base, read_config(base), dtype, device)
    if config.lora:
        from peft import PeftModel

        from fluxprm.quiet import peft_quietly

        with peft_quietly():
            backbone = PeftModel.from_pretrained(backbone, str(folder)).merge_and_unload()
    tokenizer = load_tokenizer(base)
    state = load_file(str(folder / HEADS_NAME))
    in_features = feature_size(backbone, config.feature_layers)
    step_head, traj_head = make_heads(config, in_features)
    signal_head = make_signal_head(config)
    parts = [("step_head.", step_head), ("traj_head.", traj_head)]
    if signal_head is not None:
        parts.append(("signal_head.", signal_head))
    for prefix, head in parts:
        head.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
    # Heads stay float32: they are tiny, and their inputs are cast up before use.
    return FluxPRM(backbone, tokenizer, step_head.to(device), traj_head.to(device), config,
                   signal_head.to(device) if signal_head is not None else None, name=name,
                   device=device, dtype=dtype, max_length=max_length or config.max_length,
                   aggregate=aggregate or config.aggregate, alpha=config.alpha if alpha is None else alpha)


def _detect(folder: Path, config: dict[str, Any]) -> bool:
    return (folder / CONFIG_NAME).exists()


def _load(req: LoadRequest) -> FluxPRM:
    return load_fluxprm(req.folder, name=req.name, device=req.device, dtype=req.dtype, max_length=req.max_length,
                        aggregate=req.aggregate, alpha=req.alpha)


FORMAT = CheckpointFormat("fluxprm", _detect, _load, "fluxprm train checkpoints: step + trajectory heads")
