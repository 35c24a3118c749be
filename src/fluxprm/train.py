"""``fluxprm train``: the ReasonFlux-PRM joint objective on a causal-LM backbone.

    L = λ_step · mean_t MSE(R(s_t | x, s_<t), r_step(t)) + λ_final · MSE(R(x, y), r_final)
        + λ_step_bce · BCE(step logits, hard step labels) + λ_outcome_bce · BCE(trajectory logit, correct)

The step head is read at the last token of every step and the trajectory head at the last token
(see :mod:`fluxprm.models.fluxprm_format`); examples are encoded with the very ``encode`` used at
scoring time, so training and inference cannot drift apart.

Modes (``mode``):

- ``frozen`` — the backbone is frozen: its features at the read positions are computed once (and
  cached on disk, keyed by the token ids), then only the heads train. Minutes on a CPU.
- ``lora`` — peft LoRA adapters on the backbone + heads, trained end to end.
- ``full`` — full fine-tune of backbone + heads.

``lora``/``full`` run on 🤗 ``accelerate``: the same command scales from a CPU to multi-GPU DDP, FSDP or
DeepSpeed through ``accelerate launch --config_file ... -m fluxprm.cli train ...``. Training is seeded
and deterministic on a given machine; losses are logged to ``train_log.jsonl`` and ``loss.png``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from fluxprm.models.base import PRMInput, TraceTooLong, pad_batch
from fluxprm.models.fluxprm_format import (FluxPRM, FluxPRMConfig, feature_size, make_heads, resolve_base,
                                           save_heads)
from fluxprm.steps import StepConfig
from fluxprm.train_data import Example, load_examples

__all__ = ["TrainConfig", "train", "joint_loss"]


@dataclass
class TrainConfig:
    """Every knob of ``fluxprm train``; a YAML file with any subset of these keys sets them."""

    base: str = "smollm2"
    mode: str = "frozen"                 # frozen | lora | full
    feature_layers: list[int] = field(default_factory=lambda: [-1])
    head_hidden: int = 256
    head_dropout: float = 0.0            # dropout on head inputs while training
    layout: str = "chat"                 # chat | qwen-prm (<extra_0> separators; exportable)
    head_type: str = "mlp"               # mlp | qwen-prm (Linear-ReLU-Linear(h, 2); exportable)
    lambda_step: float = 1.0
    lambda_final: float = 1.0
    lambda_step_bce: float = 1.0
    lambda_outcome_bce: float = 1.0
    balance_classes: bool = True         # weight BCE terms by inverse class frequency
    mask_after_error: bool = False       # ignore hard step labels after a trace's first bad step
    lr: float = 1e-3                     # heads
    lr_backbone: float = 1e-4            # LoRA / full fine-tune
    weight_decay: float = 0.01
    epochs: int = 30
    max_steps: int | None = None         # optimizer steps; overrides epochs when set
    batch_size: int = 16
    grad_accum: int = 1
    val_fraction: float = 0.1            # held-out share (by example id hash) for best-epoch selection
    seed: int = 0
    max_length: int = 2048
    dtype: str = "auto"                  # backbone dtype in frozen mode
    mixed_precision: str = "no"          # accelerate: no | bf16 | fp16 (lora/full)
    gradient_checkpointing: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    feature_cache: str | None = None     # folder for cached frozen features (default: user cache)
    log_every: int = 10
    max_examples: int | None = None      # cap per run (first N after a seeded shuffle)
    # layout and scoring defaults written into the checkpoint
    joiner: str = "\n\n"
    system_prompt: str | None = None
    aggregate: str = "mean"
    alpha: float = 1.0
    # segmentation of free text (trace files)
    min_chars: int = 30
    max_thinking_steps: int = 64
    max_response_steps: int = 32

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> "TrainConfig":
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
        return StepConfig(min_chars=self.min_chars, max_thinking_steps=self.max_thinking_steps,
                          max_response_steps=self.max_response_steps)


# --------------------------------------------------------------------------------------------
# the objective
# --------------------------------------------------------------------------------------------
@dataclass
class Targets:
    """Targets of a batch flattened to tensors, with masks for what is present."""

    step_soft: torch.Tensor
    step_soft_mask: torch.Tensor
    step_hard: torch.Tensor
    step_hard_mask: torch.Tensor
    final_soft: torch.Tensor
    final_soft_mask: torch.Tensor
    final_hard: torch.Tensor
    final_hard_mask: torch.Tensor

    @classmethod
    def of(cls, examples: list[Example], kept: list[tuple[int, int]] | None = None) -> "Targets":
        """``kept[i] = (first, n)``: which steps of example i survived truncation (default: all)."""
        soft, soft_m, hard, hard_m = [], [], [], []
        for i, ex in enumerate(examples):
            first, n = kept[i] if kept else (0, len(ex.steps))
            for t in range(first, first + n):
                s, h = ex.step_targets[t], ex.step_labels[t]
                soft.append(0.0 if s is None else float(s))
                soft_m.append(s is not None)
                hard.append(0.0 if h is None else float(h))
                hard_m.append(h is not None)
        fs = [0.0 if e.trajectory_target is None else float(e.trajectory_target) for e in examples]
        fh = [0.0 if e.correct is None else float(e.correct) for e in examples]
        return cls(torch.tensor(soft), torch.tensor(soft_m), torch.tensor(hard), torch.tensor(hard_m),
                   torch.tensor(fs), torch.tensor([e.trajectory_target is not None for e in examples]),
                   torch.tensor(fh), torch.tensor([e.correct is not None for e in examples]))

    def to(self, device: torch.device) -> "Targets":
        return Targets(*[getattr(self, f.name).to(device) for f in fields(self)])


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not mask.any():
        return pred.sum() * 0.0
    return F.mse_loss(pred[mask], target[mask])


def _masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                pos_weight: float | None) -> torch.Tensor:
    if not mask.any():
        return logits.sum() * 0.0
    pw = torch.tensor(pos_weight) if pos_weight else None
    return F.binary_cross_entropy_with_logits(logits[mask], target[mask], pos_weight=pw)


def joint_loss(step_logits: torch.Tensor, traj_logits: torch.Tensor, tg: Targets, cfg: TrainConfig,
               pos_weights: tuple[float | None, float | None] = (None, None)) -> tuple[torch.Tensor, dict[str, float]]:
    """The joint objective; returns the total and each term (for logging)."""
    terms = {
        "step_mse": _masked_mse(torch.sigmoid(step_logits), tg.step_soft, tg.step_soft_mask),
        "final_mse": _masked_mse(torch.sigmoid(traj_logits), tg.final_soft, tg.final_soft_mask),
        "step_bce": _masked_bce(step_logits, tg.step_hard, tg.step_hard_mask, pos_weights[0]),
        "outcome_bce": _masked_bce(traj_logits, tg.final_hard, tg.final_hard_mask, pos_weights[1]),
    }
    total = (cfg.lambda_step * terms["step_mse"] + cfg.lambda_final * terms["final_mse"]
             + cfg.lambda_step_bce * terms["step_bce"] + cfg.lambda_outcome_bce * terms["outcome_bce"])
    return total, {k: float(v.detach()) for k, v in terms.items()}


def _pos_weights(examples: list[Example], balance: bool) -> tuple[float | None, float | None]:
    """pos_weight = #neg / #pos for the BCE terms, so rare error steps are not drowned out."""
    if not balance:
        return None, None
    step = [lab for e in examples for lab in e.step_labels if lab is not None]
    outcome = [e.correct for e in examples if e.correct is not None]

    def ratio(xs: list[Any]) -> float | None:
        pos = sum(1 for x in xs if x)
        neg = len(xs) - pos
        return neg / pos if pos and neg else None

    return ratio(step), ratio(outcome)


# --------------------------------------------------------------------------------------------
# model construction
# --------------------------------------------------------------------------------------------
def build_prm(cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> FluxPRM:
    """A FluxPRM around the base backbone with freshly initialised (seeded) heads."""
    from fluxprm.models.backbone import load_backbone, load_tokenizer, read_config

    base = resolve_base(cfg.base)
    backbone = load_backbone(base, read_config(base), dtype, device)
    tokenizer = load_tokenizer(base)
    torch.manual_seed(cfg.seed)
    n_in = feature_size(backbone, cfg.feature_layers)
    fcfg = FluxPRMConfig(base=cfg.base, feature_layers=list(cfg.feature_layers), head_hidden=cfg.head_hidden,
                         joiner=cfg.joiner, system_prompt=cfg.system_prompt, aggregate=cfg.aggregate,
                         alpha=cfg.alpha, max_length=cfg.max_length, lora=cfg.mode == "lora",
                         layout=cfg.layout, head_type=cfg.head_type)
    step_head, traj_head = make_heads(fcfg, n_in, cfg.head_dropout)
    return FluxPRM(backbone, tokenizer, step_head.to(device), traj_head.to(device), fcfg, name="fluxprm",
                   device=device, dtype=dtype, max_length=cfg.max_length, aggregate=cfg.aggregate, alpha=cfg.alpha)


def _split(examples: list[Example], val_fraction: float) -> tuple[list[Example], list[Example]]:
    """Deterministic split by a hash of the problem, so no problem is on both sides."""
    if val_fraction <= 0:
        return examples, []
    def bucket(ex: Example) -> float:
        return int(hashlib.sha256(ex.problem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    train = [e for e in examples if bucket(e) >= val_fraction]
    val = [e for e in examples if bucket(e) < val_fraction]
    return (train, val) if train and val else (examples, [])


# --------------------------------------------------------------------------------------------
# frozen mode: cached features, heads only
# --------------------------------------------------------------------------------------------
@dataclass
class _Feats:
    steps: torch.Tensor   # (n_kept_steps, F)
    last: torch.Tensor    # (F,)
    kept: tuple[int, int]  # first kept step index, number kept


def _feature_cache_dir(cfg: TrainConfig) -> Path:
    if cfg.feature_cache:
        return Path(cfg.feature_cache)
    from fluxprm.embedded import cache_dir

    return cache_dir() / "features"


@torch.inference_mode()
def extract_features(prm: FluxPRM, examples: list[Example], cfg: TrainConfig,
                     progress: Callable[[int, int], None] | None = None) -> list[_Feats | None]:
    """Backbone features at each example's read positions and last token, cached on disk.

    An example whose problem and response alone exceed ``max_length`` yields ``None`` (it cannot be
    laid out without cutting the response, which the PRM never sees cut at scoring time either).
    """
    from safetensors.torch import load_file, save_file

    folder = _feature_cache_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    tag = json.dumps([cfg.base, cfg.feature_layers, str(prm.dtype), prm.max_length])
    out: list[_Feats | None] = []
    for i, ex in enumerate(examples):
        try:
            enc = prm.encode(PRMInput(ex.problem, ex.thinking_steps, ex.response_steps))
        except TraceTooLong:
            out.append(None)
            continue
        key = hashlib.sha256((tag + json.dumps(enc.input_ids) + json.dumps(enc.read_positions)).encode()).hexdigest()
        path = folder / f"{key[:40]}.safetensors"
        if path.exists():
            t = load_file(str(path))
        else:
            ids = torch.tensor([enc.input_ids], device=prm.device)
            h = prm.features(ids, None)[0]
            t = {"steps": h[torch.tensor(enc.read_positions)].to(torch.float16).cpu().contiguous(),
                 "last": h[-1].to(torch.float16).cpu().contiguous()}
            tmp = path.with_suffix(".tmp")
            save_file(t, str(tmp))
            tmp.replace(path)
        out.append(_Feats(t["steps"], t["last"], (enc.dropped_thinking, len(enc.read_positions))))
        if progress:
            progress(i + 1, len(examples))
    return out


def _usable(feats: list[_Feats | None], exs: list[Example], log: Callable[[dict[str, Any]], None]
            ) -> tuple[list[_Feats], list[Example]]:
    kept = [(f, e) for f, e in zip(feats, exs) if f is not None]
    if len(kept) < len(exs):
        log({"skipped_too_long": len(exs) - len(kept)})
    return [f for f, _ in kept], [e for _, e in kept]


def _batches(n: int, size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    return [order[i:i + size] for i in range(0, n, size)]


def _frozen_epoch_loss(prm: FluxPRM, feats: list[_Feats], exs: list[Example], cfg: TrainConfig,
                       pw: tuple[float | None, float | None]) -> float:
    with torch.no_grad():
        loss, _ = _frozen_batch_loss(prm, feats, exs, list(range(len(exs))), cfg, pw)
    return float(loss)


def _frozen_batch_loss(prm: FluxPRM, feats: list[_Feats], exs: list[Example], idx: list[int], cfg: TrainConfig,
                       pw: tuple[float | None, float | None]) -> tuple[torch.Tensor, dict[str, float]]:
    step_x = torch.cat([feats[i].steps for i in idx]).float()
    last_x = torch.stack([feats[i].last for i in idx]).float()
    tg = Targets.of([exs[i] for i in idx], [feats[i].kept for i in idx])
    return joint_loss(prm.step_head(step_x), prm.traj_head(last_x), tg, cfg, pw)


def _train_frozen(prm: FluxPRM, train_ex: list[Example], val_ex: list[Example], cfg: TrainConfig,
                  log: Callable[[dict[str, Any]], None], progress: Callable[[str, int, int], None] | None) -> None:
    feats, train_ex = _usable(extract_features(prm, train_ex, cfg,
                                               (lambda i, n: progress("features", i, n)) if progress else None),
                              train_ex, log)
    val_feats, val_ex = _usable(extract_features(prm, val_ex, cfg), val_ex, log) if val_ex else ([], [])
    pw = _pos_weights(train_ex, cfg.balance_classes)
    heads = nn.ModuleList([prm.step_head, prm.traj_head]).float().train()
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    per_epoch = math.ceil(len(train_ex) / cfg.batch_size)
    total = cfg.max_steps or cfg.epochs * per_epoch
    best, best_state, step = math.inf, None, 0
    while step < total:
        for idx in _batches(len(train_ex), cfg.batch_size, rng):
            loss, terms = _frozen_batch_loss(prm, feats, train_ex, idx, cfg, pw)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % cfg.log_every == 0 or step == total:
                log({"step": step, "loss": float(loss.detach()), **terms})
            if step >= total:
                break
        if val_ex:
            heads.eval()
            v = _frozen_epoch_loss(prm, val_feats, val_ex, cfg, pw)
            heads.train()
            log({"step": step, "val_loss": v})
            if v < best:
                best, best_state = v, {k: t.clone() for k, t in heads.state_dict().items()}
    if best_state is not None:  # keep the epoch with the best held-out loss
        heads.load_state_dict(best_state)
        log({"step": step, "best_val_loss": best})
    heads.eval()


# --------------------------------------------------------------------------------------------
# lora / full: end to end on accelerate
# --------------------------------------------------------------------------------------------
class _Joint(nn.Module):
    """Backbone + both heads as one module, so accelerate can wrap it for DDP/FSDP/DeepSpeed."""

    def __init__(self, prm: FluxPRM):
        super().__init__()
        self.backbone, self.step_head, self.traj_head = prm.backbone, prm.step_head, prm.traj_head
        self.layers = prm.config.feature_layers

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor, cols: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.backbone(input_ids=ids, attention_mask=mask, use_cache=False,
                            output_hidden_states=self.layers != [-1])
        h = out.last_hidden_state if self.layers == [-1] else torch.cat([out.hidden_states[i] for i in self.layers], -1)
        h = h.float()
        last = h[torch.arange(h.size(0), device=h.device), lengths - 1]
        return self.step_head(h[rows, cols]), self.traj_head(last)


def _train_end_to_end(prm: FluxPRM, train_ex: list[Example], cfg: TrainConfig,
                      log: Callable[[dict[str, Any]], None]) -> None:
    from accelerate import Accelerator

    if cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model

        prm.backbone = get_peft_model(prm.backbone, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                               lora_dropout=cfg.lora_dropout,
                                                               target_modules=cfg.lora_targets))
    if cfg.gradient_checkpointing:
        prm.backbone.gradient_checkpointing_enable()
        if hasattr(prm.backbone, "enable_input_require_grads"):
            prm.backbone.enable_input_require_grads()
    prm.backbone.float().train()
    model = _Joint(prm)
    params = [{"params": [p for p in prm.backbone.parameters() if p.requires_grad], "lr": cfg.lr_backbone},
              {"params": list(prm.step_head.parameters()) + list(prm.traj_head.parameters()), "lr": cfg.lr}]
    opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum, cpu=not torch.cuda.is_available())
    model, opt = acc.prepare(model, opt)
    encs, kept = [], []
    for e in train_ex:
        try:
            encs.append(prm.encode(PRMInput(e.problem, e.thinking_steps, e.response_steps)))
            kept.append(e)
        except TraceTooLong:
            log({"skipped_too_long": e.id})
    train_ex = kept
    pw = _pos_weights(train_ex, cfg.balance_classes)
    rng = random.Random(cfg.seed)
    total = cfg.max_steps or cfg.epochs * math.ceil(len(train_ex) / cfg.batch_size)
    step = 0
    while step < total:
        for idx in _batches(len(train_ex), cfg.batch_size, rng):
            batch = [encs[i] for i in idx]
            p = pad_batch(batch, prm.pad_token_id, acc.device)
            with acc.accumulate(model):
                s_logits, t_logits = model(p.ids, p.mask, p.rows, p.cols, p.lengths)
                tg = Targets.of([train_ex[i] for i in idx],
                                [(e.dropped_thinking, len(e.read_positions)) for e in batch]).to(acc.device)
                loss, terms = joint_loss(s_logits, t_logits, tg, cfg, pw)
                acc.backward(loss)
                opt.step()
                opt.zero_grad()
            step += 1
            if step % cfg.log_every == 0 or step == total:
                log({"step": step, "loss": float(loss.detach()), **terms})
            if step >= total:
                break
    prm.backbone = acc.unwrap_model(model).backbone
    prm.backbone.eval()


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def train(label_paths: list[str], out_dir: str | Path, cfg: TrainConfig,
          progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Train a fluxprm checkpoint on label/trace files and save it to ``out_dir``; returns a summary."""
    from fluxprm.device import resolve_device, resolve_dtype

    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    errors: list[Any] = []
    examples = list(load_examples(label_paths, cfg.step_config(), errors, cfg.mask_after_error))
    if not examples:
        raise ValueError(f"no usable training examples in {', '.join(map(str, label_paths))} "
                         f"({len(errors)} rejected records)")
    random.Random(cfg.seed).shuffle(examples)
    if cfg.max_examples:
        examples = examples[: cfg.max_examples]
    train_ex, val_ex = _split(examples, cfg.val_fraction if cfg.mode == "frozen" else 0.0)
    device = resolve_device("auto")
    dtype = resolve_dtype(cfg.dtype, device) if cfg.mode == "frozen" else torch.float32
    prm = build_prm(cfg, device, dtype)
    log_path = out / "train_log.jsonl"
    log_file = open(log_path, "w", encoding="utf-8")

    def log(entry: dict[str, Any]) -> None:
        log_file.write(json.dumps(entry) + "\n")
        log_file.flush()

    try:
        if cfg.mode == "frozen":
            _train_frozen(prm, train_ex, val_ex, cfg, log, progress)
        elif cfg.mode in ("lora", "full"):
            _train_end_to_end(prm, train_ex, cfg, log)
        else:
            raise ValueError(f"unknown mode {cfg.mode!r}: use frozen, lora or full")
    finally:
        log_file.close()
    save_checkpoint(prm, out, cfg)
    _plot_losses(log_path, out / "loss.png")
    summary = {"examples": len(examples), "train": len(train_ex), "val": len(val_ex), "rejected": len(errors),
               "seconds": round(time.time() - started, 1), "out": str(out), "mode": cfg.mode}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def save_checkpoint(prm: FluxPRM, out: Path, cfg: TrainConfig) -> None:
    """Write config, heads and (LoRA) adapter or (full) backbone; the folder loads with ``-m``."""
    import yaml

    fcfg = prm.config
    if cfg.mode == "lora":
        prm.backbone.save_pretrained(str(out))  # adapter_config.json + adapter_model.safetensors
        fcfg.lora = True
    elif cfg.mode == "full":
        prm.backbone.save_pretrained(str(out / "backbone"))
        prm.tokenizer.save_pretrained(str(out / "backbone"))
        fcfg.base = "./backbone"
    save_heads(out, prm.step_head, prm.traj_head)
    fcfg.save(out)
    (out / "train_config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))


def _plot_losses(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_loss" in r]
    if not train_rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train loss")
    if val_rows:
        ax.plot([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows], "o-", label="held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("joint loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
