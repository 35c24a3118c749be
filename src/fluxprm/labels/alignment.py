"""Alignment reward: how close each thinking step is to the response step it leads to.

    r_align(t) = cos(Φ(s_t), Φ(a_{m(t)}))

with ``m = fluxprm.steps.align_steps(T, R)`` (thinking steps grouped evenly onto response steps).
A trace cut off before its response (R = 0) has no alignment for any step (``None``), which the
fusion then leaves out. Cosines are computed in float64 on whatever vectors are given, so
un-normalised inputs work too; the values lie in [-1, 1] (sentence embeddings of text are in
practice ≥ 0, and the fusion uses them unclipped, as the paper does).
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
    """One alignment reward per thinking step, from ``(T, d)`` and ``(R, d)`` embeddings."""
    num_thinking, num_response = len(thinking), len(response)
    if num_response == 0:
        return [None] * num_thinking
    mapping = align_steps(num_thinking, num_response)
    return [cosine(thinking[t], response[m]) for t, m in enumerate(mapping)]
