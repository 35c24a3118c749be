"""``fluxprm score`` as a library call: files in, score and error files out, resumable, with progress."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from fluxprm.distributed import ChunkPipeline, DistributedError, RemotePRM
from fluxprm.engine.options import ScoreOptions
from fluxprm.engine.stats import Stats
from fluxprm.jobs import JobResult, checkpoint_meta, run_job
from fluxprm.records import BadRecord
from fluxprm.steps import step_config_for
from fluxprm.traces import FieldMap, Trace, iter_traces

if TYPE_CHECKING:  # the scoring engine imports torch; a --ray driver (a RemotePRM) runs without it
    from fluxprm.models.base import TransformerPRM

__all__ = ["ScoreJobResult", "run_score_job"]


@dataclass
class ScoreJobResult(JobResult):
    @property
    def tokens_per_s(self) -> float:
        return self.stats.tokens / self.seconds if self.seconds > 0 else 0.0


def _chunk_detail(tell: Callable[[str], None]) -> Callable[[int, int], None]:
    """Forward-by-forward news of a chunk for the progress display (``chunk: 41% of 182,314 tokens``): records are
    counted when their chunk is written, and a chunk of 64 long traces takes minutes on a CPU, so the count alone
    stood still that long. Told only when the whole percentage changes (a GPU runs thousands of forwards a
    second)."""
    shown = -1

    def on_forward(done: int, total: int) -> None:
        nonlocal shown
        pct = 100 * done // total if total else 100
        if pct != shown:
            shown = pct
            tell(f"chunk: {pct}% of {total:,} tokens")

    return on_forward


def run_score_job(prm: TransformerPRM | RemotePRM, inputs: Sequence[str], out: Path | None, errors: Path | None,
                  options: ScoreOptions, fields: FieldMap | None = None, resume: bool = False,
                  on_progress: Callable[[int], None] | None = None) -> ScoreJobResult:
    """Score every record of ``inputs``; each ends in ``out`` or in ``errors``, in input order.

    With ``out=None`` records go to stdout and rejected records to stderr (no resume possible).
    ``on_progress(n)`` is called after each chunk with the number of input records just finished; when it has
    a ``detail(text)`` method (the CLI's progress display), that is told how far the chunk in hand has got.
    A resumed run batches exactly as the interrupted one did, so its bytes are identical.

    Given a :class:`~fluxprm.distributed.RemotePRM` (inside :func:`fluxprm.distributed.ray_session`), the
    chunks are scored on the Ray cluster by its actor pool; everything else — the files, their bytes, the
    checkpoint, resume — is this same job, so either kind of run can resume the other.
    """
    inputs = [str(p) for p in inputs]
    if options.steps is None:
        options = replace(options, steps=step_config_for(prm.trained_steps))
    identity = {"model": prm.name, "weights": prm.weights_id, "format": prm.format, "max_length": prm.max_length,
                "aggregate": prm.aggregate, "alpha": prm.alpha, "dtype": str(prm.dtype), "steps": asdict(options.steps),
                "long": options.long, "spans": options.spans, "fields": asdict(fields) if fields else None}
    earlier = checkpoint_meta(out, resume)
    batching, how = options.batching, "given"
    if earlier is not None and earlier.get("batching") in ("single", "padded"):
        batching, how = earlier["batching"], "as the interrupted run"
    elif batching == "auto" and isinstance(prm, RemotePRM):
        batching, how = prm.batching, f"{prm.batching_how} on a Ray worker"
    elif batching == "auto":
        from fluxprm.engine.batching import resolve_batching

        batching, how = resolve_batching(prm, "auto")
    stats = Stats()
    options = replace(options, batching=batching)

    def items() -> Iterator[Trace | BadRecord]:
        return iter_traces(inputs, fields)

    pipeline: ChunkPipeline | None = None
    if isinstance(prm, RemotePRM):
        def unpack(reply: tuple[list, dict[str, float], tuple[str, str]]) -> list:
            results, added, setup = reply
            if tuple(setup) != tuple(prm.setup):  # e.g. device auto on a cluster mixing GPU and CPU nodes
                raise DistributedError(f"an actor scores with {setup[0]} on {setup[1]} but the run's model was "
                                       f"described with {prm.setup[0]} on {prm.setup[1]}: the output would depend "
                                       "on which actor scored a chunk; pass --device and --dtype")
            for name, value in added.items():
                setattr(stats, name, getattr(stats, name) + value)
            return results

        pipeline = ChunkPipeline(prm.pool, items, options.chunk_size, lambda chunk, start: ("score", (options, chunk)),
                                 unpack)
        items, process = pipeline.items, pipeline.process  # type: ignore[assignment]
    else:
        from fluxprm.engine.score import Scorer

        scorer = Scorer(prm, options, stats)
        tell = getattr(on_progress, "detail", None)  # the CLI's display: what the chunk in hand is doing
        tell = tell if callable(tell) else None

        def process(chunk: list, start: int) -> list:
            on_forward = _chunk_detail(tell) if tell is not None else None
            results = scorer.score_batch(chunk, on_forward)
            if tell is not None:
                tell("")
            return [r if isinstance(r, BadRecord) else r.to_json() for r in results]

    try:
        job = run_job(inputs, out, errors, identity=identity, items=items, process=process,
                      chunk_size=options.chunk_size, stats=stats, resume=resume, on_error=options.on_error,
                      meta={"batching": batching, "error_threshold": prm.error_threshold},
                      on_progress=on_progress)
    finally:
        if pipeline is not None:
            pipeline.finish()
    stats.batching = f"{batching} ({how})"
    return ScoreJobResult(**vars(job))
