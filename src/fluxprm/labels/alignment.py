"""Alignment reward: how close each thinking step is to the response step it leads to.

    r_align(t) = max(0, cos(Φ(s_t), Φ(a_{m(t)})))

with ``m = fluxprm.steps.align_steps(T, R)`` (thinking steps grouped evenly onto response steps).
A trace cut off before its response (R = 0) has no alignment for any step (``None``), which the
fusion then leaves out. Cosines are computed in float64 on whatever vectors are given, so
un-normalised inputs work too. A negative cosine counts as 0: the paper's formula is the plain cosine, but
the fusion and the trainer take rewards in [0, 1], and "pointing away from the response step" carries no more
meaning than "unrelated". It happens: all-MiniLM-L6-v2 gave 6 of 137 long Sky-T1 traces a slightly negative
step (e.g. −0.004), which made their label records untrainable.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fluxprm.steps import align_steps

__all__ = ["cosine", "alignment_rewards"]


def cosine(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Cosine similarity of two vectors (0.0 if either is the zero vector)."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a64, b64) / (na * nb))


def alignment_rewards(thinking: np.ndarray, response: np.ndarray) -> list[float | None]:
    """One alignment reward in [0, 1] per thinking step, from ``(T, d)`` and ``(R, d)`` embeddings."""
    num_thinking, num_response = len(thinking), len(response)
    if num_response == 0:
        return [None] * num_thinking
    mapping = align_steps(num_thinking, num_response)
    return [max(0.0, cosine(thinking[t], response[m])) for t, m in enumerate(mapping)]
