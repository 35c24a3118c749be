"""Coherence reward: is step t a plausible continuation of step t-1, against steps of other traces?

    r_coh(t) = log  exp(sim(Φ(s_{t-1}), Φ(s_t)) / τ)  /  Σ_{s' ∈ {s_t} ∪ N_t} exp(sim(Φ(s_{t-1}), Φ(s')) / τ)

a contrastive (InfoNCE) log-probability ≤ 0, with ``sim`` the cosine, τ = 0.1 and N_t a set of k = 16
negatives: thinking steps of *other* traces of the same run. For t = 1 the previous "step" is the
problem x. By default the fusion reads it mapped to [0, 1] as ``exp(r_coh)`` — the probability the
contrastive softmax gives the true next step — and with ``LabelConfig.coherence_fusion = "logp"`` the
log-probability itself; records keep both (``coherence`` and ``coherence_logp``). With k negatives a
step scoring like a random one gets ≈ 1/(k+1).

Negatives (documented choice). They must be deterministic given the inputs and the seed, and must
not depend on how the run is chunked or where it was resumed. So:

1. :meth:`NegativePool.collect` makes one cheap first pass over the inputs (parse + segment, no
   model) and keeps a seeded reservoir sample of ``pool_size`` thinking steps of the whole run,
   each tagged with the input item index of its trace (uniform over all steps of the run, memory
   bounded by ``pool_size``). The pool is embedded once.
2. :meth:`NegativePool.draw` gives trace number ``i`` its own RNG, seeded by
   ``sha256(f"{seed}:{i}")``, and for each of its steps draws k pool entries without replacement
   from those *not* owned by trace ``i``. Fewer than k eligible entries → all of them; none (a
   single-trace run) → coherence is missing (``None``), never a degenerate 1.0.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from fluxprm.records import BadRecord
    from fluxprm.traces import Trace

__all__ = ["coherence_logp", "coherence_rewards", "NegativePool", "collect_negative_pool"]


def _cosines(anchor: np.ndarray, others: np.ndarray) -> np.ndarray:
    a = np.asarray(anchor, dtype=np.float64)
    o = np.asarray(others, dtype=np.float64).reshape(-1, a.shape[-1])
    denom = np.linalg.norm(o, axis=1) * np.linalg.norm(a)
    return np.divide(o @ a, denom, out=np.zeros(len(o)), where=denom > 0)


def coherence_logp(prev: np.ndarray, cur: np.ndarray, negatives: np.ndarray, tau: float = 0.1) -> float:
    """The contrastive log-probability of ``cur`` following ``prev`` among ``{cur} ∪ negatives``."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    cands = np.vstack([np.asarray(cur, dtype=np.float64)[None, :],
                       np.asarray(negatives, dtype=np.float64).reshape(-1, len(cur))])
    logits = _cosines(prev, cands) / tau
    top = logits.max()
    return float(logits[0] - (top + np.log(np.exp(logits - top).sum())))


def coherence_rewards(problem: np.ndarray, thinking: np.ndarray, negatives: Sequence[np.ndarray | None],
                      tau: float = 0.1) -> tuple[list[float | None], list[float | None]]:
    """``(logp, prob)`` per thinking step; ``negatives[t]`` is a ``(k_t, d)`` array or ``None``."""
    logps: list[float | None] = []
    for t in range(len(thinking)):
        neg = negatives[t]
        if neg is None or len(neg) == 0:
            logps.append(None)
            continue
        prev = problem if t == 0 else thinking[t - 1]
        logps.append(coherence_logp(prev, thinking[t], neg, tau))
    return logps, [None if lp is None else float(np.exp(lp)) for lp in logps]


def _stable_seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass
class NegativePool:
    """A seeded, run-wide sample of thinking steps, each tagged with the item index of its trace."""

    owners: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    seed: int = 0
    embeddings: np.ndarray | None = None

    @classmethod
    def collect(cls, items: Iterable[tuple[int, Sequence[str]]], size: int, seed: int) -> "NegativePool":
        """Reservoir-sample ``size`` steps from ``(item_index, thinking_steps)`` pairs, in stream order."""
        rng = random.Random(_stable_seed("pool", seed))
        owners: list[int] = []
        texts: list[str] = []
        seen = 0
        for index, steps in items:
            for text in steps:
                if len(texts) < size:
                    owners.append(index)
                    texts.append(text)
                else:
                    j = rng.randrange(seen + 1)
                    if j < size:
                        owners[j], texts[j] = index, text
                seen += 1
        return cls(owners, texts, seed)

    def __len__(self) -> int:
        return len(self.texts)

    def embed(self, encoder) -> None:
        self.embeddings = encoder.encode(self.texts)

    def draw(self, item_index: int, num_steps: int, k: int) -> list[list[int]]:
        """Pool indices of the negatives of each step of trace ``item_index`` (empty lists if none)."""
        eligible = [i for i, owner in enumerate(self.owners) if owner != item_index]
        rng = random.Random(_stable_seed("negatives", self.seed, item_index))
        n = min(k, len(eligible))
        return [rng.sample(eligible, n) for _ in range(num_steps)]

    def negatives(self, item_index: int, num_steps: int, k: int) -> list[np.ndarray | None]:
        """Negative embeddings per step (``None`` when no other trace contributed to the pool)."""
        if self.embeddings is None:
            raise RuntimeError("NegativePool.embed(encoder) must be called before drawing embeddings")
        return [self.embeddings[idx] if idx else None for idx in self.draw(item_index, num_steps, k)]


def collect_negative_pool(items: Iterator[tuple[int, Trace | BadRecord]], config: Any) -> NegativePool:
    """The run-wide negative pool's texts, not embedded yet: the thinking steps of every trace of ``items``
    (``(item_index, trace)``; bad records and unsegmentable traces add none), segmented with ``config.steps``,
    reservoir-sampled to ``config.negative_pool`` with ``config.seed``. One process embeds it right away; a
    Ray run collects it on the driver and has one actor embed it."""
    from fluxprm.steps import prepare
    from fluxprm.traces import Trace, TraceError

    def thinking_steps() -> Iterator[tuple[int, list[str]]]:
        for index, item in items:
            if isinstance(item, Trace):
                try:
                    yield index, prepare(item, config.steps).thinking_steps
                except (TraceError, ValueError):
                    continue

    return NegativePool.collect(thinking_steps(), config.negative_pool, config.seed)
