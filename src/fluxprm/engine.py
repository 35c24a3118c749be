"""The scoring engine: traces → segmented, encoded, batched forwards → score records.

Design points, each answering a user pain with one-at-a-time scoring scripts:

- **Streaming.** Input is consumed in chunks of ``chunk_size`` traces; memory is bounded by one chunk
  whatever the file size, and records come out in input order.
- **Batching chosen by measurement.** Within a chunk traces are length-sorted and grouped into
  batches of at most ``batch_tokens`` padded tokens. On a GPU padded batches win; on a CPU padding
  is often pure waste and one trace per forward is faster. With ``batching="auto"`` the engine
  measures both once per set-up (see :func:`resolve_batching`) and keeps the faster.
- **Long traces.** ``long="truncate"`` drops the earliest thinking steps (never problem or
  response) and flags the record; ``long="windows"`` scores every step in consecutive windows that
  each fit the context.
- **Nothing lost, resumable.** See :mod:`fluxprm.outputs`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

from fluxprm.models.base import Encoded, ItemOutput, PRMInput, TraceScore, TraceTooLong, TransformerPRM
from fluxprm.records import BadRecord
from fluxprm.steps import StepConfig, split_steps
from fluxprm.traces import Trace, TraceError, parse_record

__all__ = ["ScoreOptions", "Stats", "prepare", "score_traces", "score_stream", "ScoreFailure"]


@dataclass
class ScoreOptions:
    """Options of ``fluxprm score`` that shape computation (I/O options live in the CLI)."""

    steps: StepConfig = field(default_factory=StepConfig)
    batch_tokens: int = 16384
    batching: str = "auto"          # auto (measured) | single | padded
    long: str = "truncate"          # truncate | windows
    chunk_size: int = 64
    on_error: str = "raise"         # raise (library default) | skip (CLI default) | fail


class ScoreFailure(RuntimeError):
    """A trace could not be scored and ``on_error`` is not ``skip``."""


@dataclass
class Stats:
    """Running totals for the summary table."""

    traces: int = 0
    steps: int = 0
    tokens: int = 0
    errors: int = 0
    truncated: int = 0
    windowed: int = 0
    forward_seconds: float = 0.0
    batching: str = ""


def prepare(trace: Trace, cfg: StepConfig) -> PRMInput:
    """Segment a trace: explicit steps are kept as given, free text is split by ``cfg``."""
    if trace.thinking_steps is not None:
        thinking = [s for s in (t.strip() for t in trace.thinking_steps) if s]
    elif trace.thinking:
        thinking = split_steps(trace.thinking, cfg.separator, cfg.min_chars, cfg.max_thinking_steps, cfg.joiner)
    else:
        thinking = []
    if trace.steps is not None:
        response = [s for s in (t.strip() for t in trace.steps) if s]
    elif trace.response:
        response = split_steps(trace.response, cfg.separator, cfg.min_chars, cfg.max_response_steps, cfg.joiner)
    else:
        response = []
    if not thinking and not response:
        raise TraceError("the trace has no steps: thinking and response are both empty")
    return PRMInput(trace.problem, thinking, response)


def _trace_extra(trace: Trace) -> dict[str, Any]:
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
    """One trace of a chunk: its encodings (one, or several windows) and where its result goes."""

    slot: int
    trace_id: str
    num_steps: int
    parts: list[Encoded]
    extra: dict[str, Any]
    outputs: list[ItemOutput | None] = field(default_factory=list)


def encode_windows(prm: TransformerPRM, item: PRMInput) -> list[Encoded]:
    """Cover every step with consecutive windows (problem + a run of steps) that each fit the context.

    The response steps stay together in the last window with as many of the latest thinking steps
    as fit, so the response is judged with its nearest context; earlier thinking steps fill earlier
    windows, walking backwards. Window sizes are estimated from one full encoding (token distance
    between read positions) and then checked exactly, shrinking a window that does not fit.
    """
    steps = item.thinking_steps + item.response_steps
    n_think = len(item.thinking_steps)
    ids, positions = prm.encode_ids(item.problem, steps)
    if len(ids) <= prm.max_length:
        return [Encoded(ids, positions, num_thinking=n_think)]
    overhead = len(prm.encode_ids(item.problem, [])[0])  # problem + template, no steps
    sizes = [0] + [b - a for a, b in zip(positions, positions[1:])]  # tokens of each step (estimate)
    sizes[0] = max(1, len(ids) - overhead - sum(sizes))
    budget = prm.max_length - overhead
    windows: list[Encoded] = []
    end = len(steps)
    keep_together = len(item.response_steps)  # the last window holds all response steps
    while end > 0:
        start, used = end, 0
        while start > 0 and (used + sizes[start - 1] <= budget or end - start < keep_together):
            used += sizes[start - 1]
            start -= 1
        start = min(start, end - 1)
        w_ids, w_pos = prm.encode_ids(item.problem, steps[start:end])
        while len(w_ids) > prm.max_length and end - start > 1:
            start += 1
            w_ids, w_pos = prm.encode_ids(item.problem, steps[start:end])
        if len(w_ids) > prm.max_length:
            raise TraceTooLong(f"step {start + 1} alone does not fit the model's context of {prm.max_length} "
                               "tokens; raise --max-length or --max-thinking-steps (fewer merges make shorter steps)")
        windows.append(Encoded(w_ids, w_pos, num_thinking=max(0, min(end, n_think) - start)))
        end, keep_together = start, 0
    windows.reverse()
    return windows


def _merge(prm: TransformerPRM, work: _Work) -> TraceScore:
    outputs = [o for o in work.outputs if o is not None]
    if len(work.parts) == 1:
        return prm.to_score(work.trace_id, work.parts[0], outputs[0], work.num_steps, work.extra)
    steps = [r for o in outputs for r in o.step_rewards]
    merged = Encoded(input_ids=[t for p in work.parts for t in p.input_ids],
                     read_positions=[p for e in work.parts for p in e.read_positions],
                     num_thinking=sum(p.num_thinking for p in work.parts))
    return prm.to_score(work.trace_id, merged, ItemOutput(steps, outputs[-1].trajectory_reward),
                        work.num_steps, {**work.extra, "windows": len(work.parts)})


def _time_forward(prm: TransformerPRM, batches: list[list[Encoded]]) -> float:
    start = time.perf_counter()
    for batch in batches:
        prm.forward(batch)
    return time.perf_counter() - start


def measure_batching(prm: TransformerPRM, length: int = 384, n: int = 4) -> dict[str, float]:
    """Tokens/s of one-trace-per-forward vs one padded batch, on synthetic sequences of mixed length.

    Lengths ``length·(1, 3/4, 1/2, 1/4)`` mimic a length-sorted bucket; the ids are arbitrary text
    tokens (the cost of a forward does not depend on which tokens they are).
    """
    length = max(8, min(length, prm.max_length))
    gen = torch.Generator().manual_seed(0)
    vocab = min(int(getattr(prm.tokenizer, "vocab_size", 1000) or 1000), 30000)
    encs = []
    for k in range(n):
        size = max(4, length * (n - k) // n)
        ids = torch.randint(100, vocab, (size,), generator=gen).tolist()
        encs.append(Encoded(ids, [size - 1], num_thinking=0))
    _time_forward(prm, [encs[-1:]])  # warm-up
    tokens = sum(len(e.input_ids) for e in encs)
    single = tokens / _time_forward(prm, [[e] for e in encs])
    padded = tokens / _time_forward(prm, [encs])
    return {"single": single, "padded": padded}


def resolve_batching(prm: TransformerPRM, requested: str) -> tuple[str, str]:
    """The batching to use and how it was chosen ("given", "device", "measured", "measured, cached").

    ``auto`` on a GPU is padded batches (always faster there). On a CPU the engine measures both on
    synthetic sequences once per (model, device, dtype, threads) and caches the verdict, so every run
    — and every resumed run — of the same set-up batches the same way and writes the same bytes.
    """
    if requested in ("single", "padded"):
        return requested, "given"
    if prm.device.type == "cuda":
        return "padded", "device"
    from fluxprm.embedded import cache_dir

    key = f"{prm.name}|{prm.format}|{prm.device}|{prm.dtype}|{torch.get_num_threads()}"
    path = cache_dir() / "batching.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key], "measured, cached"
    speeds = measure_batching(prm)
    mode = max(speeds, key=speeds.get)
    known[key] = mode
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"batching.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a re-measurement next time
    return mode, "measured"


class _Batcher:
    """Groups a chunk's encodings into forward batches: one per trace, or length-sorted padded batches."""

    def __init__(self, prm: TransformerPRM, options: ScoreOptions, stats: Stats):
        self.prm, self.options, self.stats = prm, options, stats
        self.mode, how = resolve_batching(prm, options.batching)
        stats.batching = f"{self.mode} ({how})"

    def batches(self, encs: list[tuple[Any, Encoded]]) -> list[list[tuple[Any, Encoded]]]:
        encs = sorted(encs, key=lambda x: len(x[1].input_ids))
        if self.mode == "single":
            return [[e] for e in encs]
        out: list[list[tuple[Any, Encoded]]] = []
        cur: list[tuple[Any, Encoded]] = []
        for e in encs:
            width = len(e[1].input_ids)  # sorted ascending: the newest is the widest
            if cur and width * (len(cur) + 1) > self.options.batch_tokens:
                out.append(cur)
                cur = []
            cur.append(e)
        if cur:
            out.append(cur)
        return out

    def run(self, encs: list[tuple[Any, Encoded]]) -> dict[Any, ItemOutput]:
        results: dict[Any, ItemOutput] = {}
        start = time.perf_counter()
        for batch in self.batches(encs):
            for (key, _), out in zip(batch, self.prm.forward([e for _, e in batch])):
                results[key] = out
        self.stats.forward_seconds += time.perf_counter() - start
        return results


def score_stream(prm: TransformerPRM, items: Iterable[Trace | BadRecord], options: ScoreOptions,
                 stats: Stats | None = None) -> Iterator[list[TraceScore | BadRecord]]:
    """Score a stream chunk by chunk; yields, per chunk, its results in input order.

    Each yielded list has exactly one entry per consumed input item (a ``TraceScore`` or a
    ``BadRecord``), which is what makes resuming by item count exact.
    """
    stats = stats if stats is not None else Stats()
    batcher = _Batcher(prm, options, stats)
    chunk: list[Trace | BadRecord] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= options.chunk_size:
            yield _score_chunk(prm, chunk, options, batcher, stats)
            chunk = []
    if chunk:
        yield _score_chunk(prm, chunk, options, batcher, stats)


def _score_chunk(prm: TransformerPRM, chunk: list[Trace | BadRecord], options: ScoreOptions,
                 batcher: _Batcher, stats: Stats) -> list[TraceScore | BadRecord]:
    results: list[TraceScore | BadRecord | None] = [None] * len(chunk)
    works: list[_Work] = []
    for slot, item in enumerate(chunk):
        if isinstance(item, BadRecord):
            results[slot] = item
            continue
        try:
            inp = prepare(item, options.steps)
            parts = encode_windows(prm, inp) if options.long == "windows" else [prm.encode(inp)]
        except (TraceError, TraceTooLong, ValueError) as exc:
            results[slot] = BadRecord(item.source, item.line, str(exc), item.id)
            continue
        num_steps = len(inp.thinking_steps) + len(inp.response_steps)
        work = _Work(slot, item.id, num_steps, parts, _trace_extra(item))
        work.outputs = [None] * len(parts)
        works.append(work)
    encs = [((w, p), enc) for w, work in enumerate(works) for p, enc in enumerate(work.parts)]
    outputs = batcher.run(encs)
    for (w, p), out in outputs.items():
        works[w].outputs[p] = out
    for work in works:
        score = _merge(prm, work)
        results[work.slot] = score
        stats.traces += 1
        stats.steps += work.num_steps
        stats.tokens += sum(len(p.input_ids) for p in work.parts)
        stats.truncated += int(score.truncated)
        stats.windowed += int(len(work.parts) > 1)
    for r in results:
        if isinstance(r, BadRecord):
            stats.errors += 1
            if options.on_error != "skip":
                raise ScoreFailure(f"{r.source}:{r.line}: {r.error}")
    return results  # type: ignore[return-value]


def _as_traces(items: Iterable[Any]) -> Iterator[Trace | BadRecord]:
    for i, item in enumerate(items):
        if isinstance(item, (Trace, BadRecord)):
            yield item
        elif isinstance(item, PRMInput):
            yield Trace(id=str(i), problem=item.problem, response="", thinking_steps=item.thinking_steps,
                        steps=item.response_steps, thinking="" if item.thinking_steps else None)
        else:
            try:
                yield from parse_record(item, source="<input>", line=i + 1)
            except TraceError as exc:
                yield BadRecord("<input>", i + 1, str(exc))


def score_traces(prm: TransformerPRM, traces: Iterable[Any], options: ScoreOptions | None = None
                 ) -> Iterator[TraceScore]:
    """Library entry point: score ``Trace``s, raw record dicts or ``PRMInput``s, in order.

    With the default ``on_error="raise"`` the first unscorable trace raises :class:`ScoreFailure`;
    with ``"skip"`` it is left out (use :func:`score_stream` to see the rejected records too).
    """
    options = options or ScoreOptions()
    with torch.inference_mode():
        for chunk in score_stream(prm, _as_traces(traces), options):
            for r in chunk:
                if isinstance(r, TraceScore):
                    yield r
