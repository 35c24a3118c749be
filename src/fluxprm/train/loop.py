"""The training run: examples in, a trained checkpoint out, with one optimizer-step loop for every mode.

Modes (``TrainConfig.mode``):

- ``frozen`` — the backbone is frozen: its features at the read positions are computed once (and
  cached on disk, :mod:`fluxprm.train.features`), then only the heads train, keeping the epoch with
  the best held-out loss. Minutes on a CPU.
- ``lora`` — peft LoRA adapters on the backbone + heads, trained end to end.
- ``full`` — full fine-tune of backbone + heads.

``lora``/``full`` run on 🤗 ``accelerate``: the same command scales from a CPU to multi-GPU DDP, FSDP or
DeepSpeed through ``accelerate launch --config_file ... -m fluxprm train ...``. The modes differ only in
what one optimizer step computes; :func:`run_steps` (batching, epochs or ``max_steps``, seeding,
logging, a hook after each epoch) is shared. Training is seeded and deterministic on a given machine;
losses go to ``train_log.jsonl`` and ``loss.png``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from fluxprm.models.base import TraceTooLong, pad_batch
from fluxprm.models.fluxprm_format import FluxPRM, feature_size, make_heads, resolve_base
from fluxprm.steps import PRMInput
from fluxprm.train.checkpoint import save_checkpoint
from fluxprm.train.config import TrainConfig
from fluxprm.train.data import Example, load_examples
from fluxprm.train.features import Features, extract_features, usable
from fluxprm.train.objective import Targets, joint_loss, pos_weights
from fluxprm.train.plots import plot_losses

__all__ = ["train", "build_prm", "run_steps"]

Log = Callable[[dict[str, Any]], None]
Progress = Callable[[str, int, int], None]
StepFn = Callable[[list[int]], tuple[torch.Tensor, dict[str, float]]]


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def train(label_paths: list[str], out_dir: str | Path, cfg: TrainConfig,
          progress: Progress | None = None) -> dict[str, Any]:
    """Train a fluxprm checkpoint on label/trace files and save it to ``out_dir``; returns a summary."""
    from fluxprm.device import resolve_device, resolve_dtype

    if cfg.mode not in ("frozen", "lora", "full"):
        raise ValueError(f"unknown mode {cfg.mode!r}: use frozen, lora or full")
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
    with open(log_path, "w", encoding="utf-8") as log_file:
        def log(entry: dict[str, Any]) -> None:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()

        if cfg.mode == "frozen":
            _train_frozen(prm, train_ex, val_ex, cfg, log, progress)
        else:
            _train_end_to_end(prm, train_ex, cfg, log)
    save_checkpoint(prm, out, cfg)
    plot_losses(log_path, out / "loss.png")
    summary = {"examples": len(examples), "train": len(train_ex), "val": len(val_ex), "rejected": len(errors),
               "seconds": round(time.time() - started, 1), "out": str(out), "mode": cfg.mode}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def build_prm(cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> FluxPRM:
    """A FluxPRM around the base backbone with freshly initialised (seeded) heads."""
    from fluxprm.models.backbone import load_backbone, load_tokenizer, read_config

    base = resolve_base(cfg.base)
    backbone = load_backbone(base, read_config(base), dtype, device)
    tokenizer = load_tokenizer(base)
    torch.manual_seed(cfg.seed)
    model_config = cfg.model_config()
    step_head, traj_head = make_heads(model_config, feature_size(backbone, cfg.feature_layers), cfg.head_dropout)
    return FluxPRM(backbone, tokenizer, step_head.to(device), traj_head.to(device), model_config, name="fluxprm",
                   device=device, dtype=dtype, max_length=cfg.max_length, aggregate=cfg.aggregate, alpha=cfg.alpha)


def _split(examples: list[Example], val_fraction: float) -> tuple[list[Example], list[Example]]:
    """Deterministic split by a hash of the problem, so no problem is on both sides."""
    if val_fraction <= 0:
        return examples, []

    def bucket(ex: Example) -> float:
        return int(hashlib.sha256(ex.problem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    train_ex = [e for e in examples if bucket(e) >= val_fraction]
    val_ex = [e for e in examples if bucket(e) < val_fraction]
    return (train_ex, val_ex) if train_ex and val_ex else (examples, [])


# --------------------------------------------------------------------------------------------
# the one step loop
# --------------------------------------------------------------------------------------------
def _batches(n: int, size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    return [order[i:i + size] for i in range(0, n, size)]


def run_steps(n_examples: int, cfg: TrainConfig, step: StepFn, log: Log,
              after_epoch: Callable[[int], None] | None = None) -> int:
    """Run ``max_steps`` (or ``epochs`` worth of) optimizer steps over seeded shuffled batches.

    ``step(indices)`` does one forward, backward and update on those examples and returns the loss
    and its terms, logged every ``log_every`` steps and at the last one; ``after_epoch(step)`` runs
    after each pass over the data, including the last, cut-short one (held-out evaluation).
    Returns the number of steps taken.
    """
    if n_examples == 0:
        raise ValueError(f"no training example fits max_length={cfg.max_length}: raise it")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)  # dropout
    total = cfg.max_steps or cfg.epochs * math.ceil(n_examples / cfg.batch_size)
    done = 0
    while done < total:
        for idx in _batches(n_examples, cfg.batch_size, rng):
            loss, terms = step(idx)
            done += 1
            if done % cfg.log_every == 0 or done == total:
                log({"step": done, "loss": float(loss.detach()), **terms})
            if done >= total:
                break
        if after_epoch:
            after_epoch(done)
    return done


# --------------------------------------------------------------------------------------------
# frozen mode: cached features, heads only
# --------------------------------------------------------------------------------------------
def _heads_loss(prm: FluxPRM, feats: list[Features], exs: list[Example], idx: Iterable[int], cfg: TrainConfig,
                pw: tuple[float | None, float | None]) -> tuple[torch.Tensor, dict[str, float]]:
    idx = list(idx)
    device = next(prm.step_head.parameters()).device
    step_x = torch.cat([feats[i].steps for i in idx]).float().to(device)
    last_x = torch.stack([feats[i].last for i in idx]).float().to(device)
    tg = Targets.of([exs[i] for i in idx], [feats[i].kept for i in idx]).to(device)
    return joint_loss(prm.step_head(step_x), prm.traj_head(last_x), tg, cfg, pw)


def _train_frozen(prm: FluxPRM, train_ex: list[Example], val_ex: list[Example], cfg: TrainConfig,
                  log: Log, progress: Progress | None) -> None:
    feats, train_ex = usable(extract_features(prm, train_ex, cfg,
                                              (lambda i, n: progress("features", i, n)) if progress else None),
                             train_ex, log)
    val_feats, val_ex = usable(extract_features(prm, val_ex, cfg), val_ex, log) if val_ex else ([], [])
    pw = pos_weights(train_ex, cfg.balance_classes)
    heads = nn.ModuleList([prm.step_head, prm.traj_head]).float().train()
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, terms = _heads_loss(prm, feats, train_ex, idx, cfg, pw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss, terms

    best_loss, best_state = math.inf, None

    def validate(done: int) -> None:
        nonlocal best_loss, best_state
        heads.eval()
        with torch.no_grad():
            v = float(_heads_loss(prm, val_feats, val_ex, range(len(val_ex)), cfg, pw)[0])
        heads.train()
        log({"step": done, "val_loss": v})
        if v < best_loss:
            best_loss, best_state = v, {k: t.clone() for k, t in heads.state_dict().items()}

    done = run_steps(len(train_ex), cfg, step, log, validate if val_ex else None)
    if best_state is not None:  # keep the epoch with the best held-out loss
        heads.load_state_dict(best_state)
        log({"step": done, "best_val_loss": best_loss})
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


def _train_end_to_end(prm: FluxPRM, train_ex: list[Example], cfg: TrainConfig, log: Log) -> None:
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
    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
                      cpu=not torch.cuda.is_available())
    model, opt = acc.prepare(model, opt)
    encs, kept = [], []
    for e in train_ex:
        try:
            encs.append(prm.encode(PRMInput(e.problem, e.thinking_steps, e.response_steps)))
            kept.append(e)
        except TraceTooLong:
            log({"skipped_too_long": e.id})
    train_ex = kept
    pw = pos_weights(train_ex, cfg.balance_classes)

    def step(idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
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
        return loss, terms

    run_steps(len(train_ex), cfg, step, log)
    prm.backbone = acc.unwrap_model(model).backbone
    prm.backbone.eval()
