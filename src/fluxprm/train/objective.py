"""The ReasonFlux-PRM joint objective, on logits of the step and trajectory heads:

    L = λ_step · mean_t MSE(R(s_t | x, s_<t), r_step(t)) + λ_final · MSE(R(x, y), r_final)
        + λ_step_bce · BCE(step logits, hard step labels) + λ_outcome_bce · BCE(trajectory logit, correct)

Every target may be missing (a label record has soft rewards, a PRMBench trace hard labels, a pool
only correctness), so each term is a mean over the targets present and a batch without any adds 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from fluxprm.train.config import TrainConfig
from fluxprm.train.data import Example

__all__ = ["Targets", "joint_loss", "pos_weights"]

PosWeights = tuple[float | None, float | None]


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
        return pred.sum() * 0.0  # a zero that keeps the graph, so backward() works on any batch
    return F.mse_loss(pred[mask], target[mask])


def _masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                pos_weight: float | None) -> torch.Tensor:
    if not mask.any():
        return logits.sum() * 0.0
    pw = torch.tensor(pos_weight) if pos_weight else None
    return F.binary_cross_entropy_with_logits(logits[mask], target[mask], pos_weight=pw)


def joint_loss(step_logits: torch.Tensor, traj_logits: torch.Tensor, tg: Targets, cfg: TrainConfig,
               pos_weights: PosWeights = (None, None)) -> tuple[torch.Tensor, dict[str, float]]:
    """The joint objective; returns the total and each term (for logging)."""
    terms = {
        "step_mse": _masked_mse(torch.sigmoid(step_logits), tg.step_soft, tg.step_soft_mask),
        "final_mse": _masked_mse(torch.sigmoid(traj_logits), tg.final_soft, tg.final_soft_mask),
        "step_bce": _masked_bce(step_logits, tg.step_hard, tg.step_hard_mask, pos_weights[0]),
        "outcome_bce": _masked_bce(traj_logits, tg.final_hard, tg.final_hard_mask, pos_weights[1]),
    }
    weights = term_weights(cfg)
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}


def term_weights(cfg: TrainConfig) -> dict[str, float]:
    """The weight of each term of :func:`joint_loss` in its total."""
    return {"step_mse": cfg.lambda_step, "final_mse": cfg.lambda_final, "step_bce": cfg.lambda_step_bce,
            "outcome_bce": cfg.lambda_outcome_bce}


#: The terms each head's output enters: the total is their sum, so each head can be judged on its own terms.
HEAD_TERMS = {"step": ("step_mse", "step_bce"), "trajectory": ("final_mse", "outcome_bce")}


def pos_weights(examples: list[Example], balance: bool) -> PosWeights:
    """pos_weight = #neg / #pos for the (step, outcome) BCE terms, so rare error steps are not drowned out."""
    if not balance:
        return None, None
    step = [lab for e in examples for lab in e.step_labels if lab is not None]
    outcome = [e.correct for e in examples if e.correct is not None]

    def ratio(xs: list[Any]) -> float | None:
        pos = sum(1 for x in xs if x)
        neg = len(xs) - pos
        return neg / pos if pos and neg else None

    return ratio(step), ratio(outcome)

