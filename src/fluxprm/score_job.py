"""``fluxprm score`` as a library call: files in, score and error files out, resumable, with progress."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from fluxprm.engine.batching import resolve_batching
from fluxprm.engine.options import ScoreOptions
from fluxprm.engine.score import Scorer, Stats
from fluxprm.jobs import JobResult, checkpoint_meta, run_job
from fluxprm.models.base import TransformerPRM
from fluxprm.records import BadRecord
from fluxprm.steps import step_config_for
from fluxprm.traces import FieldMap, iter_traces

__all__ = ["ScoreJobResult", "run_score_job"]


@dataclass
class ScoreJobResult(JobResult):
    @property
    def tokens_per_s(self) -> float:
        return self.stats.tokens / self.seconds if self.seconds > 0 else 0.0


def run_score_job(prm: TransformerPRM, inputs: Sequence[str], out: Path | None, errors: Path | None,
                  options: ScoreOptions, fields: FieldMap | None = None, resume: bool = False,
                  on_progress: Callable[[int], None] | None = None) -> ScoreJobResult:
    """Score every record of ``inputs``; each ends in ``out`` or in ``errors``, in input order.

    With ``out=None`` records go to stdout and rejected records to stderr (no resume possible).
    ``on_progress(n)`` is called after each chunk with the number of input records just finished.
    A resumed run batches exactly as the interrupted one did, so its bytes are identical.
    """
    inputs = [str(p) for p in inputs]
    if options.steps is None:
        options = replace(options, steps=step_config_for(prm.trained_steps))
    identity = {"model": prm.name, "format": prm.format, "max_length": prm.max_length, "aggregate": prm.aggregate,
                "alpha": prm.alpha, "dtype": str(prm.dtype), "steps": asdict(options.steps), "long": options.long,
                "spans": options.spans, "fields": asdict(fields) if fields else None}
    earlier = checkpoint_meta(out, resume)
    batching, how = options.batching, "given"
    if earlier is not None and earlier.get("batching") in ("single", "padded"):
        batching, how = earlier["batching"], "as the interrupted run"
    elif batching == "auto":
        batching, how = resolve_batching(prm, "auto")
    stats = Stats()
    scorer = Scorer(prm, replace(options, batching=batching), stats)

    def process(chunk: list, start: int) -> list:
        return [r if isinstance(r, BadRecord) else r.to_json() for r in scorer.score_batch(chunk)]

    job = run_job(inputs, out, errors, identity=identity, items=lambda: iter_traces(inputs, fields), process=process,
                  chunk_size=options.chunk_size, stats=stats, resume=resume, on_error=options.on_error,
                  meta={"batching": batching}, on_progress=on_progress)
    stats.batching = f"{batching} ({how})"
    return ScoreJobResult(**vars(job))
