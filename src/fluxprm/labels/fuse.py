"""Softmax fusion of the per-step teacher rewards into one step reward.

ReasonFlux-PRM combines the three step-level signals with weights given by a softmax over the
signals themselves::

    r_step(t) = Σ_k w_k · r_k(t),    w_k = exp(r_k(t)) / Σ_j exp(r_j(t))

over k ∈ {alignment, quality, coherence}. Alignment and quality are in [0, 1]; coherence enters as the
contrastive probability ``exp(r_coh)`` by default, or as the log-probability ``r_coh ≤ 0`` itself
(``LabelConfig.coherence_fusion = "logp"``), where a predictable step lowers the reward. A component
that is switched off or missing for a step (no response to align with, unparseable judge output, no
negatives) drops out of the softmax: the weights are renormalised over the components present. A step
with no component present has no reward.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["COMPONENTS", "fuse", "fuse_steps"]

COMPONENTS = ("alignment", "quality", "coherence")  # order of the recorded weight triples


def fuse(values: Sequence[float | None]) -> tuple[float | None, list[float | None] | None]:
    """``(r_step, weights)`` for one step; ``weights`` has ``None`` where a component is missing.

    Returns ``(None, None)`` when every component is missing.
    """
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    top = max(present)  # shift for numerical stability; cancels in the ratio
    exps = [None if v is None else math.exp(v - top) for v in values]
    total = sum(e for e in exps if e is not None)
    weights = [None if e is None else e / total for e in exps]
    reward = sum(w * v for w, v in zip(weights, values) if w is not None and v is not None)
    return reward, weights


def fuse_steps(*components: Sequence[float | None]) -> tuple[list[float | None], list[list[float | None] | None]]:
    """Fuse per-step component lists of equal length (one list per component, in ``COMPONENTS`` order)."""
    n = len(components[0]) if components else 0
    if any(len(c) != n for c in components):
        raise ValueError(f"component lists differ in length: {[len(c) for c in components]}")
    rewards: list[float | None] = []
    weights: list[list[float | None] | None] = []
    for t in range(n):
        r, w = fuse([c[t] for c in components])
        rewards.append(r)
        weights.append(w)
    return rewards, weights
