"""What the page shows: scores joined to their traces and labels, cut into the steps the rewards belong to.

Each score record becomes one *entry*: a small index row (id, score, correctness, source model, step rewards,
flags) that the list renders at once, and a *detail* (problem, step texts, teacher components) that the page
parses only when the trace is opened. Details are written to a spool file as they are built, so memory stays
bounded by one trace whatever the size of the inputs; :mod:`fluxprm.view.page` reads them back when it writes
the page (shortening them if the page would be too large).

Which text belongs to which reward:

1. the score's character spans (``fluxprm score --spans``), checked against the trace's text: ``text[a:b]``
   is the step;
2. else the trace cut again with ``prepare(trace, StepConfig)`` — the options must be the scoring run's; the
   step counts are checked against the score's (dropped thinking steps included);
3. else (counts disagree, no steps) the text is shown whole, uncoloured, with a note saying why — a wrong
   colour on a step would be worse than none.

Without traces, a label record's own ``thinking_steps`` / ``response_steps`` serve as the texts when their
counts agree with the score's. The join is by ``(source, line, candidate)`` (:func:`fluxprm.scores.join_key`),
falling back to the file's base name when the paths were spelled differently (``data/x.jsonl`` vs
``/abs/data/x.jsonl``); a trace whose id disagrees with its score's is not joined.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Sequence

import orjson

from fluxprm.records import BadRecord, iter_records
from fluxprm.scores import TraceScore, join_key, read_scores, trace_key
from fluxprm.steps import NoSteps, StepConfig, prepare
from fluxprm.traces import FieldMap, Trace, iter_traces

__all__ = ["Collected", "Note", "collect", "encode_json"]

Key = tuple[str, int, "int | None"]

MAX_EXAMPLES = 20  # keys or ids listed per note, in the page and on stderr
PREVIEW_CHARS = 600  # problem text kept in the index for the list and its search
META_VALUE_CHARS = 300  # record fields longer than this are not shown in the "record fields" box
_TEACHER_COMPONENTS = ("alignment", "quality", "coherence")


@dataclass
class Note:
    """Something the reader must know about the page: what is missing, shortened or shown uncoloured, and why."""

    text: str
    examples: list[str] = field(default_factory=list)
    count: int = 0
    level: str = "warning"  # "warning" | "info"

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "examples": self.examples, "count": self.count, "level": self.level}

    def line(self) -> str:
        """One line for stderr: the text and the first few examples."""
        shown = ", ".join(self.examples[:5])
        more = f" (+{self.count - 5} more)" if self.count > 5 else ""
        return f"{self.text}: {shown}{more}" if shown else self.text


@dataclass
class Collected:
    """Every entry of the page: index rows in score-file order, and their details in a spool file."""

    rows: list[dict[str, Any]]
    spool: IO[bytes]
    spans: dict[int, tuple[int, int]]  # row position → (offset, length) of its detail JSON in the spool
    notes: list[Note]
    reward_range: tuple[float, float] | None  # 5th and 95th percentile of every step reward (the "page" scale)
    unreadable_scores: int = 0  # lines of the scores file that are not score records

    def detail(self, position: int) -> bytes | None:
        where = self.spans.get(position)
        if where is None:
            return None
        self.spool.seek(where[0])
        return self.spool.read(where[1])

    def close(self) -> None:
        self.spool.close()


def encode_json(value: Any) -> bytes:
    """JSON that is safe inside ``<script type="application/json">``: no ``<`` at all (so no ``</script>`` and
    no ``<!--``), and lone surrogates (possible in any text read from JSON) escaped rather than fatal."""
    try:
        data = orjson.dumps(value)
    except TypeError:  # a lone surrogate: orjson refuses it, the standard library escapes it as \udXXX
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")
    return data.replace(b"<", b"\\u003c")


# ----------------------------------------------------------------------------- joining


class _KeyIndex:
    """Positions by join key, with a fallback on the file's base name when the same files were named by
    different paths in the two runs (ambiguous base names do not match)."""

    def __init__(self) -> None:
        self.exact: dict[Key, int] = {}
        self.loose: dict[Key, int] = {}
        self.paths_by_name: dict[str, set[str]] = {}

    def add(self, key: Key, position: int) -> bool:
        """Index ``position`` under ``key``; False when the key is already taken (a duplicate)."""
        if key in self.exact:
            return False
        self.exact[key] = position
        name = os.path.basename(key[0])
        self.paths_by_name.setdefault(name, set()).add(key[0])
        self.loose.setdefault((name, key[1], key[2]), position)
        return True

    def find(self, key: Key) -> int | None:
        if key in self.exact:
            return self.exact[key]
        name = os.path.basename(key[0])
        if len(self.paths_by_name.get(name, ())) == 1:
            return self.loose.get((name, key[1], key[2]))
        return None


def _describe(source: str, line: int, candidate: int | None, id_: str | None = None) -> str:
    where = f"{source}:{line}" + (f"#{candidate}" if candidate is not None else "")
    return f"{id_} ({where})" if id_ is not None else where


def _label_key(data: dict[str, Any], seen: Counter) -> Key | None:
    """A label record's join key. Label records carry no candidate index: the k-th record of the same
    ``(source, line)`` is candidate k (``fluxprm label`` writes a pool's candidates in order)."""
    source, line = data.get("source"), data.get("line")
    if not isinstance(source, str) or isinstance(line, bool) or not isinstance(line, int):
        return None
    base = join_key(source, line)
    candidate = data.get("candidate")
    if not (isinstance(candidate, int) and not isinstance(candidate, bool)):
        candidate = seen[base]
    seen[base] += 1
    return (base[0], base[1], candidate)


# ----------------------------------------------------------------------------- collecting


def collect(scores_path: str, traces: Sequence[str] = (), labels: str | None = None,
            steps: StepConfig = StepConfig(), fields: FieldMap | None = None) -> Collected:
    """Join a scores file to its traces and labels and build every entry (see the module docstring).

    Raises ``FileNotFoundError`` for a missing file; everything record-level (unreadable lines, missing
    matches, segmentation that disagrees) becomes a :class:`Note`.
    """
    notes: list[Note] = []
    scores, bad_scores = _read_scores(scores_path)
    if bad_scores:
        notes.append(Note(f"{len(bad_scores):,} line(s) of {scores_path} are not score records and are left out",
                          [f"{b.source}:{b.line}: {b.error}" for b in bad_scores[:MAX_EXAMPLES]], len(bad_scores)))
    if not scores:
        notes.append(Note(f"{scores_path} holds no score records: the page is empty"))
    index = _KeyIndex()
    duplicates = [s for pos, s in enumerate(scores) if not index.add(s.key, pos)]
    if duplicates:
        notes.append(Note(f"{len(duplicates):,} score record(s) repeat an earlier record's (source, line): only the "
                          "first of each is joined to its trace",
                          [_describe(s.source, s.line, s.candidate, s.id) for s in duplicates[:MAX_EXAMPLES]],
                          len(duplicates)))
    label_by_pos = _read_labels(labels, index, scores, notes) if labels else {}
    builder = _Builder(scores, label_by_pos, steps)
    if traces:
        _join_traces(traces, fields, index, scores, builder, notes)
    for pos in range(len(scores)):
        if pos not in builder.done:
            builder.add(pos, None)
    if builder.unsegmented:
        notes.append(Note(
            f"{len(builder.unsegmented):,} trace(s) are shown unsegmented and uncoloured: their text does not split "
            "into the scored steps (pass the segmentation options the scores were made with, or score with --spans)",
            builder.unsegmented[:MAX_EXAMPLES], len(builder.unsegmented)))
    if builder.label_mismatch:
        notes.append(Note(f"{len(builder.label_mismatch):,} label record(s) were segmented into a different number of "
                          "thinking steps than the scores: their components are listed apart from the steps",
                          builder.label_mismatch[:MAX_EXAMPLES], len(builder.label_mismatch), level="info"))
    rows = [builder.rows[pos] for pos in range(len(scores))]
    builder.spool.flush()
    return Collected(rows, builder.spool, builder.spans, notes, _percentiles(rows), len(bad_scores))


def _read_scores(path: str) -> tuple[list[TraceScore], list[BadRecord]]:
    scores: list[TraceScore] = []
    bad: list[BadRecord] = []
    for rec in read_scores([path]):
        (bad if isinstance(rec, BadRecord) else scores).append(rec)  # type: ignore[arg-type]
    return scores, bad


def _read_labels(path: str, index: _KeyIndex, scores: list[TraceScore], notes: list[Note]) -> dict[int, dict]:
    """Label records by the position of their score; what matches no score is noted."""
    by_pos: dict[int, dict] = {}
    seen: Counter = Counter()
    unmatched: list[str] = []
    unreadable: list[str] = []
    for rec in iter_records([path]):
        if isinstance(rec, BadRecord) or not isinstance(rec.data, dict):
            unreadable.append(f"{rec.source}:{rec.line}")
            continue
        key = _label_key(rec.data, seen)
        pos = None if key is None else index.find(key)
        if pos is None and key is not None and key[2] == 0:  # not a pool: the score has no candidate index
            pos = index.find((key[0], key[1], None))
        if pos is None or pos in by_pos:
            unmatched.append(_describe(rec.source, rec.line, None, str(rec.data.get("id"))))
            continue
        by_pos[pos] = rec.data
    if unreadable:
        notes.append(Note(f"{len(unreadable):,} line(s) of {path} are not label records", unreadable[:MAX_EXAMPLES],
                          len(unreadable)))
    if unmatched:
        notes.append(Note(f"{len(unmatched):,} label record(s) in {path} match no score record (by source and line)",
                          unmatched[:MAX_EXAMPLES], len(unmatched)))
    missing = [_describe(s.source, s.line, s.candidate, s.id) for pos, s in enumerate(scores) if pos not in by_pos]
    if missing:
        notes.append(Note(f"{len(missing):,} score record(s) have no label record in {path}", missing[:MAX_EXAMPLES],
                          len(missing), level="info"))
    return by_pos


def _join_traces(paths: Sequence[str], fields: FieldMap | None, index: _KeyIndex, scores: list[TraceScore],
                 builder: "_Builder", notes: list[Note]) -> None:
    unscored: list[str] = []
    unreadable: list[str] = []
    wrong_id: list[str] = []
    for trace in iter_traces(list(paths), fields):
        if isinstance(trace, BadRecord):
            unreadable.append(f"{trace.source}:{trace.line}: {trace.error}")
            continue
        key = trace_key(trace)
        pos = index.find(key)
        if pos is None or pos in builder.done:
            unscored.append(_describe(trace.source, trace.line, key[2], trace.id))
            continue
        if scores[pos].id != trace.id:
            wrong_id.append(f"score {scores[pos].id!r} vs trace {trace.id!r} at {_describe(*key)}")
            continue
        builder.add(pos, trace)
    missing = [_describe(s.source, s.line, s.candidate, s.id) for pos, s in enumerate(scores) if pos not in builder.done]
    if wrong_id:
        notes.append(Note(f"{len(wrong_id):,} score record(s) sit at the place of a trace with another id: the scores "
                          "file does not belong to these traces there, so their texts are not shown",
                          wrong_id[:MAX_EXAMPLES], len(wrong_id)))
    if missing:
        notes.append(Note(f"{len(missing):,} score record(s) have no trace in --traces (shown without text)",
                          missing[:MAX_EXAMPLES], len(missing)))
    if unscored:
        notes.append(Note(f"{len(unscored):,} trace(s) in --traces have no score record (rejected when scoring, or "
                          "scored into another file)", unscored[:MAX_EXAMPLES], len(unscored), level="info"))
    if unreadable:
        notes.append(Note(f"{len(unreadable):,} record(s) of --traces could not be read as traces",
                          unreadable[:MAX_EXAMPLES], len(unreadable), level="info"))


# ----------------------------------------------------------------------------- one entry


def _r(x: float | None, digits: int = 4) -> float | None:
    """Rounded for the page (4 decimals is finer than any colour); None for a missing or non-finite value."""
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _valid_spans(spans: list[tuple[int, int]], length: int) -> bool:
    end = 0
    for a, b in spans:
        if not (end <= a <= b <= length):
            return False
        end = b
    return True


class _Builder:
    """Builds each score's index row and detail; details go to the spool as soon as they are made."""

    def __init__(self, scores: list[TraceScore], labels: dict[int, dict], steps: StepConfig) -> None:
        self.scores, self.labels, self.steps = scores, labels, steps
        self.rows: dict[int, dict[str, Any]] = {}
        self.done: set[int] = set()
        self.spool = tempfile.TemporaryFile(prefix="fluxprm-view-")
        self.spans: dict[int, tuple[int, int]] = {}
        self.unsegmented: list[str] = []
        self.label_mismatch: list[str] = []

    def add(self, pos: int, trace: Trace | None) -> None:
        score, label = self.scores[pos], self.labels.get(pos)
        self.done.add(pos)
        detail: dict[str, Any] = {}
        problem = ""
        mode = "none"
        if trace is not None:
            problem = trace.problem
            mode = self._trace_parts(trace, score, detail)
            detail["meta"] = _meta(trace)
            if trace.gold is not None:
                detail["gold"] = _short(trace.gold)
        elif label is not None:
            problem = str(label.get("problem") or "")
            mode = self._label_parts(label, score, detail)
        if problem:
            detail["problem"] = problem
        if label is not None:
            detail["labels"] = self._teacher(label, score, pos)
        if mode == "unsegmented":
            self.unsegmented.append(_describe(score.source, score.line, score.candidate, score.id))
        self.rows[pos] = self._row(score, trace, label, problem, mode)
        if detail:
            data = encode_json(detail)
            self.spool.seek(0, os.SEEK_END)
            self.spans[pos] = (self.spool.tell(), len(data))
            self.spool.write(data)

    # -- step texts

    def _trace_parts(self, trace: Trace, score: TraceScore, detail: dict[str, Any]) -> str:
        thinking, response = trace.thinking or "", trace.response or ""
        n_think, n_resp = len(score.thinking_step_rewards), len(score.response_step_rewards)
        dropped = score.dropped_steps if score.truncated else 0
        ts, rs = score.thinking_step_spans, score.response_step_spans
        if (ts is not None and rs is not None and len(ts) == n_think and len(rs) == n_resp
                and _valid_spans(ts, len(thinking)) and _valid_spans(rs, len(response))):
            detail["thinking"] = _part([thinking[a:b] for a, b in ts],
                                       (thinking[: ts[0][0]] if ts else thinking).strip() if dropped else None, dropped)
            detail["response"] = _part([response[a:b] for a, b in rs])
            return "spans"
        try:
            inp = prepare(trace, self.steps)
        except NoSteps:
            inp = None
        if inp is not None and len(inp.thinking_steps) == dropped + n_think and len(inp.response_steps) == n_resp:
            gone = None
            if dropped:
                sp = inp.thinking_spans
                gone = thinking[sp[0][0]: sp[dropped - 1][1]] if sp else "\n\n".join(inp.thinking_steps[:dropped])
            detail["thinking"] = _part(inp.thinking_steps[dropped:], gone, dropped)
            detail["response"] = _part(inp.response_steps)
            return "segmented"
        found = "no steps" if inp is None else f"{len(inp.thinking_steps)} thinking + {len(inp.response_steps)} response"
        detail["note"] = (f"Shown unsegmented: with these segmentation options the trace splits into {found} steps, "
                          f"but the score has {dropped + n_think} thinking + {n_resp} response steps. Pass the "
                          "options used when scoring (--separator, --min-chars, --max-thinking-steps, "
                          "--max-response-steps), or score with --spans.")
        detail["thinking"] = {"text": thinking} if thinking else None
        detail["response"] = {"text": response} if response else None
        return "unsegmented"

    def _label_parts(self, label: dict[str, Any], score: TraceScore, detail: dict[str, Any]) -> str:
        thinking = [s for s in label.get("thinking_steps") or [] if isinstance(s, str)]
        response = [s for s in label.get("response_steps") or [] if isinstance(s, str)]
        if not thinking and not response:
            return "none"
        dropped = score.dropped_steps if score.truncated else 0
        if len(thinking) == dropped + len(score.thinking_step_rewards) and len(response) == len(score.response_step_rewards):
            detail["thinking"] = _part(thinking[dropped:], "\n\n".join(thinking[:dropped]) if dropped else None, dropped)
            detail["response"] = _part(response)
            return "labels"
        detail["note"] = (f"Shown unsegmented: the label record has {len(thinking)} thinking + {len(response)} "
                          f"response steps, the score {dropped + len(score.thinking_step_rewards)} + "
                          f"{len(score.response_step_rewards)}. Pass --traces to cut the trace as it was scored.")
        detail["thinking"] = {"text": "\n\n".join(thinking)} if thinking else None
        detail["response"] = {"text": "\n\n".join(response)} if response else None
        return "unsegmented"

    # -- teacher rewards

    def _teacher(self, label: dict[str, Any], score: TraceScore, pos: int) -> dict[str, Any]:
        comps = label.get("components") if isinstance(label.get("components"), dict) else {}
        n_label = len(label.get("thinking_steps") or []) or max((len(comps.get(c) or []) for c in _TEACHER_COMPONENTS),
                                                                default=0)
        dropped = score.dropped_steps if score.truncated else 0
        aligned = n_label == dropped + len(score.thinking_step_rewards)
        if not aligned and n_label:
            self.label_mismatch.append(f"{_describe(score.source, score.line, score.candidate, score.id)}: "
                                       f"{n_label} vs {dropped + len(score.thinking_step_rewards)}")
        teacher = {c: _floats(comps.get(c), n_label) for c in _TEACHER_COMPONENTS}
        teacher["reward"] = _floats(label.get("step_rewards"), n_label)
        return {**teacher, "n": n_label, "offset": dropped, "aligned": aligned,
                "trajectory_reward": _r(_number(label.get("trajectory_reward"))),
                "rollouts": label.get("rollouts") if isinstance(label.get("rollouts"), dict) else None,
                "notes": [str(n) for n in label.get("notes") or []][:10]}

    # -- the index row

    def _row(self, score: TraceScore, trace: Trace | None, label: dict | None, problem: str, mode: str) -> dict:
        correct = score.extra.get("correct")
        if not isinstance(correct, bool):
            correct = trace.correct if trace is not None else None
        if not isinstance(correct, bool) and label is not None and isinstance(label.get("correct"), bool):
            correct = label["correct"]
        source_model = trace.meta.get("model") if trace is not None else None
        rewards = [_r(x) for x in score.step_rewards]
        row: dict[str, Any] = {
            "id": score.id, "score": _r(score.score), "correct": correct,
            "model": source_model if isinstance(source_model, str) and source_model else None,
            "prm": score.model, "n": score.num_steps, "nt": len(score.thinking_step_rewards), "r": rewards,
            "traj": _r(score.trajectory_reward), "src": f"{score.source}:{score.line}", "text": mode,
            "p": problem[:PREVIEW_CHARS],
        }
        if score.candidate is not None:
            row["cand"] = score.candidate
        if score.truncated:
            row["dropped"] = score.dropped_steps
            row["truncated"] = True
        for key in ("windows", "clipped", "group"):
            if key in score.extra:
                row[key] = score.extra[key]
        if label is not None:
            row["label"] = _r(_number(label.get("trajectory_reward")))
            row["labelled"] = True
        return row


def _part(steps: list[str], dropped: str | None = None, n_dropped: int = 0) -> dict[str, Any]:
    part: dict[str, Any] = {"steps": steps}
    if n_dropped:
        part["dropped"] = dropped or ""
        part["n_dropped"] = n_dropped
    return part


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _floats(values: Any, n: int) -> list[float | None]:
    values = values[:n] if isinstance(values, list) else []
    return [_r(_number(v)) for v in values] + [None] * (n - len(values))


def _short(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= META_VALUE_CHARS else text[:META_VALUE_CHARS] + "…"


def _meta(trace: Trace) -> dict[str, Any]:
    """The record's short scalar fields (answer, dataset, source model, ...): what one wants beside a trace."""
    shown: dict[str, Any] = {"shape": trace.format}
    for key, value in trace.meta.items():
        if value is None or isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
            shown[key] = value
        elif isinstance(value, str) and len(value) <= META_VALUE_CHARS:
            shown[key] = value
    return shown


def _percentiles(rows: Iterable[dict[str, Any]]) -> tuple[float, float] | None:
    """The 5th and 95th percentile of all step rewards: the "page" colour scale spreads them over the colours
    (fluxprm-mini's sigmoids crowd into 0.4–0.8, where a 0–1 scale shows little difference)."""
    values = sorted(x for row in rows for x in row["r"] if x is not None)
    if len(values) < 2:
        return None
    lo, hi = values[int(0.05 * (len(values) - 1))], values[int(0.95 * (len(values) - 1))]
    return (lo, hi) if hi > lo else None
