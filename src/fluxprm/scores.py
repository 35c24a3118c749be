"""Score records without a model: the ``TraceScore`` type, score files, joining scores to traces, aggregation.

Everything a command needs to work *on* scores — ``select``, ``bon``, ``eval``, ``view`` — lives here, and
this module imports no torch (a test checks it in a fresh interpreter), so those commands start in a
fraction of a second on a machine with only a scores file.

Score record (one JSON line per scored trace, input order; see ``docs/SCHEMAS.md``)::

    {"id", "score", "step_rewards", "thinking_step_rewards", "response_step_rewards", "trajectory_reward",
     "num_steps", "truncated", "model", ["dropped_steps"], "source", "line", [extras: "candidate",
     "group", "correct", "windows", ...], ["thinking_step_spans", "response_step_spans"]}

``thinking_step_rewards`` and ``response_step_rewards`` are always lists and always partition
``step_rewards`` (thinking first): a plain answer with no thinking has ``thinking_step_rewards == []``
(its steps are response steps); a trace cut off mid-thought has ``response_step_rewards == []``.

**Join key.** ``(source, line, candidate)`` identifies the input record a score came from even when ids
repeat or are missing: ``source`` is the input path as given, ``line`` its 1-based line (JSON array
element, Parquet row), ``candidate`` the 0-based index inside a Best-of-N pool or MATH-APS record
(absent otherwise). :func:`join_key` builds it for a score and for a ``Trace`` alike.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from fluxprm.records import BadRecord, RawRecord, iter_records

__all__ = ["TraceScore", "AGGREGATES", "aggregate", "combine", "read_scores", "join_key", "join_scores", "trace_key", "scores_in_order",
           "ScoreMismatch", "is_synthesized_id",
           "SCHEMA_KEYS"]

SCHEMA_KEYS = ("id", "score", "step_rewards", "thinking_step_rewards", "response_step_rewards",
               "trajectory_reward", "num_steps", "truncated", "model")


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": _mean,
    "min": min,
    "last": lambda xs: xs[-1],
    "prod": lambda xs: math.prod(xs),
    "max": max,
}


def aggregate(step_rewards: Sequence[float], how: str) -> float | None:
    """Reduce step rewards to one number by a named rule; None when there are no steps."""
    if how not in AGGREGATES:
        raise ValueError(f"unknown aggregate {how!r}; choose from {', '.join(AGGREGATES)}")
    if not step_rewards:
        return None
    return float(AGGREGATES[how](step_rewards))


def combine(step_rewards: Sequence[float], trajectory_reward: float | None, how: str, alpha: float) -> float | None:
    """The trace's ranking number: ``aggregate(step rewards) + α·trajectory reward`` (the paper's use-time score).

    A model without a trajectory head gives ``trajectory_reward=None`` and the score is the aggregate.
    """
    score = aggregate(step_rewards, how)
    if trajectory_reward is not None:
        score = (score or 0.0) + alpha * trajectory_reward
    return score


def join_key(source: str, line: int, candidate: int | None = None) -> tuple[str, int, int | None]:
    """The key that matches a score record to its input record (see the module docstring).

    Paths are compared resolved (``../x.jsonl`` and ``/abs/x.jsonl`` name one file) from the current folder.
    """
    return (_resolved(source, os.getcwd()) if source else source, int(line), candidate)


@functools.lru_cache(maxsize=1024)
def _resolved(path: str, cwd: str) -> str:
    """``path`` resolved from ``cwd`` (part of the cache key: a relative path names another file elsewhere)."""
    return path if path.startswith("<") else os.path.realpath(os.path.join(cwd, path))


@dataclass(slots=True)
class TraceScore:
    """The score record, one per trace (schema in the module docstring and ``docs/SCHEMAS.md``)."""

    id: str
    score: float | None
    step_rewards: list[float]
    thinking_step_rewards: list[float]
    response_step_rewards: list[float]
    trajectory_reward: float | None
    num_steps: int
    truncated: bool
    model: str
    dropped_steps: int = 0
    num_tokens: int = 0
    source: str = ""
    line: int = 0
    thinking_step_spans: list[tuple[int, int]] | None = None
    response_step_spans: list[tuple[int, int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def candidate(self) -> int | None:
        value = self.extra.get("candidate")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def key(self) -> tuple[str, int, int | None]:
        return join_key(self.source, self.line, self.candidate)

    def rescored(self, how: str, alpha: float) -> float | None:
        """This trace's score under another aggregation rule or trajectory weight (no model needed)."""
        return combine(self.step_rewards, self.trajectory_reward, how, alpha)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON record: schema keys first, then the join key, extras and (on request) spans."""
        rec: dict[str, Any] = {
            "id": self.id, "score": self.score, "step_rewards": self.step_rewards,
            "thinking_step_rewards": self.thinking_step_rewards,
            "response_step_rewards": self.response_step_rewards,
            "trajectory_reward": self.trajectory_reward, "num_steps": self.num_steps,
            "truncated": self.truncated, "model": self.model,
        }
        if self.truncated:
            rec["dropped_steps"] = self.dropped_steps
        rec["source"] = self.source
        rec["line"] = self.line
        rec.update(self.extra)
        if self.thinking_step_spans is not None or self.response_step_spans is not None:
            rec["thinking_step_spans"] = [list(s) for s in self.thinking_step_spans or []]
            rec["response_step_spans"] = [list(s) for s in self.response_step_spans or []]
        return rec

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TraceScore":
        """Read a score record back; unknown keys land in ``extra``. Raises ``ValueError`` naming a bad field."""
        missing = [k for k in ("id", "score", "step_rewards") if k not in data]
        if missing:
            raise ValueError(f"not a score record: field(s) {', '.join(repr(k) for k in missing)} missing")
        steps = _floats("step_rewards", data["step_rewards"])
        thinking = data.get("thinking_step_rewards")
        response = data.get("response_step_rewards")
        # Files written before the part lists were always lists: a null pair means "all response steps".
        thinking = [] if thinking is None else _floats("thinking_step_rewards", thinking)
        response = steps[len(thinking):] if response is None else _floats("response_step_rewards", response)
        score = data["score"]
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise ValueError(f"field 'score' must be a number or null, got {type(score).__name__}")
        known = set(SCHEMA_KEYS) | {"dropped_steps", "source", "line", "thinking_step_spans", "response_step_spans"}
        return cls(
            id=str(data["id"]), score=None if score is None else float(score), step_rewards=steps,
            thinking_step_rewards=thinking, response_step_rewards=response,
            trajectory_reward=data.get("trajectory_reward"), num_steps=int(data.get("num_steps", len(steps))),
            truncated=bool(data.get("truncated", False)), model=str(data.get("model", "")),
            dropped_steps=int(data.get("dropped_steps", 0)), source=str(data.get("source", "")),
            line=int(data.get("line", 0)),
            thinking_step_spans=_spans(data.get("thinking_step_spans")),
            response_step_spans=_spans(data.get("response_step_spans")),
            extra={k: v for k, v in data.items() if k not in known})


def _floats(name: str, value: Any) -> list[float]:
    if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise ValueError(f"field '{name}' must be a list of numbers")
    return [float(x) for x in value]


def _spans(value: Any) -> list[tuple[int, int]] | None:
    if value is None:
        return None
    return [(int(a), int(b)) for a, b in value]


def read_scores(paths: Iterable[str | os.PathLike]) -> Iterator[TraceScore | BadRecord]:
    """Stream score records from files written by ``fluxprm score``; a malformed line becomes a ``BadRecord``."""
    for rec in iter_records(paths):
        if isinstance(rec, BadRecord):
            yield rec
            continue
        try:
            yield TraceScore.from_json(rec.data)
        except (ValueError, TypeError) as exc:
            yield BadRecord(rec.source, rec.line, str(exc), _peek_id(rec))


def _peek_id(rec: RawRecord) -> str | None:
    value = rec.data.get("id") if isinstance(rec.data, dict) else None
    return None if value is None else str(value)


def join_scores(scores: Iterable[TraceScore], traces: Iterable[Any], ordered: bool = False
                ) -> Iterator[tuple[Any, TraceScore | None]]:
    """Pair each trace (anything with ``source``, ``line`` and ``meta``) with its score by :func:`join_key`.

    A trace with no score (rejected when scoring) is paired with ``None``. By default the scores are
    indexed in memory (a few hundred bytes each). With ``ordered=True`` — the scores are in the traces'
    order, as ``fluxprm score`` writes them (check a file with :func:`scores_in_order`) — the join streams
    in lockstep with memory bounded by one record, and raises ``ValueError`` if the order is broken.
    """
    if not ordered:
        index = {s.key: s for s in scores}
        for trace in traces:
            score = index.get(trace_key(trace))
            if score is not None and not isinstance(trace, BadRecord):
                _check_same_record(trace, score)
            yield trace, score
        return
    score_iter = iter(scores)
    pending = next(score_iter, None)
    for trace in traces:
        key = trace_key(trace)
        if pending is not None and pending.key == key:
            if not isinstance(trace, BadRecord):
                _check_same_record(trace, pending)
            yield trace, pending
            previous, pending = pending, next(score_iter, None)
            if pending is not None and not _after(pending.key, previous.key, same_file_only=False):
                raise ValueError(f"scores are not in input order: {pending.source}:{pending.line} comes after "
                                 f"{previous.source}:{previous.line}")
        elif pending is not None and _after(key, pending.key):
            raise ValueError(f"the score of {pending.source}:{pending.line} matches no input record: "
                             "are these the scores of these inputs?")
        else:
            yield trace, None  # rejected when scoring: no score in its place


class ScoreMismatch(ValueError):
    """A score sits at the place (source, line) of an input record with another id: the input was edited
    (a record inserted, removed or reordered) after it was scored, or the scores belong to other inputs."""


def _check_same_record(trace: Any, score: TraceScore) -> None:
    """Raise :class:`ScoreMismatch` when the record's own id and the score's id differ.

    The join key is a position, so a record inserted into the input after scoring would silently shift
    every later score onto the wrong trace; the ids catch it. Ids fluxprm made up for id-less records
    (``"<file name>:<line>"``, see :func:`synthesized_id`) name a position, not a record, so they are not
    compared: there is nothing to compare an id-less record by.
    """
    if trace.id == score.id or is_synthesized_id(trace.id) or is_synthesized_id(score.id):
        return
    where = f"{trace.source}:{trace.line}" + (f" candidate {score.candidate}" if score.candidate is not None else "")
    raise ScoreMismatch(f"the score for {where} has id {score.id!r} but the input record there has id {trace.id!r}: "
                        "was the input edited after scoring, or are these another input's scores? "
                        "Score the input again (or check --id-field is the same as when scoring)")


_SYNTHESIZED = re.compile(r"[^/\\]*:[0-9]+(#[0-9]+)*")


def is_synthesized_id(value: str) -> bool:
    """Whether ``value`` has the shape of an id fluxprm gives an id-less record: ``"<file name>:<line>"``,
    with ``"#<k>"`` per candidate level (``pool.jsonl:12#3``)."""
    return _SYNTHESIZED.fullmatch(value) is not None


def scores_in_order(paths: Iterable[str | os.PathLike], inputs: Sequence[str | os.PathLike] | None = None) -> bool:
    """Whether a score file's records are in input order (one streaming pass over their keys).

    Lines must rise within each file. Given ``inputs``, the files must also come in the inputs' order, each
    once, and be inputs: :func:`join_scores` can stream only then. A score file of more files than the inputs
    (a whole pool scored once, then one part selected) or of the same files in another order is not in order,
    and is joined through the index instead.
    """
    rank: dict[str, int] | None = None
    if inputs is not None:
        resolved = [join_key(str(p), 0)[0] for p in inputs]
        if len(set(resolved)) != len(resolved):
            return False
        rank = {path: i for i, path in enumerate(resolved)}
    previous = None
    for rec in read_scores(paths):
        if isinstance(rec, BadRecord):
            continue
        key = rec.key
        if rank is not None and key[0] not in rank:
            return False
        if previous is not None:
            if rank is not None and key[0] != previous[0]:
                if rank[key[0]] < rank[previous[0]]:
                    return False
            elif not _after(key, previous, same_file_only=False):
                return False
        previous = key
    return True


def trace_key(trace: Any) -> tuple[str, int, int | None]:
    """The join key of a trace (its source, line and candidate index)."""
    meta = getattr(trace, "meta", None) or {}
    candidate = meta.get("candidate")
    return join_key(trace.source, trace.line, candidate if isinstance(candidate, int) else None)


def _after(a: tuple[str, int, int | None], b: tuple[str, int, int | None], same_file_only: bool = True) -> bool:
    """Whether key ``a`` comes after key ``b``: later in the same file, or (``same_file_only=False``) in another file."""
    if a[0] != b[0]:
        return not same_file_only
    return (a[1], -1 if a[2] is None else a[2]) > (b[1], -1 if b[2] is None else b[2])
