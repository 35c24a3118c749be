"""The common shape of every PRM fluxprm loads: a transformer backbone plus a small reward head.

Every supported checkpoint format is "run the backbone once over problem + steps, then read a head
at a few token positions". The formats differ only in how the text is laid out, where the rewards
are read, and what the head is. So a format is a subclass that implements three small methods:

- ``encode_ids(problem, steps)`` → token ids and the positions where step rewards are read;
- ``head(hidden)`` → step rewards from the hidden states gathered at those positions;
- ``trajectory(hidden_last)`` → optional trajectory reward from the last token.

Everything else — truncation of long traces, batching, dtype, aggregation — lives here once.
The backbone is always the *base* model (no LM head): a 151K-vocabulary LM head over every position
would cost more than the whole 135M backbone and a PRM never needs it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

__all__ = ["PRMInput", "Encoded", "PaddedBatch", "pad_batch", "ItemOutput", "TraceScore", "TraceTooLong", "TransformerPRM", "AGGREGATES",
           "aggregate"]


@dataclass(slots=True)
class PRMInput:
    """One trace as a PRM sees it: the problem and its segmented thinking and response steps."""

    problem: str
    thinking_steps: list[str]
    response_steps: list[str]


@dataclass(slots=True)
class Encoded:
    """A trace laid out for the model: token ids, reward read positions and what truncation dropped."""

    input_ids: list[int]
    read_positions: list[int]   # one per scored step, in reading order
    num_thinking: int           # thinking steps kept (they come first among the scored steps)
    dropped_thinking: int = 0   # earliest thinking steps dropped to fit the context


@dataclass(slots=True)
class ItemOutput:
    """What one forward pass yields for one encoded trace."""

    step_rewards: list[float]
    trajectory_reward: float | None = None


@dataclass(slots=True)
class TraceScore:
    """The score record of DESIGN.md, one per trace."""

    id: str
    score: float | None
    step_rewards: list[float]
    thinking_step_rewards: list[float] | None
    response_step_rewards: list[float] | None
    trajectory_reward: float | None
    num_steps: int
    truncated: bool
    model: str
    dropped_steps: int = 0
    num_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON record: schema keys first, extras (group, candidate, correct, ...) after."""
        rec: dict[str, Any] = {
            "id": self.id, "score": self.score, "step_rewards": self.step_rewards,
            "thinking_step_rewards": self.thinking_step_rewards,
            "response_step_rewards": self.response_step_rewards,
            "trajectory_reward": self.trajectory_reward, "num_steps": self.num_steps,
            "truncated": self.truncated, "model": self.model,
        }
        if self.truncated:
            rec["dropped_steps"] = self.dropped_steps
        rec.update(self.extra)
        return rec


@dataclass(slots=True)
class PaddedBatch:
    """A right-padded batch and the (row, column) of every reward read position in it."""

    ids: torch.Tensor
    mask: torch.Tensor | None  # None when no row is padded (the backbone then needs no mask)
    rows: torch.Tensor
    cols: torch.Tensor
    lengths: torch.Tensor


def pad_batch(batch: list[Encoded], pad_id: int, device: torch.device) -> PaddedBatch:
    """Right-pad encodings into one tensor; shared by scoring and end-to-end training."""
    lengths = [len(e.input_ids) for e in batch]
    width = max(lengths)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, : lengths[i]] = torch.tensor(e.input_ids, dtype=torch.long)
    mask = None
    if min(lengths) != width:
        mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).to(device)
    rows = torch.cat([torch.full((len(e.read_positions),), i, dtype=torch.long) for i, e in enumerate(batch)])
    cols = torch.cat([torch.tensor(e.read_positions, dtype=torch.long) for e in batch])
    return PaddedBatch(ids.to(device), mask, rows.to(device), cols.to(device), torch.tensor(lengths, device=device))


class TraceTooLong(ValueError):
    """The problem and response alone exceed the model's context; only thinking steps may be dropped."""


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


AGGREGATES = {
    "mean": _mean,
    "min": min,
    "last": lambda xs: xs[-1],
    "prod": lambda xs: math.prod(xs),
    "max": max,
}


def aggregate(step_rewards: Sequence[float], how: str) -> float | None:
    """Reduce step rewards to one number by a named rule; None when there are no steps."""
    if not step_rewards:
        return None
    return float(AGGREGATES[how](step_rewards))


class TransformerPRM:
    """Base class of all formats. Subclasses set ``format`` and implement the three hooks.

    Attributes: ``backbone`` (a transformers base model), ``tokenizer``, ``device``, ``dtype``,
    ``max_length`` (context budget in tokens), ``name`` (reported in score records), ``aggregate``
    (default rule turning step rewards into ``score``), ``alpha`` (weight of the trajectory reward).
    """

    format: str = ""
    default_aggregate: str = "mean"
    reports_thinking_separately: bool = True

    def __init__(self, backbone: torch.nn.Module, tokenizer: Any, *, name: str, device: torch.device,
                 dtype: torch.dtype, max_length: int, aggregate: str | None = None, alpha: float = 1.0):
        self.backbone = backbone.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.dtype = dtype
        self.max_length = max_length
        self.aggregate = aggregate or self.default_aggregate
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.aggregate!r}; choose from {sorted(AGGREGATES)}")
        self.alpha = alpha

    # ---- hooks -------------------------------------------------------------------------------
    def encode_ids(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """Token ids for (problem, steps) and one read position per step."""
        raise NotImplementedError

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Step rewards in [0, 1] from hidden states gathered at the read positions, shape (n, h) → (n,)."""
        raise NotImplementedError

    def trajectory(self, hidden_last: torch.Tensor) -> torch.Tensor | None:
        """Trajectory rewards from the last token's hidden state, (b, h) → (b,); None if no such head."""
        return None

    def features(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Per-token features the heads read: the backbone's last (post-norm) hidden state by default."""
        return self.backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

    # ---- shared machinery --------------------------------------------------------------------
    def offsets_to_positions(self, text: str, read_chars: list[int], add_special_tokens: bool = False
                             ) -> tuple[list[int], list[int]]:
        """Tokenize ``text`` and map each character index in ``read_chars`` to the token covering it.

        Reading rewards by character position (rather than by searching for a token id) lets one
        mechanism serve every layout: a separator token, the last token of a step, a tag. Tokens the
        tokenizer adds itself (BOS/EOS, empty spans) are never read.
        """
        enc = self.tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        ids: list[int] = enc["input_ids"]
        spans = [(e, i) for i, (b, e) in enumerate(enc["offset_mapping"]) if e > b]
        ends = [e for e, _ in spans]
        positions = []
        for c in read_chars:
            k = min(bisect.bisect_right(ends, c), len(spans) - 1)  # first token whose end is past c
            positions.append(spans[k][1])
        return ids, positions

    def encode(self, item: PRMInput) -> Encoded:
        """Lay out a trace, dropping the earliest thinking steps until it fits ``max_length``.

        The problem and the response are never cut: they are what the reward is about. Per-step
        token spans from the first encoding give the number of steps to drop, then the trace is
        encoded once more exactly (a second pass only happens for traces that do not fit).
        """
        thinking, response = item.thinking_steps, item.response_steps
        drop = 0
        while True:
            kept = thinking[drop:]
            ids, positions = self.encode_ids(item.problem, kept + response)
            if len(ids) <= self.max_length:
                return Encoded(ids, positions, num_thinking=len(kept), dropped_thinking=drop)
            if drop >= len(thinking):
                raise TraceTooLong(
                    f"the problem and response alone take {len(ids)} tokens, more than the model's "
                    f"context of {self.max_length}; raise --max-length or use --long windows")
            excess = len(ids) - self.max_length
            freed, extra = 0, 0
            prev = 0
            for k in range(len(kept)):  # steps are contiguous: step k spans (pos[k-1], pos[k]]
                freed += positions[k] - prev
                prev = positions[k]
                extra += 1
                if freed >= excess:
                    break
            drop += max(extra, 1)
            drop = min(drop, len(thinking))

    @torch.inference_mode()
    def forward(self, batch: list[Encoded]) -> list[ItemOutput]:
        """One padded forward over ``batch`` (right padding, so read positions stay valid)."""
        p = pad_batch(batch, self.pad_token_id, self.device)
        hidden = self.features(p.ids, p.mask)
        step = self.head(hidden[p.rows, p.cols].float()).float().cpu().tolist()
        last = hidden[torch.arange(len(batch), device=self.device), p.lengths - 1].float()
        traj = self.trajectory(last)
        traj_list = traj.float().cpu().tolist() if traj is not None else [None] * len(batch)
        outputs, start = [], 0
        for i, e in enumerate(batch):
            n = len(e.read_positions)
            outputs.append(ItemOutput(step[start:start + n], traj_list[i]))
            start += n
        return outputs

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        if tok.pad_token_id is not None:
            return int(tok.pad_token_id)
        return int(tok.eos_token_id or 0)

    def to_score(self, trace_id: str, enc: Encoded, out: ItemOutput, num_steps: int,
                 extra: dict[str, Any] | None = None) -> TraceScore:
        """Assemble the score record: split thinking/response rewards, aggregate, add α·trajectory."""
        steps = out.step_rewards
        k = enc.num_thinking
        has_thinking = k > 0 or enc.dropped_thinking > 0
        score = aggregate(steps, self.aggregate)
        if out.trajectory_reward is not None:
            score = (score or 0.0) + self.alpha * out.trajectory_reward
        return TraceScore(
            id=trace_id, score=score, step_rewards=steps,
            thinking_step_rewards=steps[:k] if has_thinking and self.reports_thinking_separately else None,
            response_step_rewards=steps[k:] if has_thinking and self.reports_thinking_separately else None,
            trajectory_reward=out.trajectory_reward, num_steps=num_steps,
            truncated=enc.dropped_thinking > 0, model=self.name, dropped_steps=enc.dropped_thinking,
            num_tokens=len(enc.input_ids), extra=extra or {})

    def score(self, traces: Any, **options: Any) -> list[TraceScore]:
        """Score traces (``Trace`` objects, dicts in any supported record shape, or ``PRMInput``).

        A convenience over :func:`fluxprm.engine.score_traces` that returns a list; for files and
        streams use the engine directly. Options are those of :class:`fluxprm.engine.ScoreOptions`.
        """
        from fluxprm.engine import ScoreOptions, score_traces

        return list(score_traces(self, traces, ScoreOptions(**options)))
