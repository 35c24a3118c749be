"""``fluxprm score`` as a library call: files in, score and error files out, resumable, with progress."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from fluxprm.engine import ScoreOptions, Stats, resolve_batching, score_stream
from fluxprm.models.base import TraceScore, TransformerPRM
from fluxprm.outputs import JobResult, default_errors_path, fingerprint, open_sink, progress_exists
from fluxprm.records import BadRecord
from fluxprm.traces import FieldMap, iter_traces

__all__ = ["ScoreJobResult", "run_score_job", "count_records"]


@dataclass
class ScoreJobResult(JobResult):
    stats: Stats

    @property
    def tokens_per_s(self) -> float:
        return self.stats.tokens / self.seconds if self.seconds > 0 else 0.0


def count_records(paths: Sequence[str]) -> int | None:
    """Cheap record count for a progress total: newline count of plain JSONL inputs, else None."""
    total = 0
    for p in paths:
        if not p.endswith((".jsonl", ".ndjson")):
            return None
        with open(p, "rb") as f:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return total


def run_score_job(prm: TransformerPRM, inputs: Sequence[str], out: Path | None, errors: Path | None,
                  options: ScoreOptions, fields: FieldMap | None = None, resume: bool = False,
                  on_progress: Callable[[int], None] | None = None) -> ScoreJobResult:
    """Score every record of ``inputs``; each ends in ``out`` or in ``errors``, in input order.

    With ``out=None`` records go to stdout and rejected records to stderr (no resume possible).
    ``on_progress(n)`` is called after each chunk with the number of input items just finished.
    """
    for p in inputs:
        if not Path(p).exists():
            raise FileNotFoundError(f"input file not found: {p}")
    stats = Stats()
    started = time.perf_counter()
    if out is not None:
        errors = errors or default_errors_path(out)
    run_id = fingerprint(inputs, {"model": prm.name, "format": prm.format, "max_length": prm.max_length,
                                  "aggregate": prm.aggregate, "alpha": prm.alpha, "dtype": str(prm.dtype),
                                  "steps": asdict(options.steps), "long": options.long,
                                  "fields": asdict(fields) if fields else None})
    resuming = resume and progress_exists(out)
    batching, how = options.batching, "given"
    if batching == "auto" and not resuming:
        batching, how = resolve_batching(prm, "auto")
    sink = open_sink(out, errors, run_id, resume, meta={"batching": batching})
    if resuming and sink.meta.get("batching") in ("single", "padded"):
        # A resumed run batches exactly as the interrupted one did, so its bytes are identical.
        batching, how = sink.meta["batching"], "as the interrupted run"
    options = replace(options, batching=batching)
    if sink.complete:
        sink.close()
        return ScoreJobResult(stats, 0.0, out, errors, sink.done, already_complete=True)
    skipped = sink.done
    if on_progress and skipped:
        on_progress(skipped)
    items = itertools.islice(iter_traces(inputs, fields), skipped, None)
    try:
        with torch.inference_mode():
            for chunk in score_stream(prm, items, options, stats):
                recs, errs = _split(chunk)
                sink.write_chunk(recs, errs, len(chunk))
                if on_progress:
                    on_progress(len(chunk))
        sink.finish()
    finally:
        sink.close()
    stats.batching = f"{batching} ({how})"
    return ScoreJobResult(stats, time.perf_counter() - started, out, errors, skipped)


def _split(chunk: list[TraceScore | BadRecord]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    recs = [r.to_json() for r in chunk if isinstance(r, TraceScore)]
    errs = [r.to_json() for r in chunk if isinstance(r, BadRecord)]
    return recs, errs
