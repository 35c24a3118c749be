"""The training run: examples in, a trained checkpoint out, with one optimizer-step loop for every mode.

Modes (``TrainConfig.mode``):

- ``frozen`` — the backbone is frozen: its features at the read positions are computed once (and
  cached on disk, :mod:`fluxprm.train.features`), then only the heads train, each head keeping the
  epoch with its best held-out loss. Minutes on a CPU.
- ``lora`` — peft LoRA adapters on the backbone + heads, trained end to end.
- ``full`` — full fine-tune of backbone + heads.

``lora``/``full`` run on 🤗 ``accelerate``: the same command scales from a CPU to multi-GPU DDP, FSDP or
DeepSpeed through ``accelerate launch --config_file ... -m fluxprm train ...``. The modes differ only in
what one optimizer step computes; :func:`run_steps` (batching, epochs or ``max_steps``, seeding,
logging, a hook after each epoch) is shared. Training is seeded and deterministic on a given machine;
losses go to ``train_log.jsonl`` and ``loss.png``.

What can go wrong, and what the caller sees (the exceptions are one line each, for the CLI to print):

- a bad option, an unknown ``base`` or ``feature_layers`` beyond the backbone's depth: :class:`ConfigError`,
  before any record is read or weight loaded;
- records that cannot be trained on (non-finite or out-of-range targets, wrong types, too long for
  ``max_length`` even without thinking steps): each goes to the errors file (default ``OUT/rejected.jsonl``:
  ``{"source", "line", "id", "error"}``) and the rest trains; the summary counts them. If none is left:
  :class:`NoTrainingData`, naming the commonest cause with an example ``file:line``;
- a loss (or a weight) that goes non-finite: :class:`TrainingDiverged` naming the step, and nothing is
  saved. The checkpoint is written into a private folder next to ``OUT`` and moved into ``OUT`` only when
  the run has succeeded, so a failed or killed run never leaves a checkpoint that loads with NaN or half
  its files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from fluxprm.jobs import CauseCounter, OutputPathError, check_folder_outputs, check_inputs
from fluxprm.metrics import best_threshold, first_error_of_labels, threshold_f1
from fluxprm.models.base import Encoded, TraceTooLong, pad_batch
from fluxprm.models.fluxprm_format import FluxPRM, feature_size, make_heads, make_signal_head, resolve_base
from fluxprm.quiet import peft_quietly
from fluxprm.records import BadRecord
from fluxprm.steps import PRMInput
from fluxprm.train.checkpoint import save_checkpoint
from fluxprm.train.config import ConfigError, TrainConfig
from fluxprm.train.data import Example, load_examples
from fluxprm.train.features import Features, extract_features
from fluxprm.train.objective import HEAD_TERMS, Targets, joint_loss, pos_weights, term_weights
from fluxprm.train.plots import plot_losses

__all__ = ["train", "build_prm", "run_steps", "TrainError", "NoTrainingData", "TrainingDiverged", "REJECTED_NAME"]

Log = Callable[[dict[str, Any]], None]
Progress = Callable[[str, int, int], None]
StepFn = Callable[[list[int]], tuple[torch.Tensor, dict[str, float]]]

REJECTED_NAME = "rejected.jsonl"  # the default errors file, inside the checkpoint folder


class TrainError(ValueError):
    """A run that started but cannot produce a checkpoint (exit code 1 on the command line, not 2).

    A subclass of ``ValueError`` so that callers written to catch ``ValueError`` still print one line;
    catch ``TrainError`` first to tell a failed run from a usage error.
    """


class NoTrainingData(TrainError):
    """No example is left to train on; the message names the commonest cause with an example ``file:line``."""


class TrainingDiverged(TrainError):
    """The loss or a weight became NaN or infinite; ``step`` is the training step, and nothing was saved."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def train(label_paths: Iterable[str | Path], out_dir: str | Path, cfg: TrainConfig,
          progress: Progress | None = None, errors_path: str | Path | None = None) -> dict[str, Any]:
    """Train a fluxprm checkpoint on label/trace files and save it to ``out_dir``; returns a summary.

    ``progress(stage, i, n)`` is told how far each stage is: ``features`` and ``held-out features`` (frozen mode:
    the backbone reads every example once), then ``steps`` (optimizer steps, both modes).
    Rejected records go to ``errors_path`` (default ``out_dir/rejected.jsonl``; none is left by a clean
    run); the summary's ``rejected``, ``errors`` and ``rejection_causes`` say how many, where and why.
    Raises ``ConfigError`` (options, ``base``; before any work), ``FileNotFoundError``/``IsADirectoryError``
    (an input), ``OutputPathError`` (``out_dir`` or ``errors_path`` unusable), :class:`NoTrainingData` and
    :class:`TrainingDiverged` (nothing saved).
    """
    from fluxprm.device import resolve_device, resolve_dtype

    started = time.time()
    cfg.validate()  # again: fields may have been assigned since the config was built
    paths = [str(p) for p in label_paths]
    out = Path(out_dir)
    errors_file = Path(errors_path) if errors_path is not None else out / REJECTED_NAME
    _check_paths(paths, out, errors_file)
    _backbone_config(cfg)  # an unknown base or out-of-range feature_layers fails before any work
    rejected: list[BadRecord] = []
    examples = list(load_examples(paths, cfg.step_config(), rejected, cfg.mask_after_error))
    if not examples:
        written = _write_errors(errors_file, rejected, paths, stale_ok=errors_path is None)
        raise NoTrainingData(_no_records_message(paths, rejected, written))
    random.Random(cfg.seed).shuffle(examples)
    if cfg.max_examples:
        examples = examples[: cfg.max_examples]
    train_ex, val_ex = _split(examples, cfg.val_fraction if cfg.mode == "frozen" else 0.0)
    device = resolve_device("auto")
    dtype = resolve_dtype(cfg.dtype, device) if cfg.mode == "frozen" else torch.float32
    prm = build_prm(cfg, device, dtype)
    unfit: list[BadRecord] = []  # examples the backbone cannot lay out (too long) or read (non-finite features)
    feats: list[Features] = []
    val_feats: list[Features] = []
    encs: list[Encoded] = []
    if cfg.mode == "frozen":
        on_features = (lambda i, n: progress("features", i, n)) if progress else None
        feats, train_ex = _fitting(prm, train_ex, extract_features(prm, train_ex, cfg, on_features), unfit)
        if val_ex:
            on_val = (lambda i, n: progress("held-out features", i, n)) if progress else None
            val_feats, val_ex = _fitting(prm, val_ex, extract_features(prm, val_ex, cfg, on_val), unfit)
        if not train_ex:  # every training-side example was unfit: train on the held-out ones, keep no epoch
            feats, train_ex, val_feats, val_ex = val_feats, val_ex, [], []
    else:
        encs, train_ex = _encodings(prm, train_ex, unfit)
    rejected += unfit
    written = _write_errors(errors_file, rejected, paths, stale_ok=errors_path is None)
    if not train_ex:
        raise NoTrainingData(_nothing_fits_message(cfg, len(examples), unfit, len(rejected) - len(unfit), written))

    with _staging(out) as stage:
        log_path = stage / "train_log.jsonl"
        with open(log_path, "w", encoding="utf-8") as log_file:
            def log(entry: dict[str, Any]) -> None:
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()

            if prm.signal_head is not None:  # standardise the signals by the training examples' statistics
                prm.signal_head.fit_scale(_signals(prm, train_ex))
            threshold: dict[str, Any] | None = None
            on_step = (lambda done, total: progress("steps", done, total)) if progress else None
            if cfg.mode == "frozen":
                steps = _train_frozen(prm, feats, train_ex, val_feats, val_ex, cfg, log, on_step)
                threshold = _heldout_error_threshold(prm, val_feats, val_ex)
            else:
                steps = _train_end_to_end(prm, encs, train_ex, cfg, log, on_step)
        _check_weights(prm, cfg, steps)
        prm.config.error_threshold = threshold["threshold"] if threshold else None
        save_checkpoint(prm, stage, cfg)
        plot_losses(log_path, stage / "loss.png")
        summary = {"examples": len(examples), "train": len(train_ex), "val": len(val_ex), "rejected": len(rejected),
                   "too_long": sum(1 for b in unfit if b.error.startswith(_TOO_LONG)),
                   "errors": str(written) if written else None, "rejection_causes": _causes(rejected),
                   "steps": steps, "seconds": round(time.time() - started, 1), "out": str(out), "mode": cfg.mode,
                   "error_threshold": threshold}
        (stage / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _backbone_config(cfg: TrainConfig) -> tuple[Path, Any]:
    """The base's folder and config; ``ConfigError`` naming ``base`` or ``feature_layers`` if unusable.

    Reads only ``config.json``, so a typo in ``base`` or ``feature_layers: [99]`` on a 30-layer model
    fails in a second, before any record is read or weight loaded.
    """
    from fluxprm.models.backbone import read_config
    from fluxprm.models.resolve import ModelNotFound

    path = Path(cfg.base).expanduser()
    if cfg.base.startswith(("/", "./", "../", "~")) and not path.is_dir():  # a path, not a hub id: say so
        problem = "is a file, not a model folder" if path.exists() else "does not exist"
        raise ConfigError(f"base: {cfg.base} {problem}; give smollm2, a transformers model folder or a cached hub id",
                          "base")
    try:
        folder = resolve_base(cfg.base)
    except ModelNotFound as exc:
        raise ConfigError(f"base: {exc}", "base") from None
    try:
        config = read_config(folder)
    except FileNotFoundError:
        raise ConfigError(f"base: {folder} has no config.json; give smollm2, a transformers model folder or a "
                          "cached hub id", "base") from None
    except (ValueError, OSError) as exc:
        raise ConfigError(f"base: cannot read {folder / 'config.json'}: {exc}", "base") from None
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int):
        cfg.check_backbone(layers)
    return folder, config


def build_prm(cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> FluxPRM:
    """A FluxPRM around the base backbone with freshly initialised (seeded) heads."""
    from fluxprm.models.backbone import load_backbone, load_tokenizer

    base, config = _backbone_config(cfg)
    backbone = load_backbone(base, config, dtype, device)
    tokenizer = load_tokenizer(base)
    torch.manual_seed(cfg.seed)
    model_config = cfg.model_config()
    step_head, traj_head = make_heads(model_config, feature_size(backbone, cfg.feature_layers), cfg.head_dropout)
    signal_head = make_signal_head(model_config)
    return FluxPRM(backbone, tokenizer, step_head.to(device), traj_head.to(device), model_config,
                   signal_head.to(device) if signal_head is not None else None, name="fluxprm",
                   device=device, dtype=dtype, max_length=cfg.max_length, aggregate=cfg.aggregate, alpha=cfg.alpha)


# --------------------------------------------------------------------------------------------
# paths, rejected records, the staged checkpoint folder
# --------------------------------------------------------------------------------------------
def _check_paths(paths: list[str], out: Path, errors_file: Path) -> None:
    """Inputs exist; the checkpoint folder is not a file; the errors file is neither an input nor a folder."""
    check_inputs(paths)
    if not paths:
        raise ConfigError("no input files: give label files and/or labelled trace files")
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"-o {out} is a file; give a folder for the checkpoint")
    check_folder_outputs(paths, out, None)  # the checkpoint's files replace their namesakes in the folder
    if errors_file.is_dir():
        raise OutputPathError(f"errors file {errors_file} is a directory; give a file path")
    real_inputs = {os.path.realpath(p): p for p in paths}
    if os.path.realpath(errors_file) in real_inputs:
        raise OutputPathError(f"errors file {errors_file} is the input file {real_inputs[os.path.realpath(errors_file)]}"
                              ": writing it would destroy the input; choose another path")


def _write_errors(path: Path, rejected: list[BadRecord], paths: list[str], stale_ok: bool) -> Path | None:
    """Write the rejected records in input order (file, then line); a clean run writes none and, at the
    default place, removes one left by an earlier run (it would describe other data)."""
    if not rejected:
        if stale_ok and path.is_file():
            path.unlink()
        return None
    order = {p: i for i, p in enumerate(paths)}
    rows = sorted(rejected, key=lambda b: (order.get(b.source, len(order)), b.line))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for bad in rows:  # json escapes lone surrogates, so every record can be written
            fh.write(json.dumps(bad.to_json()) + "\n")
    tmp.replace(path)
    return path


_TOO_LONG = "longer than max_length"


def _causes(rejected: list[BadRecord], limit: int = 5) -> list[dict[str, Any]]:
    """The commonest causes first, each with its count and the first example ``file:line: message``."""
    counter = CauseCounter()
    for b in rejected:
        counter.add(b)
    return [asdict(c) for c in counter.summary(limit)]


def _no_records_message(paths: list[str], rejected: list[BadRecord], written: Path | None) -> str:
    if not rejected:
        return f"no records in {', '.join(paths)}: nothing to train on"
    [top] = _causes(rejected, 1)
    return (f"none of the {len(rejected)} records can be trained on; commonest cause ({top['count']} of them): "
            f"{top['example']}; every reason is in {written}")


def _nothing_fits_message(cfg: TrainConfig, n_examples: int, unfit: list[BadRecord], n_other: int,
                          written: Path | None) -> str:
    others = f"; {n_other} other records were rejected" if n_other else ""
    if all(b.error.startswith(_TOO_LONG) for b in unfit):
        return (f"all {n_examples} examples are longer than max_length={cfg.max_length} tokens even with every "
                f"thinking step dropped (e.g. {unfit[0].source}:{unfit[0].line}); raise max_length{others}; "
                f"see {written}")
    [top] = _causes(unfit, 1)
    return (f"none of the {n_examples} examples can be trained on; commonest cause ({top['count']} of them): "
            f"{top['example']}{others}; see {written}")


def _too_long(prm: FluxPRM, ex: Example) -> BadRecord:
    needed = len(prm.encode_ids(ex.problem, ex.response_steps)[0])
    return ex.rejected(f"{_TOO_LONG}={prm.max_length} tokens even with every thinking step dropped (the problem "
                       f"and response alone take {needed} tokens); raise max_length")


def _fitting(prm: FluxPRM, exs: list[Example], feats: list[Features | None], unfit: list[BadRecord]
             ) -> tuple[list[Features], list[Example]]:
    """The examples whose features exist and are finite; each other one goes to ``unfit`` saying why."""
    kept_feats, kept = [], []
    for f, ex in zip(feats, exs):
        if f is None:
            unfit.append(_too_long(prm, ex))
        elif not (torch.isfinite(f.steps).all() and torch.isfinite(f.last).all()):
            unfit.append(ex.rejected("the backbone's features for this example are not finite (inf or NaN: "
                                     "try dtype: float32)"))
        else:
            kept_feats.append(f)
            kept.append(ex)
    return kept_feats, kept


def _encodings(prm: FluxPRM, exs: list[Example], unfit: list[BadRecord]) -> tuple[list[Encoded], list[Example]]:
    """Each example laid out in ``max_length`` (lora / full); the ones that cannot be go to ``unfit``."""
    encs, kept = [], []
    for ex in exs:
        try:
            encs.append(prm.encode(PRMInput(ex.problem, ex.thinking_steps, ex.response_steps)))
            kept.append(ex)
        except TraceTooLong:
            unfit.append(_too_long(prm, ex))
    return encs, kept


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A private folder next to ``out`` that the run writes into, moved into ``out`` only if the block succeeds.

    So an exception (a diverged loss) or a killed process leaves ``out`` as it was: never a checkpoint
    with NaN heads or half its files that ``fluxprm score -m`` would load.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield stage
        out.mkdir(exist_ok=True)
        for entry in stage.iterdir():
            target = out / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # e.g. backbone/ of an earlier full fine-tune into the same folder
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _check_weights(prm: FluxPRM, cfg: TrainConfig, steps: int) -> None:
    """The last update can make weights non-finite while the last loss was still finite: check before saving."""
    parts = [("step head", prm.step_head), ("trajectory head", prm.traj_head)]
    if prm.signal_head is not None:
        parts.append(("signal head", prm.signal_head))
    if cfg.mode != "frozen":
        parts.append(("backbone", prm.backbone))
    for what, module in parts:
        for name, param in module.named_parameters():
            if param.requires_grad and not torch.isfinite(param).all():
                raise TrainingDiverged(f"training diverged: the {what} weight {name} is not finite after step "
                                       f"{steps}; nothing was saved. Lower lr (now {cfg.lr}) or check the inputs",
                                       steps)


def heldout_bucket(problem: str) -> float:
    """A problem's place in [0, 1] for the held-out split: problems below ``val_fraction`` are held out. Public
    so that an evaluation can find the training rows a run never fitted (e.g. to choose a threshold on them)."""
    return int(hashlib.sha256(problem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _split(examples: list[Example], val_fraction: float) -> tuple[list[Example], list[Example]]:
    """Deterministic split by a hash of the problem, so no problem is on both sides."""
    if val_fraction <= 0:
        return examples, []
    held_out = [heldout_bucket(e.problem) < val_fraction for e in examples]
    train_ex = [e for e, held in zip(examples, held_out) if not held]
    val_ex = [e for e, held in zip(examples, held_out) if held]
    return (train_ex, val_ex) if train_ex and val_ex else (examples, [])


# --------------------------------------------------------------------------------------------
# the one step loop
# --------------------------------------------------------------------------------------------
def _batches(n: int, size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    return [order[i:i + size] for i in range(0, n, size)]


def run_steps(n_examples: int, cfg: TrainConfig, step: StepFn, log: Log,
              after_epoch: Callable[[int], None] | None = None,
              on_step: Callable[[int, int], None] | None = None) -> int:
    """Run ``max_steps`` (or ``epochs`` worth of) optimizer steps over seeded shuffled batches.

    ``step(indices)`` does one forward, backward and update on those examples and returns the loss
    and its terms, logged every ``log_every`` steps and at the last one; ``after_epoch(step)`` runs
    after each pass over the data, including the last, cut-short one (held-out evaluation); ``on_step(done,
    total)`` after every step (progress). Returns the number of steps taken.
    """
    if n_examples < 1 or cfg.batch_size < 1:  # no batch could be formed: the loop below would never end
        raise NoTrainingData(f"no batch can be formed from {n_examples} examples with batch_size={cfg.batch_size}")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)  # dropout
    total = cfg.max_steps or cfg.epochs * math.ceil(n_examples / cfg.batch_size)
    done = 0
    while done < total:
        for idx in _batches(n_examples, cfg.batch_size, rng):
            loss, terms = step(idx)
            done += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                detail = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
                raise TrainingDiverged(f"training diverged at step {done}: the loss is {value} ({detail}); nothing "
                                       f"was saved. Lower lr (now {cfg.lr}) or check the inputs", done)
            if done % cfg.log_every == 0 or done == total:
                log({"step": done, "loss": value, **terms})
            if on_step:
                on_step(done, total)
            if done >= total:
                break
        if after_epoch:
            after_epoch(done)
    return done


# --------------------------------------------------------------------------------------------
# frozen mode: cached features, heads only
# --------------------------------------------------------------------------------------------
def _signals(prm: FluxPRM, exs: list[Example]) -> torch.Tensor | None:
    """The examples' trajectory signals (n, k), computed on the whole example as scoring computes them; None
    when the model reads none."""
    if prm.signal_head is None:
        return None
    rows = [prm.trace_signals(PRMInput(ex.problem, ex.thinking_steps, ex.response_steps)) for ex in exs]
    return torch.tensor(rows, dtype=torch.float32)


def _heads_loss(prm: FluxPRM, feats: list[Features], exs: list[Example], signals: torch.Tensor | None,
                idx: Iterable[int], cfg: TrainConfig, pw: tuple[float | None, float | None]
                ) -> tuple[torch.Tensor, dict[str, float]]:
    idx = list(idx)
    device = next(prm.step_head.parameters()).device
    step_x = torch.cat([feats[i].steps for i in idx]).float().to(device)
    last_x = torch.stack([feats[i].last for i in idx]).float().to(device)
    sig_x = signals[idx].to(device) if signals is not None else None
    tg = Targets.of([exs[i] for i in idx], [feats[i].kept for i in idx]).to(device)
    return joint_loss(prm.step_head(step_x), prm.traj_logits(last_x, sig_x), tg, cfg, pw)


def _heads(prm: FluxPRM) -> list[nn.Module]:
    """The trained heads: step, trajectory and (if the model reads signals) the signal head."""
    return [prm.step_head, prm.traj_head] + ([prm.signal_head] if prm.signal_head is not None else [])


def _heldout_error_threshold(prm: FluxPRM, feats: list[Features], exs: list[Example]) -> dict[str, Any] | None:
    """The first-error threshold the checkpoint records (``fluxprm eval processbench``'s default for it).

    Chosen on the held-out examples whose step labels place a first error (or none): rows the heads never
    fitted, on which the best threshold is not optimistic. A model's reward scale is its own (fluxprm-mini's
    step rewards sit well below 0.5), so a fixed 0.5 can be far off. ``None`` without both erroneous and correct
    held-out samples. Few held-out rows make a noisy choice: scripts/mini/kfold_threshold.py shows a sturdier
    one, out-of-fold over the whole file.
    """
    rewards: list[list[float]] = []
    labels: list[int] = []
    with torch.no_grad():
        for f, ex in zip(feats, exs):
            label = first_error_of_labels(ex.step_labels)
            if label is None or f.steps.shape[0] != len(ex.step_labels):
                continue
            rewards.append(prm.head(f.steps.float()).tolist())
            labels.append(label)
    try:
        threshold = best_threshold(rewards, labels)
    except ValueError:  # no erroneous or no correct sample: F1 is undefined
        return None
    fit = threshold_f1(rewards, labels, threshold)
    return {"threshold": threshold, "samples": len(labels), "heldout_f1": fit.f1}


def _train_frozen(prm: FluxPRM, feats: list[Features], train_ex: list[Example], val_feats: list[Features],
                  val_ex: list[Example], cfg: TrainConfig, log: Log,
                  on_step: Callable[[int, int], None] | None = None) -> int:
    """Heads only, on cached features; each head keeps the epoch with its best held-out loss. Returns the steps
    taken."""
    pw = pos_weights(train_ex, cfg.balance_classes)
    heads = nn.ModuleList(_heads(prm)).float().train()
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    signals, val_signals = _signals(prm, train_ex), _signals(prm, val_ex)

    def step(idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, terms = _heads_loss(prm, feats, train_ex, signals, idx, cfg, pw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss, terms

    # The objective is a sum of per-head terms (step_mse + step_bce on the step head, final_mse + outcome_bce on
    # the trajectory and signal heads), so each head keeps the epoch where *its* held-out terms were lowest: the
    # least held-out loss any mix of the epochs' heads reaches, never more than the best single epoch's.
    parts = {"step": ([prm.step_head], HEAD_TERMS["step"]),
             "trajectory": ([m for m in heads if m is not prm.step_head], HEAD_TERMS["trajectory"])}
    weight = term_weights(cfg)
    best: dict[str, tuple[float, int, list[dict[str, torch.Tensor]]]] = {}

    def validate(done: int) -> None:
        heads.eval()
        with torch.no_grad():
            total, terms = _heads_loss(prm, val_feats, val_ex, val_signals, range(len(val_ex)), cfg, pw)
        heads.train()
        v = float(total)
        if not math.isfinite(v):
            raise TrainingDiverged(f"training diverged by step {done}: the held-out loss is {v}; nothing was saved. "
                                   f"Lower lr (now {cfg.lr}) or check the inputs", done)
        log({"step": done, "val_loss": v, **{f"val_{k}": t for k, t in terms.items()}})
        for name, (modules, keys) in parts.items():
            # a head with no held-out targets (its terms are 0 at every epoch) follows the total, as before
            part = sum(weight[k] * terms[k] for k in keys) or v
            if name not in best or part < best[name][0]:
                best[name] = (part, done, [{k: t.clone() for k, t in m.state_dict().items()} for m in modules])

    done = run_steps(len(train_ex), cfg, step, log, validate if val_ex else None, on_step)
    if best:  # each head as it was at its best held-out epoch
        for name, (modules, _) in parts.items():
            for module, state in zip(modules, best[name][2]):
                module.load_state_dict(state)
        log({"step": done, **{f"best_{name}_{what}": value for name, b in best.items()
                              for what, value in (("val_loss", b[0]), ("step", b[1]))}})
    heads.eval()
    return done


# --------------------------------------------------------------------------------------------
# lora / full: end to end on accelerate
# --------------------------------------------------------------------------------------------
class _Joint(nn.Module):
    """Backbone + both heads as one module, so accelerate can wrap it for DDP/FSDP/DeepSpeed."""

    def __init__(self, prm: FluxPRM):
        super().__init__()
        self.backbone, self.step_head, self.traj_head = prm.backbone, prm.step_head, prm.traj_head
        self.signal_head = prm.signal_head
        self.layers = prm.config.feature_layers

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor, cols: torch.Tensor,
                lengths: torch.Tensor, signals: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.backbone(input_ids=ids, attention_mask=mask, use_cache=False,
                            output_hidden_states=self.layers != [-1])
        h = out.last_hidden_state if self.layers == [-1] else torch.cat([out.hidden_states[i] for i in self.layers], -1)
        h = h.float()
        last = h[torch.arange(h.size(0), device=h.device), lengths - 1]
        traj = self.traj_head(last)
        if self.signal_head is not None:
            traj = traj + self.signal_head(signals)
        return self.step_head(h[rows, cols]), traj


def _train_end_to_end(prm: FluxPRM, encs: list[Encoded], train_ex: list[Example], cfg: TrainConfig, log: Log,
                      on_step: Callable[[int, int], None] | None = None) -> int:
    """Backbone (LoRA adapters or all weights) and heads on ``encs``, the examples laid out; returns the steps."""
    from accelerate import Accelerator

    if cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_targets)
        with peft_quietly():
            prm.backbone = get_peft_model(prm.backbone, lora)
    if cfg.gradient_checkpointing:
        # transformers 5.23 renamed it (the old name warns, and goes in v6); earlier ones have only the old one
        enable = getattr(prm.backbone, "activation_checkpointing_enable", None)
        (enable or prm.backbone.gradient_checkpointing_enable)()
        if hasattr(prm.backbone, "enable_input_require_grads"):
            prm.backbone.enable_input_require_grads()
    prm.backbone.float().train()
    model = _Joint(prm)
    params = [{"params": [p for p in prm.backbone.parameters() if p.requires_grad], "lr": cfg.lr_backbone},
              {"params": [p for head in _heads(prm) for p in head.parameters()], "lr": cfg.lr}]
    opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
                      cpu=not torch.cuda.is_available())
    model, opt = acc.prepare(model, opt)
    pw = pos_weights(train_ex, cfg.balance_classes)

    def step(idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = [encs[i] for i in idx]
        p = pad_batch(batch, prm.pad_token_id, acc.device)
        with acc.accumulate(model):
            sig = torch.tensor([e.signals for e in batch], device=acc.device) if prm.signal_head is not None else None
            s_logits, t_logits = model(p.ids, p.mask, p.rows, p.cols, p.lengths, sig)
            tg = Targets.of([train_ex[i] for i in idx],
                            [(e.dropped_thinking, len(e.read_positions)) for e in batch]).to(acc.device)
            loss, terms = joint_loss(s_logits, t_logits, tg, cfg, pw)
            acc.backward(loss)
            opt.step()
            opt.zero_grad()
        return loss, terms

    done = run_steps(len(train_ex), cfg, step, log, on_step=on_step)
    prm.backbone = acc.unwrap_model(model).backbone
    prm.backbone.eval()
    return done
