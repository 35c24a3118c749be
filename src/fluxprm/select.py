"""``fluxprm select``: keep the best-scored traces of a pool as distillation data, and write them SFT-ready.

The paper's first offline use of a PRM: score the traces a teacher wrote, keep the best, fine-tune a student on
them. This module ranks scored traces (:mod:`fluxprm.scored` supplies them from a scores file, a model run now,
or a record field), keeps the top ``k`` / top fraction overall or the best ``k`` per problem, drops traces that
repeat a better one word for word, and writes three things: the selected input records unchanged plus a
``"fluxprm"`` key with their scores, a chat-``messages`` file for SFT (TRL's ``SFTTrainer``, LLaMA-Factory), and
a report (counts, score histograms by source model, correctness against random and ideal selections).

**Streaming, memory bounded by k.** A selection keeps a min-heap of the ``k`` best ``(score, order)`` entries
(a few hundred bytes each, never the records); ``--per-problem`` keeps one such heap per problem, so memory is
bounded by ``k × number of problems``. The input is read in passes, each streaming:

1. (``top_fraction`` only) count the scored traces — overall, or per problem — to turn the fraction into ``k``;
2. the heap pass: every trace offered to its heap; unreadable and unscored records go to the errors file;
3. the output pass: the input is read again and the selected traces (known by their ``(source, line,
   candidate)`` join key) are written, in input order; the report's counts, histograms and correctness
   tallies are accumulated on the way (fixed-size counters; per problem with ``--per-problem``).

**Ties and order.** Traces rank by score, higher first; equal scores rank by input order, the earlier trace
first (also for which duplicate is kept). ``k = ceil(F · n)`` for a fraction ``F`` of ``n`` scored traces. The
outputs list the selected traces in *input* order, not score order; ``fluxprm.rank`` gives the score order.

**Duplicates** (on by default): two traces of the same problem whose thinking and response are equal after
collapsing whitespace are one response; only the better-ranked one can be selected. Only the selected
traces' 8-byte digests are kept (bounded by ``k``): a worse duplicate of a kept trace is refused, a better one
replaces it in place. That is exact — every trace outside the heap already ranks below everything in it.

**Problems** are told apart by a problem id and the normalised problem text (whitespace collapsed, lowercased)
together: the id is the record's ``problem_id`` / ``question_id`` / ``unique_id`` / ``idx`` field (the first
present; ``problem_id_field`` names another), else a pool's record id; without an id the text alone decides.
Using both keeps apart problems that share an index across benchmarks (the Sky-T1 pools number each benchmark's
problems from 0) and never splits one problem's candidates. ``id`` itself is not used: it is often per response.

No torch here: selecting from a scores file starts at once; only scoring with ``source.model`` loads a model,
inside :mod:`fluxprm.scored`.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import orjson

from fluxprm.figures import pyplot, save_figure
from fluxprm.jobs import (CauseCounter, ErrorCause, check_folder_outputs, check_inputs, check_option_file,
                          check_outputs)
from fluxprm.outputs import default_errors_path
from fluxprm.records import BadRecord, RawRecord, iter_records, json_text
from fluxprm.scored import ScoreSource, field_score_problem, scored_traces, unmatched_source_hint
from fluxprm.scores import AGGREGATES, TraceScore, aggregate, trace_key
from fluxprm.traces import RESPONSE_FIELDS, FieldMap, Trace

__all__ = ["SelectOptions", "SelectCounts", "SelectResult", "SelectFailure", "run_select", "normalise_problem",
           "problem_key", "response_digest", "candidate_record", "sft_messages", "assistant_text",
           "PROBLEM_ID_FIELDS"]

PROBLEM_ID_FIELDS = ("problem_id", "question_id", "unique_id", "idx")
OUTPUT_FORMATS = ("jsonl", "parquet")
REPORT_FILES = ("report.json", "scores.png", "scores_by_model.png")  # what --report writes into its folder
HISTOGRAM_BINS = 30

_THOUGHT_MARKERS = ("<|begin_of_thought|>", "<|end_of_thought|>", "<|begin_of_solution|>")


@dataclass
class SelectOptions:
    """Every selection knob, declared once: the library uses it and ``fluxprm select``'s options are generated
    from it."""

    top_k: int | None = field(default=None, metadata={
        "help": "Keep the K best traces (with --per-problem: the K best of each problem).", "min": 1})
    top_fraction: float | None = field(default=None, metadata={
        "help": "Keep the best fraction F (0 < F <= 1) of the scored traces, k = ceil(F * n) (with --per-problem: "
                "of each problem's)."})
    per_problem: bool = field(default=False, metadata={
        "help": "Select per problem (grouped by problem id and normalised problem text) instead of overall."})
    min_score: float | None = field(default=None, metadata={
        "help": "Never select a trace scoring below S (after --alpha)."})
    alpha: float | None = field(default=None, metadata={
        "help": "Re-weight the trajectory reward: rank by aggregate(step rewards) + A * trajectory reward, from "
                "the stored parts (no rescoring). Scores without a trajectory reward keep their score.  "
                "[default: the stored score]"})
    aggregate: str = field(default="mean", metadata={
        "help": "How step rewards combine under --alpha; use the scoring model's (fluxprm-mini and checkpoints "
                "trained by fluxprm: mean).", "choices": tuple(AGGREGATES)})
    dedup: bool = field(default=True, metadata={
        "help": "Drop a trace whose thinking and response repeat (whitespace aside) a better-ranked trace of "
                "the same problem."})
    problem_id_field: str | None = field(default=None, metadata={
        "help": "Record field holding the problem id.  [default: problem_id, question_id, unique_id or idx, "
                "the first present; a pool's record id]"})
    format: str = field(default="jsonl", metadata={
        "help": "Format of the selected records (-o).", "choices": OUTPUT_FORMATS})
    sft: Path | None = field(default=None, metadata={
        "help": "Also write the selection as chat messages (JSONL: system?, user = problem, assistant = thinking "
                "in its source's markers + response), in the order of -o."})
    system: str | None = field(default=None, metadata={"help": "System message of every --sft conversation."})
    report: Path | None = field(default=None, metadata={
        "help": "Write report.json and score histograms (PNG) by source model into this folder."})
    on_error: str = field(default="skip", metadata={
        "help": "skip: unreadable or unscored records go to the errors file; fail: stop at the first one.",
        "choices": ("skip", "fail")})

    def __post_init__(self) -> None:
        if (self.top_k is None) == (self.top_fraction is None):
            raise ValueError("give exactly one of --top-k or --top-fraction")
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 1):
            raise ValueError(f"--top-k must be >= 1, got {self.top_k}")
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise ValueError(f"--top-fraction must be in (0, 1], got {self.top_fraction}")
        for name in ("alpha", "min_score"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.aggregate!r}; choose from {', '.join(AGGREGATES)}")
        if self.format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {self.format!r}; choose from {', '.join(OUTPUT_FORMATS)}")
        if self.on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be skip or fail, got {self.on_error!r}")


@dataclass
class SelectCounts:
    """Where every input went. ``scored = selected + below_min_score + duplicates + not_selected``."""

    records_in: int = 0        # input records read (a pool record counts once)
    traces: int = 0            # traces read (a pool record gives one per candidate)
    errors: int = 0            # records that could not be read or parsed (in the errors file)
    unscored: int = 0          # traces without a score (rejected when scoring; in the errors file)
    scored: int = 0
    below_min_score: int = 0
    duplicates: int = 0        # not selected because an identical response of the same problem was
    not_selected: int = 0      # ranked below the cut
    selected: int = 0
    problems: int | None = None  # with --per-problem: problems seen


@dataclass
class SelectResult:
    """What ``run_select`` did: counts, files written, the resolved k, correctness, warnings."""

    counts: SelectCounts
    out: Path
    errors: Path | None                 # None when no record was rejected (no file is left)
    sft: Path | None = None
    report: Path | None = None
    scores: Path | None = None          # the scores file written when scoring with a model
    k: int | None = None                # overall k (None with --per-problem)
    correctness: dict[str, Any] = field(default_factory=dict)
    error_causes: list[ErrorCause] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class SelectFailure(RuntimeError):
    """``on_error="fail"`` met a record that cannot be selected; the message is ``file:line: reason``."""


# ---------------------------------------------------------------------------------------------- keys

def _digest(*parts: str) -> bytes:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.digest()


def _collapse(text: str | None) -> str:
    return " ".join((text or "").split())


def normalise_problem(text: str) -> str:
    """A problem's text as compared across records: whitespace runs collapsed to one space, lowercased."""
    return _collapse(text).lower()


def problem_id(trace: Trace, raw: dict[str, Any] | None, id_field: str | None = None) -> str | None:
    """The record's problem id: ``id_field``, else the first of :data:`PROBLEM_ID_FIELDS`, else a pool's group."""
    data = raw if isinstance(raw, dict) else {}
    for name in (id_field,) if id_field else PROBLEM_ID_FIELDS:
        value = data.get(name, trace.meta.get(name))
        if value is not None and not isinstance(value, (dict, list)):
            return str(value)
    group = trace.meta.get("group")
    return None if group is None else str(group)


def problem_key(trace: Trace, raw: dict[str, Any] | None = None, id_field: str | None = None) -> bytes:
    """The 8-byte key of a trace's problem: its problem id (if any) and normalised problem text together."""
    return _digest(problem_id(trace, raw, id_field) or "", normalise_problem(trace.problem))


def response_digest(trace: Trace, problem: bytes) -> bytes:
    """The 8-byte key of a response: its problem, thinking and response text with whitespace collapsed (case kept:
    ``x`` and ``X`` are different answers)."""
    return _digest(problem.hex(), _collapse(trace.thinking), _collapse(trace.response))


# ---------------------------------------------------------------------------------------------- records out

def candidate_record(raw: dict[str, Any], trace: Trace, fields: FieldMap | None = None) -> dict[str, Any]:
    """The input record of one trace: a pool record reduced to that candidate (every list field with one element
    per candidate becomes the candidate's element, as :mod:`fluxprm.traces` splits pools); any other record as is
    (a MATH-APS leaf keeps its whole record — ``fluxprm.candidate`` says which leaf)."""
    k = trace.meta.get("candidate")
    if trace.format != "pool" or not isinstance(k, int):
        return dict(raw)
    names = (fields.response,) if fields is not None and fields.response else RESPONSE_FIELDS
    responses = next((raw[n] for n in names if isinstance(raw.get(n), list)), None)
    if responses is None:
        return dict(raw)
    n = len(responses)
    return {key: (value[k] if isinstance(value, list) and len(value) == n else value) for key, value in raw.items()}


def _thinking_style(trace: Trace, record: dict[str, Any]) -> str:
    """``sky-t1`` or ``r1``: the markers the source wrapped this trace's thinking in (``<think>`` when it had none)."""
    if trace.format in ("r1", "sky-t1"):
        return trace.format
    for value in record.values():  # a pool candidate's own text says which markers it used
        if isinstance(value, str) and any(m in value for m in _THOUGHT_MARKERS):
            return "sky-t1"
    return "r1"


def assistant_text(trace: Trace, record: dict[str, Any] | None = None) -> str:
    """The assistant turn: the thinking wrapped as its source wrapped it, then the response.

    ``<think>\\n…\\n</think>\\n\\n`` (R1 and every shape without markers of its own, e.g. ``reasoning_content``)
    or Sky-T1's ``<|begin_of_thought|>\\n\\n…\\n\\n<|end_of_thought|>\\n\\n<|begin_of_solution|>\\n\\n…
    \\n\\n<|end_of_solution|>``; a trace without thinking is its response alone.
    """
    thinking, response = (trace.thinking or "").strip(), trace.response.strip()
    if not thinking:
        return response
    if _thinking_style(trace, record or {}) == "sky-t1":
        return (f"<|begin_of_thought|>\n\n{thinking}\n\n<|end_of_thought|>\n\n"
                f"<|begin_of_solution|>\n\n{response}\n\n<|end_of_solution|>")
    return f"<think>\n{thinking}\n</think>\n\n{response}"


def sft_messages(trace: Trace, record: dict[str, Any] | None = None, system: str | None = None
                 ) -> list[dict[str, str]]:
    """Chat messages for SFT: optional system, user = problem, assistant = :func:`assistant_text`."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": trace.problem})
    messages.append({"role": "assistant", "content": assistant_text(trace, record)})
    return messages


def _dumps(record: dict[str, Any]) -> bytes:
    """One JSON line; what orjson refuses (integers beyond 64 bits, lone surrogates) goes through ``json``."""
    try:
        return orjson.dumps(record) + b"\n"
    except (TypeError, ValueError):
        return json_text(record, separators=(",", ":")).encode("utf-8") + b"\n"


# ---------------------------------------------------------------------------------------------- the heap

@dataclass(slots=True)
class _Pick:
    """One trace in the running: its rank key parts and what the output pass needs (never the record)."""

    score: float
    order: int
    key: tuple[str, int, int | None]
    dup: bytes | None
    group: bytes | None
    trace_score: TraceScore


class _TopK:
    """The ``k`` best picks of one stream by ``(score, -order)``, at most one per response digest.

    A min-heap of ``(score, -order, pick)``: the root is the worst kept pick, replaced when a better one comes.
    ``by_dup`` maps the digests of the kept picks (only those: bounded by ``k``) to their heap entries.
    """

    __slots__ = ("k", "heap", "by_dup")

    def __init__(self, k: int) -> None:
        self.k = k
        self.heap: list[tuple[float, int, _Pick]] = []
        self.by_dup: dict[bytes, tuple[float, int, _Pick]] = {}

    def offer(self, pick: _Pick) -> None:
        if self.k <= 0:
            return
        entry = (pick.score, -pick.order, pick)
        if pick.dup is not None and pick.dup in self.by_dup:
            old = self.by_dup[pick.dup]
            if old[:2] >= entry[:2]:
                return  # a better-ranked identical response is kept
            i = next(j for j, e in enumerate(self.heap) if e[2] is old[2])
            self.heap[i] = entry  # a better duplicate takes its place: larger key, so it may only sink
            _sift_down(self.heap, i)
            self.by_dup[pick.dup] = entry
            return
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, entry)
        elif entry[:2] > self.heap[0][:2]:
            evicted = heapq.heapreplace(self.heap, entry)[2]
            if evicted.dup is not None:
                del self.by_dup[evicted.dup]
        else:
            return
        if pick.dup is not None:
            self.by_dup[pick.dup] = entry

    def picks(self) -> list[_Pick]:
        """The kept picks, best first."""
        return [e[2] for e in sorted(self.heap, reverse=True, key=lambda e: e[:2])]


def _sift_down(heap: list, i: int) -> None:
    """Restore the min-heap below position ``i`` after its entry grew."""
    n, item = len(heap), heap[i]
    while (child := 2 * i + 1) < n:
        if child + 1 < n and heap[child + 1][:2] < heap[child][:2]:
            child += 1
        if heap[child][:2] >= item[:2]:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = item


def _k_of(fraction: float, n: int) -> int:
    """``ceil(F · n)``, immune to float noise (0.1 · 30 is 3, not 4)."""
    return math.ceil(round(fraction * n, 9))


# ---------------------------------------------------------------------------------------------- the job

class _Selection:
    """One ``run_select`` call: the passes over the input and their shared state."""

    def __init__(self, inputs: list[str], source: ScoreSource, options: SelectOptions, fields: FieldMap | None,
                 scores_out: Path | None, resume: bool, on_progress: Callable[[int], None] | None) -> None:
        self.inputs, self.source, self.options, self.fields = inputs, source, options, fields
        self.scores_out, self.resume, self.on_progress = scores_out, resume, on_progress
        self.scored_once = False
        self.warnings: list[str] = []

    @functools.cached_property
    def unscored_hint(self) -> str | None:
        """Why the scores file pairs with no trace, when it was made in another folder; read on the first unscored
        trace only, since finding it takes a pass over the scores file."""
        return unmatched_source_hint(self.inputs, self.source.scores) if self.source.scores else None

    # -- streams

    def pairs(self) -> Iterator[tuple[Trace | BadRecord, TraceScore | None, dict[str, Any] | None]]:
        """Every trace (or bad record) with its score and its raw record, in input order.

        With a model the first call scores into ``scores_out``; later passes read that file.
        """
        source = self.source
        if source.model and self.scored_once:
            source = ScoreSource(scores=[str(self.scores_out)])
        stream = scored_traces(self.inputs, source, self.fields, scores_out=self.scores_out, resume=self.resume,
                               on_progress=self.on_progress)
        self.scored_once = True
        records = iter_records(self.inputs)
        current: RawRecord | BadRecord | None = None
        for item, score in stream:
            if isinstance(item, BadRecord):
                yield item, None, None
                continue
            # The raw reader and the trace reader walk the same files in the same order: advance to this trace's record.
            while not (isinstance(current, RawRecord) and current.source == item.source and current.line == item.line):
                current = next(records, None)
                if current is None:
                    raise RuntimeError(f"internal error: no raw record for {item.source}:{item.line}")
            yield item, score, current.data

    def ranking_score(self, ts: TraceScore | None) -> float | None:
        """The number traces rank by: the stored score, or with ``alpha`` the re-weighted one."""
        if ts is None:
            return None
        value = ts.score
        if self.options.alpha is not None and ts.trajectory_reward is not None:
            value = ts.rescored(self.options.aggregate, self.options.alpha)
        if value is None or isinstance(value, bool) or not math.isfinite(value):
            return None
        return float(value)

    def group_of(self, trace: Trace, raw: dict[str, Any] | None) -> bytes:
        return problem_key(trace, raw, self.options.problem_id_field)

    # -- pass 1: counts for a fraction

    def count_pass(self) -> tuple[int, dict[bytes, int]]:
        total, per_group = 0, defaultdict(int)
        for item, ts, raw in self.pairs():
            if isinstance(item, BadRecord) or self.ranking_score(ts) is None:
                continue
            total += 1
            if self.options.per_problem:
                per_group[self.group_of(item, raw)] += 1
        return total, dict(per_group)

    # -- pass 2: the heaps

    def heap_pass(self, errors_path: Path, k: int | None, group_k: dict[bytes, int] | None
                  ) -> tuple[dict[bytes | None, _TopK], SelectCounts, CauseCounter, tuple[float, float] | None]:
        opts = self.options
        heaps: dict[bytes | None, _TopK] = {}
        counts = SelectCounts()
        causes = CauseCounter()
        lo, hi = math.inf, -math.inf
        implied_alphas: list[float] = []
        last_record: tuple[str, int] | None = None
        tmp = errors_path.with_name(errors_path.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as err:
                for order, (item, ts, raw) in enumerate(self.pairs()):
                    if (item.source, item.line) != last_record:
                        counts.records_in += 1
                        last_record = (item.source, item.line)
                    if isinstance(item, BadRecord):
                        counts.errors += 1
                        self._reject(err, causes, item)
                        continue
                    counts.traces += 1
                    score = self.ranking_score(ts)
                    if score is None:
                        counts.unscored += 1
                        why = self._why_unscored(item, ts)
                        self._reject(err, causes, BadRecord(item.source, item.line, why, item.id,
                                                            hint=self.unscored_hint))
                        continue
                    counts.scored += 1
                    lo, hi = min(lo, score), max(hi, score)
                    if ts is not None and len(implied_alphas) < 50:
                        self._note_alpha(ts, implied_alphas)
                    if opts.min_score is not None and score < opts.min_score:
                        continue
                    group = self.group_of(item, raw) if (opts.per_problem or opts.dedup) else None
                    dup = response_digest(item, group) if opts.dedup else None  # type: ignore[arg-type]
                    slot = group if opts.per_problem else None
                    heap = heaps.get(slot)
                    if heap is None:
                        heap = heaps[slot] = _TopK(k if group_k is None else group_k.get(slot, 0))  # type: ignore
                    heap.offer(_Pick(score, order, trace_key(item), dup, group, ts))  # type: ignore[arg-type]
        finally:  # also when a fail stop or an interruption ends the pass: what was rejected so far is kept
            if tmp.is_file() and tmp.stat().st_size:
                os.replace(tmp, errors_path)
            else:
                tmp.unlink(missing_ok=True)
                if errors_path.is_file():
                    errors_path.unlink()  # a clean run leaves no errors file, not an earlier run's
        self._check_alphas(implied_alphas, counts)
        return heaps, counts, causes, (lo, hi) if counts.scored else None

    def _reject(self, err: Any, causes: CauseCounter, bad: BadRecord) -> None:
        err.write(_dumps(bad.to_json()))
        causes.add(bad)
        if self.options.on_error == "fail":
            err.flush()
            raise SelectFailure(f"{bad.source}:{bad.line}: {bad.error}")

    def _why_unscored(self, trace: Trace, ts: TraceScore | None) -> str:
        if self.source.score_field:
            return field_score_problem(trace, self.source.score_field)
        if ts is None:
            return "no score: the scores file has no record for this trace (rejected when scoring?)"
        return "no score: the score record's score is null or not finite"

    def _note_alpha(self, ts: TraceScore, implied: list[float]) -> None:
        """Collect ``α₀ = (score − aggregate(steps)) / trajectory``: one value for every record when ``aggregate``
        is the scoring model's."""
        if self.options.alpha is None or ts.trajectory_reward in (None, 0) or ts.score is None or not ts.step_rewards:
            return
        agg = aggregate(ts.step_rewards, self.options.aggregate)
        implied.append((ts.score - agg) / ts.trajectory_reward)  # type: ignore[operator]

    def _check_alphas(self, implied: list[float], counts: SelectCounts) -> None:
        if self.options.alpha is None or not counts.scored:
            return
        if not implied:
            self.warnings.append("--alpha has no effect: no score has both step rewards and a trajectory reward")
        elif max(implied) - min(implied) > 1e-6 * max(1.0, max(abs(a) for a in implied)):
            self.warnings.append(f"the stored scores are not {self.options.aggregate}(step rewards) + α·trajectory "
                                 "for one α: pass the scoring model's --aggregate, or --alpha re-weights "
                                 "something else than it scored")


# ---------------------------------------------------------------------------------------------- report tallies

class _Tally:
    """The output pass's counters: histograms by source model, correctness and model mix per problem slot.

    Fixed-size per model and per problem slot (one slot overall; one per problem with ``--per-problem``).
    """

    def __init__(self, score_range: tuple[float, float] | None) -> None:
        lo, hi = score_range or (0.0, 1.0)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        self.edges = [lo + (hi - lo) * i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)]
        self.hist: dict[str, dict[str, list[int]]] = {}
        # per (slot, model): [scored, correct-known, correct, selected, selected-known, selected-correct]
        self.cells: dict[tuple[bytes | None, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])

    def add(self, slot: bytes | None, model: str, score: float, correct: bool | None, selected: bool) -> None:
        hist = self.hist.setdefault(model, {"selected": [0] * HISTOGRAM_BINS, "not selected": [0] * HISTOGRAM_BINS})
        lo, hi = self.edges[0], self.edges[-1]
        b = min(HISTOGRAM_BINS - 1, max(0, int((score - lo) / (hi - lo) * HISTOGRAM_BINS)))
        hist["selected" if selected else "not selected"][b] += 1
        cell = self.cells[(slot, model)]
        cell[0] += 1
        if correct is not None:
            cell[1] += 1
            cell[2] += bool(correct)
        if selected:
            cell[3] += 1
            if correct is not None:
                cell[4] += 1
                cell[5] += bool(correct)

    def correctness(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Selected vs the expected correctness of a random selection of the same size from the same slots
        (exact: the slot's mean correctness) vs the best possible (the slot's correct traces first), and the
        source-model mix of each."""
        slots: dict[bytes | None, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
        for (slot, _), cell in self.cells.items():
            slots[slot] = [a + b for a, b in zip(slots[slot], cell)]
        total = [sum(c[i] for c in slots.values()) for i in range(6)]
        scored, known, correct, selected, sel_known, sel_correct = total
        models: dict[str, dict[str, Any]] = {}
        for (slot, model), cell in self.cells.items():
            m = models.setdefault(model, {"scored": 0, "correct_known": 0, "correct": 0, "selected": 0,
                                          "selected_correct": 0, "random_expected_selected": 0.0,
                                          "best_expected_selected": 0.0 if known else None})
            m["scored"] += cell[0]
            m["correct_known"] += cell[1]
            m["correct"] += cell[2]
            m["selected"] += cell[3]
            m["selected_correct"] += cell[5]
            s = slots[slot]
            m["random_expected_selected"] += s[3] * cell[0] / s[0]
            if known and s[1]:  # the ideal selection of the slot's s[4] known traces: correct ones first
                if s[2] >= s[4]:
                    share = s[4] * cell[2] / s[2] if s[2] else 0.0
                else:
                    wrong, wrong_m = s[1] - s[2], cell[1] - cell[2]
                    share = cell[2] + (s[4] - s[2]) * (wrong_m / wrong if wrong else 0.0)
                m["best_expected_selected"] += share
        for m in models.values():
            m["selected_correct_rate"] = m["selected_correct"] / m["selected"] if m["selected"] and known else None
        if not known:
            return {"known": 0, "note": "correctness is unknown: no record says whether its answer is correct"}, models
        random_correct = sum(s[4] * s[2] / s[1] for s in slots.values() if s[1])
        best_correct = sum(min(s[4], s[2]) for s in slots.values())
        summary = {
            "known": known, "pool": correct / known,
            "selected_known": sel_known,
            "selected": sel_correct / sel_known if sel_known else None,
            "random_expected": random_correct / sel_known if sel_known else None,
            "best_possible": best_correct / sel_known if sel_known else None,
        }
        if known < scored:
            summary["note"] = f"correctness known for {known} of {scored} scored traces; rates are over those"
        return summary, models


# ---------------------------------------------------------------------------------------------- entry point

def run_select(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, source: ScoreSource | None = None,
               options: SelectOptions | None = None, *, errors: str | os.PathLike | None = None,
               fields: FieldMap | None = None, scores_out: str | os.PathLike | None = None, resume: bool = False,
               on_progress: Callable[[int], None] | None = None) -> SelectResult:
    """Select the best-scored traces of ``inputs`` into ``out`` (see the module docstring).

    ``source`` says where the scores come from (default: score now with the embedded model); scoring with a
    model writes ``scores_out`` (default ``OUT.scores.jsonl``; ``resume`` continues an interrupted scoring run).
    Unreadable and unscored records go to ``errors`` (default ``OUT.errors.jsonl``; none is left when there are
    none). Raises ``FileNotFoundError`` for a missing input, ``ValueError`` for a bad path or option,
    :class:`SelectFailure` with ``on_error="fail"``.
    """
    options = options or SelectOptions(top_k=1)
    source = source or ScoreSource(model="fluxprm-mini")
    inputs = [str(p) for p in inputs]
    out = Path(out)
    errors_path = Path(errors) if errors else default_errors_path(out)
    if source.model:
        scores_out = Path(scores_out) if scores_out else out.with_name(_stem(out) + ".scores.jsonl")
    _check_paths(inputs, source, out, errors_path, options, Path(scores_out) if source.model else None)
    job = _Selection(inputs, source, options, fields, Path(scores_out) if scores_out else None, resume, on_progress)

    k, group_k = options.top_k, None
    if options.top_fraction is not None:
        total, per_group = job.count_pass()
        if options.per_problem:
            group_k = {g: _k_of(options.top_fraction, n) for g, n in per_group.items()}
        else:
            k = _k_of(options.top_fraction, total)
    heaps, counts, causes, score_range = job.heap_pass(errors_path, k, group_k)

    chosen: dict[tuple[str, int, int | None], tuple[_Pick, int, int | None]] = {}
    best_first = sorted((p for h in heaps.values() for p in h.picks()), key=lambda p: (-p.score, p.order))
    for rank, pick in enumerate(best_first, 1):
        chosen[pick.key] = (pick, rank, None)
    if options.per_problem:
        for heap in heaps.values():
            for problem_rank, pick in enumerate(heap.picks(), 1):
                chosen[pick.key] = (chosen[pick.key][0], chosen[pick.key][1], problem_rank)
    kept_dups = {p.dup for p, _, _ in chosen.values() if p.dup is not None}

    tally = _Tally(score_range)
    rows: list[dict[str, Any]] = []
    emitted: set[tuple[str, int, int | None]] = set()  # an input named twice selects its records once
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_sft = options.sft.with_name(options.sft.name + ".tmp") if options.sft else None
    for path in (tmp_out, tmp_sft):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (open(tmp_out, "wb") if options.format == "jsonl" else _Null()) as fout, \
                (open(tmp_sft, "wb") if tmp_sft else _Null()) as fsft:
            for item, ts, raw in job.pairs():
                if isinstance(item, BadRecord):
                    continue
                score = job.ranking_score(ts)
                if score is None:
                    continue
                key = trace_key(item)
                hit = chosen.get(key) if key not in emitted else None
                group = job.group_of(item, raw) if (options.per_problem or options.dedup) else None
                if hit is not None:
                    emitted.add(key)
                    counts.selected += 1
                    record = candidate_record(raw or {}, item, fields)
                    record["fluxprm"] = _score_fields(hit, item, options)
                    if options.format == "jsonl":
                        fout.write(_dumps(record))
                    else:
                        rows.append(record)
                    if tmp_sft:
                        fsft.write(_dumps({"messages": sft_messages(item, record, options.system)}))
                elif options.min_score is not None and score < options.min_score:
                    counts.below_min_score += 1
                elif options.dedup and response_digest(item, group) in kept_dups:  # type: ignore[arg-type]
                    counts.duplicates += 1
                else:
                    counts.not_selected += 1
                tally.add(group if options.per_problem else None, _source_model(item, ts), score, item.correct,
                          hit is not None)
        if options.format == "parquet":
            _write_parquet(rows, tmp_out)
        os.replace(tmp_out, out)
        if tmp_sft:
            os.replace(tmp_sft, options.sft)  # type: ignore[arg-type]
    finally:
        for path in (tmp_out, tmp_sft):
            if path is not None:
                path.unlink(missing_ok=True)
    if options.per_problem:
        counts.problems = len({slot for slot, _ in tally.cells})
    correctness, by_model = tally.correctness()
    result = SelectResult(counts=counts, out=out, errors=errors_path if errors_path.is_file() else None,
                          sft=options.sft, report=options.report, scores=job.scores_out if source.model else None,
                          k=k if not options.per_problem else None, correctness=correctness,
                          error_causes=causes.summary(), warnings=job.warnings)
    if counts.scored and not counts.selected and options.min_score is not None:
        result.warnings.append(f"nothing scored at least --min-score {options.min_score} (best: {score_range[1]:.4g})"
                               if score_range else "nothing selected")
    if options.report:
        _write_report(options.report, result, inputs, source, options, tally, by_model)
    return result


def _stem(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    for suffix in (".jsonl", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    return name


def _check_paths(inputs: list[str], source: ScoreSource, out: Path, errors: Path, options: SelectOptions,
                 scores_out: Path | None) -> None:
    """Refuse, before any work, outputs that are inputs, directories, or one another."""
    check_inputs(inputs)
    for s in source.scores or []:  # named by its option, as `fluxprm eval` words it: it is not an input file
        check_option_file("--scores", s, "the scores file")
    readable = inputs + [str(s) for s in source.scores or []]
    check_outputs(readable, out, errors)
    for flag, path in (("--sft", options.sft), ("--scores-out", scores_out)):
        if path is not None:
            check_outputs(readable, path, None, flag)
    written = [p for p in (out, errors, options.sft, scores_out) if p is not None]
    real = [os.path.realpath(p) for p in written]
    if len(set(real)) != len(real):
        raise ValueError("two outputs name the same file: " + ", ".join(str(p) for p in written))
    if options.report is not None and options.report.exists() and not options.report.is_dir():
        raise ValueError(f"--report {options.report} is a file; give a folder")
    if options.report is not None and os.path.realpath(options.report) in real:
        raise ValueError(f"--report {options.report} is also an output file; give a folder of its own")
    if options.report is not None:
        check_folder_outputs(readable, options.report, REPORT_FILES, "--report")


class _Null:
    """A context manager standing in for a file that is not written."""

    def __enter__(self) -> "_Null":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _source_model(trace: Trace, ts: TraceScore | None) -> str:
    """The model that wrote the trace (its record's ``model`` field), else the model that scored it."""
    value = trace.meta.get("model")
    if isinstance(value, str) and value.strip():
        return value
    return (ts.model if ts is not None and ts.model else None) or "unknown"


def _score_fields(hit: tuple[_Pick, int, int | None], trace: Trace, options: SelectOptions) -> dict[str, Any]:
    """The ``"fluxprm"`` key of a selected record (see docs/SCHEMAS.md)."""
    pick, rank, problem_rank = hit
    ts = pick.trace_score
    fields: dict[str, Any] = {"score": pick.score, "rank": rank}
    if problem_rank is not None:
        fields["problem_rank"] = problem_rank
    fields["model"] = ts.model
    fields["trajectory_reward"] = ts.trajectory_reward
    if ts.step_rewards:
        fields["step_rewards"] = ts.step_rewards
    if options.alpha is not None and ts.trajectory_reward is not None:
        fields.update(stored_score=ts.score, alpha=options.alpha, aggregate=options.aggregate)
    fields["source"], fields["line"] = trace.source, trace.line
    if pick.key[2] is not None:
        fields["candidate"] = pick.key[2]
    return fields


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """The selected records as one Parquet table (the selection is in memory anyway: ``k`` records).

    Columns whose values Arrow cannot type as one (an answer that is text in one record and a number in the
    next), and nested columns Parquet cannot store (a field that is ``{}`` in every selected record: a struct
    with no child), are written as JSON text.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(dict.fromkeys(k for r in rows for k in r))

    def as_json(columns: set[str]) -> Any:
        return pa.Table.from_pylist([{k: (json.dumps(v) if k in columns and v is not None else v)
                                      for k, v in ((n, r.get(n)) for n in names)} for r in rows])

    mixed: set[str] = set()
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        for name in names:
            try:
                pa.array([r.get(name) for r in rows])
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                mixed.add(name)
        table = as_json(mixed)

    def childless(t: Any) -> bool:  # a struct type with no field, at any depth
        if pa.types.is_struct(t):
            return t.num_fields == 0 or any(childless(t.field(i).type) for i in range(t.num_fields))
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return childless(t.value_type)
        return False

    empty = {f.name for f in table.schema if childless(f.type)}
    pq.write_table(as_json(mixed | empty) if empty else table, path)


# ---------------------------------------------------------------------------------------------- report

def _write_report(folder: Path, result: SelectResult, inputs: list[str], source: ScoreSource,
                  options: SelectOptions, tally: _Tally, by_model: dict[str, dict[str, Any]]) -> None:
    """``report.json`` and the score histograms (``scores.png`` overall, ``scores_by_model.png``: one panel per
    source model), selected vs not selected."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plot_histograms(folder, tally)
    scores_from = ({"model": source.model} if source.model else {"scores": [str(s) for s in source.scores]}
                   if source.scores else {"field": source.score_field})
    report = {
        "inputs": inputs, "scores_from": scores_from,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()},
        "k": result.k, "counts": vars(result.counts), "correctness": result.correctness,
        "by_model": dict(sorted(by_model.items(), key=lambda kv: (-kv[1]["scored"], kv[0]))),
        "histogram": {"edges": tally.edges, "by_model": tally.hist},
        "plots": plots, "warnings": result.warnings,
        "errors": str(result.errors) if result.errors else None,
        "error_causes": [vars(c) for c in result.error_causes],
    }
    (folder / "report.json").write_text(json_text(report, indent=2) + "\n", encoding="utf-8")


def _short(model: str, width: int = 38) -> str:
    name = model.rstrip("/").rsplit("/", 1)[-1] or model
    return name if len(name) <= width else name[: width - 1] + "…"


def _plot_histograms(folder: Path, tally: _Tally) -> list[str]:
    if not tally.hist:
        return []
    plt = pyplot()
    edges = tally.edges
    width = edges[1] - edges[0]
    colours = {"selected": "#2b8a3e", "not selected": "#adb5bd"}

    def draw(ax: Any, series: dict[str, list[int]], title: str) -> None:
        bottom = [0] * HISTOGRAM_BINS
        for name in ("not selected", "selected"):
            ax.bar(edges[:-1], series[name], width=width, bottom=bottom, align="edge", color=colours[name],
                   edgecolor="white", linewidth=0.3, label=name)
            bottom = [a + b for a, b in zip(bottom, series[name])]
        n_sel, n_all = sum(series["selected"]), sum(bottom)
        ax.set_title(f"{title}\n{n_sel} of {n_all} selected", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.yaxis.get_major_locator().set_params(integer=True)

    total = {name: [sum(h[name][i] for h in tally.hist.values()) for i in range(HISTOGRAM_BINS)]
             for name in ("selected", "not selected")}
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    draw(ax, total, "all traces")
    ax.set_xlabel("score")
    ax.set_ylabel("traces")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize=8)  # legend order = stacking order, selected on top
    save_figure(fig, folder / "scores.png", dpi=120, tight=False)
    plots = ["scores.png"]

    models = sorted(tally.hist, key=lambda m: (-sum(map(sum, tally.hist[m].values())), m))
    cols = min(4, len(models))
    rows = math.ceil(len(models) / cols)
    # at least 6.5 inches wide: one or two panels must still fit the title above them
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.4 * cols, 6.5), 2.6 * rows + 0.9), squeeze=False,
                             sharex=True, layout="constrained")
    for i, model in enumerate(models):
        ax = axes[i // cols][i % cols]
        draw(ax, tally.hist[model], _short(model))
        if i + cols >= len(models):  # the lowest panel of its column
            ax.set_xlabel("score", fontsize=8)
            ax.tick_params(labelbottom=True)
        if i % cols == 0:
            ax.set_ylabel("traces", fontsize=8)
    for j in range(len(models), rows * cols):
        axes[j // cols][j % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle("score histogram by source model (the record's model field)", fontsize=10)
    save_figure(fig, folder / "scores_by_model.png", dpi=110, tight=False)
    plots.append("scores_by_model.png")
    return plots
