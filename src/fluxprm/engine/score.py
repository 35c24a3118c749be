"""Scoring traces: the batch API (``score_batch``) and the streams built on it.

``score_batch`` is the one place traces become scores: segment (``steps.prepare``), fit the context
(``engine.fit``), batch the forwards (``engine.batching``), assemble ``TraceScore`` records. The
streaming job, the reward server and Ray workers all call it, so they score identically. A record
that cannot be scored never raises out of it: it comes back as a ``BadRecord`` in its place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator

import torch

from fluxprm.engine.batching import Batcher
from fluxprm.engine.fit import Fitted, fit_trace
from fluxprm.engine.options import ScoreOptions
from fluxprm.engine.stats import Stats
from fluxprm.models.base import Encoded, ItemOutput, TransformerPRM
from fluxprm.records import BadRecord
from fluxprm.scores import TraceScore
from fluxprm.steps import PRMInput, prepare, step_config_for
from fluxprm.traces import Trace, TraceError, parse_record

__all__ = ["Scorer", "ScoreFailure", "Stats", "score", "score_batch", "score_stream", "score_traces", "trace_extra"]


class ScoreFailure(RuntimeError):
    """A trace could not be scored and ``on_error`` is not ``skip``."""


def trace_extra(trace: Trace) -> dict[str, Any]:
    """Fields carried from the input into the score record so downstream tools need no join."""
    extra: dict[str, Any] = {}
    for key in ("group", "candidate"):
        if key in trace.meta:
            extra[key] = trace.meta[key]
    if trace.correct is not None:
        extra["correct"] = trace.correct
    return extra


@dataclass(slots=True)
class _Work:
    """One trace of a batch: its fitted encodings and where its result goes."""

    slot: int
    trace: Trace
    item: PRMInput
    fitted: Fitted
    outputs: list[ItemOutput | None] = field(default_factory=list)


class Scorer:
    """A PRM plus scoring options and the batching verdict: call :meth:`score_batch` as often as you like.

    Resolving the batching (a measurement on first use, cached on disk) happens once here, not per batch.
    """

    def __init__(self, prm: TransformerPRM, options: ScoreOptions | None = None, stats: Stats | None = None):
        self.prm = prm
        options = options or ScoreOptions()
        if options.steps is None:  # cut steps the way the model's training data was cut
            options = replace(options, steps=step_config_for(prm.trained_steps))
        self.options = options
        self.stats = stats if stats is not None else Stats()
        self.batcher = Batcher(prm, self.options.batching, self.options.batch_tokens)
        self.stats.batching = f"{self.batcher.mode} ({self.batcher.how})"

    def score_batch(self, items: Iterable[Any],
                    on_forward: Callable[[int, int], None] | None = None) -> list[TraceScore | BadRecord]:
        """Score ``Trace``s, raw record dicts, ``PRMInput``s or pass-through ``BadRecord``s.

        Returns one entry per trace in input order (a Best-of-N pool dict expands into one trace per
        candidate); an entry is a ``TraceScore`` or the ``BadRecord`` saying why that trace was not scored.
        ``on_forward(tokens_done, tokens_total)`` follows the forwards of this batch (see :meth:`Batcher.run`).
        """
        traces = list(as_traces(items))
        results: list[TraceScore | BadRecord | None] = [None] * len(traces)
        works: list[_Work] = []
        for slot, trace in enumerate(traces):
            if isinstance(trace, BadRecord):
                results[slot] = trace
                continue
            try:
                item = prepare(trace, self.options.steps)
                fitted = fit_trace(self.prm, item, self.options.long, self.options.context_tokens)
            except Exception as exc:  # noqa: BLE001 - one bad trace must not take its batch down
                results[slot] = BadRecord(trace.source, trace.line, _reason(exc), trace.id)
                continue
            works.append(_Work(slot, trace, item, fitted, [None] * len(fitted.parts)))
        encs = [((w, p), enc) for w, work in enumerate(works) for p, enc in enumerate(work.fitted.parts)]
        with torch.inference_mode():
            outputs = self.batcher.run(encs, on_forward)
        for (w, p), out in outputs.items():
            works[w].outputs[p] = out
        for work in works:
            score = self._assemble(work)
            results[work.slot] = score
            self.stats.traces += 1
            self.stats.steps += work.item.num_steps
            self.stats.tokens += work.fitted.tokens
            self.stats.truncated += int(score.truncated)
            self.stats.windowed += int(len(work.fitted.parts) > 1)
        self.stats.errors += sum(isinstance(r, BadRecord) for r in results)
        return results  # type: ignore[return-value]

    def _assemble(self, work: _Work) -> TraceScore:
        """Merge a trace's window outputs (if any) into its score record."""
        parts, outputs = work.fitted.parts, [o for o in work.outputs if o is not None]
        extra = trace_extra(work.trace)
        if len(parts) == 1:
            enc, out = parts[0], outputs[0]
        else:
            enc = Encoded(input_ids=[t for p in parts for t in p.input_ids],
                          read_positions=[p for e in parts for p in e.read_positions],
                          num_thinking=sum(p.num_thinking for p in parts))
            out = ItemOutput([r for o in outputs for r in o.step_rewards], outputs[-1].trajectory_reward)
            extra["windows"] = len(parts)
        if work.fitted.clipped:
            extra["clipped"] = work.fitted.clipped
        score = self.prm.to_score(work.trace.id, enc, out, work.item.num_steps, extra)
        score.source, score.line = work.trace.source, work.trace.line
        if work.fitted.clipped:
            score.truncated = True
        if self.options.spans:
            dropped = enc.dropped_thinking
            score.thinking_step_spans = (work.item.thinking_spans or [])[dropped:] \
                if work.item.thinking_spans is not None else None
            score.response_step_spans = work.item.response_spans
        return score


def _reason(exc: Exception) -> str:
    """The message of a per-trace failure; unexpected kinds say what they were."""
    if isinstance(exc, ValueError) and not isinstance(exc, UnicodeError):
        return str(exc)
    return f"cannot score this trace ({type(exc).__name__}: {exc})"


def as_traces(items: Iterable[Any]) -> Iterator[Trace | BadRecord]:
    """``Trace``/``BadRecord`` pass through; a ``PRMInput`` becomes a trace; a dict is parsed (maybe into several)."""
    for i, item in enumerate(items):
        if isinstance(item, (Trace, BadRecord)):
            yield item
        elif isinstance(item, PRMInput):
            yield Trace(id=str(i), problem=item.problem, response="", thinking_steps=item.thinking_steps,
                        steps=item.response_steps, thinking="" if item.thinking_steps else None,
                        source="<input>", line=i + 1)
        else:
            try:
                yield from parse_record(item, source="<input>", line=i + 1)
            except TraceError as exc:
                yield BadRecord("<input>", i + 1, str(exc), exc.id)


def score_batch(prm: TransformerPRM, items: Iterable[Any], options: ScoreOptions | None = None
                ) -> list[TraceScore | BadRecord]:
    """Score a batch of traces (see :meth:`Scorer.score_batch`); for many batches build one ``Scorer``."""
    return Scorer(prm, options).score_batch(items)


def score_stream(prm: TransformerPRM, items: Iterable[Trace | BadRecord], options: ScoreOptions,
                 stats: Stats | None = None) -> Iterator[list[TraceScore | BadRecord]]:
    """Score a stream chunk by chunk; yields, per chunk of ``options.chunk_size`` items, its results in order."""
    scorer = Scorer(prm, options, stats)
    chunk: list[Trace | BadRecord] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= options.chunk_size:
            yield scorer.score_batch(chunk)
            chunk = []
    if chunk:
        yield scorer.score_batch(chunk)


def score_traces(prm: TransformerPRM, traces: Iterable[Any], options: ScoreOptions | None = None
                 ) -> Iterator[TraceScore]:
    """Library entry point: score ``Trace``s, raw record dicts or ``PRMInput``s, in order.

    With the default ``on_error="raise"`` the first unscorable trace raises :class:`ScoreFailure`;
    with ``"skip"`` it is left out (use :func:`score_batch` to see the rejected records too).
    """
    options = options or ScoreOptions()
    for chunk in score_stream(prm, as_traces(traces), options):
        for r in chunk:
            if isinstance(r, TraceScore):
                yield r
            elif options.on_error != "skip":
                raise ScoreFailure(f"{r.source}:{r.line}: {r.error}")


def score(prm: TransformerPRM, traces: Iterable[Any], **options: Any) -> list[TraceScore]:
    """Score traces and return the list (options as in :class:`ScoreOptions`); raises on the first bad trace."""
    return list(score_traces(prm, traces, ScoreOptions(**options)))
