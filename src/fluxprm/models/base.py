"""The common shape of every PRM fluxprm loads: a transformer backbone plus a small reward head.

Every supported checkpoint format is "run the backbone once over problem + steps, then read a head
at a few token positions". The formats differ only in how the text is laid out, where the rewards
are read, and what the head is. So a format is a subclass that implements three small methods:

- ``encode_ids(problem, steps)`` → token ids and the positions where step rewards are read;
- ``head(hidden)`` → step rewards from the hidden states gathered at those positions;
- ``trajectory(hidden_last, signals)`` → optional trajectory reward from the last token (and, for formats
  that use them, the trace's :mod:`trajectory signals <fluxprm.signals>`, which ``trace_signals`` computes).

Everything else — truncation of long traces, batching, dtype, aggregation — lives here once.
The backbone is always the *base* model (no LM head): a 151K-vocabulary LM head over every position
would cost more than the whole 135M backbone and a PRM never needs it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fluxprm.scores import AGGREGATES, TraceScore, combine
from fluxprm.steps import PRMInput

__all__ = ["Encoded", "PaddedBatch", "pad_batch", "ItemOutput", "TraceTooLong", "TransformerPRM", "LoadRequest",
           "CheckpointFormat"]


@dataclass(slots=True)
class Encoded:
    """A trace laid out for the model: token ids, reward read positions and what truncation dropped."""

    input_ids: list[int]
    read_positions: list[int]   # one per scored step, in reading order
    num_thinking: int           # thinking steps kept (they come first among the scored steps)
    dropped_thinking: int = 0   # earliest thinking steps dropped to fit the context
    signals: list[float] | None = None  # the whole trace's trajectory signals, for models that read them


@dataclass(slots=True)
class ItemOutput:
    """What one forward pass yields for one encoded trace."""

    step_rewards: list[float]
    trajectory_reward: float | None = None


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


class TransformerPRM:
    """Base class of all formats. Subclasses set ``format`` and implement the three hooks.

    Attributes: ``backbone`` (a transformers base model), ``tokenizer``, ``device``, ``dtype``,
    ``max_length`` (context budget in tokens), ``name`` (reported in score records), ``aggregate``
    (default rule turning step rewards into ``score``), ``alpha`` (weight of the trajectory reward).
    """

    format: str = ""
    default_aggregate: str = "mean"
    trained_steps: dict[str, Any] | None = None  # segmentation a checkpoint was trained with, if it says
    weights_id: str | None = None  # what its folder held when loaded (models.identity; set by load_prm)
    error_threshold: float | None = None  # the first-error threshold its checkpoint records (fluxprm format)

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
            raise ValueError(f"unknown aggregate {self.aggregate!r}; choose from {', '.join(AGGREGATES)}")
        self.alpha = alpha

    # ---- hooks -------------------------------------------------------------------------------
    def encode_ids(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """Token ids for (problem, steps) and one read position per step."""
        raise NotImplementedError

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Step rewards in [0, 1] from hidden states gathered at the read positions, shape (n, h) → (n,)."""
        raise NotImplementedError

    def trajectory(self, hidden_last: torch.Tensor, signals: torch.Tensor | None = None) -> torch.Tensor | None:
        """Trajectory rewards from the last token's hidden state, (b, h) → (b,); None if no such head.
        ``signals`` (b, k) are the traces' trajectory signals when :meth:`trace_signals` gives any."""
        return None

    def trace_signals(self, item: PRMInput) -> list[float] | None:
        """The whole-trace signals this model's trajectory head reads beside the hidden state; None: it reads none."""
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
            if not kept and not response:
                raise TraceTooLong(
                    f"the problem and response alone leave no room for any thinking step in the model's context of "
                    f"{self.max_length} tokens, and there is no response to score; use --long windows (or auto) or "
                    "raise --max-length")
            ids, positions = self.encode_ids(item.problem, kept + response)
            if len(ids) <= self.max_length:
                return Encoded(ids, positions, num_thinking=len(kept), dropped_thinking=drop,
                               signals=self.trace_signals(item))
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
        signals = None
        if all(e.signals is not None for e in batch):
            signals = torch.tensor([e.signals for e in batch], dtype=torch.float32, device=self.device)
        traj = self.trajectory(last, signals)
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
        """Assemble the score record: split thinking/response rewards, aggregate, add α·trajectory.

        The two part lists always partition ``step_rewards`` (thinking first), so a plain answer's
        steps are response steps and a trace cut off mid-thought has no response steps.
        """
        steps = out.step_rewards
        k = enc.num_thinking
        return TraceScore(
            id=trace_id, score=combine(steps, out.trajectory_reward, self.aggregate, self.alpha), step_rewards=steps,
            thinking_step_rewards=steps[:k], response_step_rewards=steps[k:],
            trajectory_reward=out.trajectory_reward, num_steps=num_steps,
            truncated=enc.dropped_thinking > 0, model=self.name, dropped_steps=enc.dropped_thinking,
            num_tokens=len(enc.input_ids), extra=extra or {})


@dataclass(slots=True)
class LoadRequest:
    """What a checkpoint format's loader is given: the folder and the caller's resolved choices."""

    folder: Path
    name: str
    device: torch.device
    dtype: torch.dtype
    max_length: int | None
    aggregate: str | None
    alpha: float | None
    options: dict[str, Any] = field(default_factory=dict)  # format options (system_prompt, separator, ...)

    def context_length(self, config: Any) -> int:
        """The requested context, else the backbone config's ``max_position_embeddings`` (else 4096)."""
        if self.max_length:
            return int(self.max_length)
        return int(getattr(config, "max_position_embeddings", None) or 4096)

    def common(self, config: Any) -> dict[str, Any]:
        """Keyword arguments every ``TransformerPRM`` constructor takes."""
        return dict(name=self.name, device=self.device, dtype=self.dtype, max_length=self.context_length(config),
                    aggregate=self.aggregate, alpha=1.0 if self.alpha is None else self.alpha)


@dataclass(frozen=True, slots=True)
class CheckpointFormat:
    """A checkpoint format declares itself: its name, how to recognise a folder of it, and how to load it.

    ``detect(folder, config)`` gets the parsed ``config.json`` (``{}`` if absent) and answers whether the
    folder is in this format; formats are asked in registry order. ``load(request)`` builds the PRM.
    Adding a format is one module that defines a ``FORMAT`` plus one line in :mod:`fluxprm.models.formats`.
    """

    name: str
    detect: Callable[[Path, dict[str, Any]], bool]
    load: Callable[[LoadRequest], TransformerPRM]
    description: str = ""
