"""``fluxprm label --ray``: the chunks of a label job on a Ray Data actor pool, one :class:`Labeler` per actor.

The driver keeps what :func:`fluxprm.jobs.run_job` owns (reading, chunking, order, checkpoint, resume, the
errors file), exactly as ``fluxprm score --ray`` does (:mod:`fluxprm.distributed`); each actor builds its own
``Labeler(config)`` once, so the encoder, the judge and the policy load on the actor and are never shipped.

The coherence negative pool is run-wide (:class:`~fluxprm.labels.coherence.NegativePool`): its texts are
collected on the driver (a cheap parse-and-segment pass, as in one process), ONE actor embeds them before
the first chunk is submitted, and the embedded pool (owners and vectors, no texts) goes with every chunk
request. Shipping it per request rather than caching it on actors by digest keeps actors stateless: Ray Data
restarts a lost actor and retries its request, and the retried request still carries everything the chunk
needs. The cost is measured in docs/DISTRIBUTED.md (about 10 ms per chunk for the default 4,096-step pool,
next to seconds of judging).

This module does not import :mod:`fluxprm.labels.pipeline` (which imports it): the pipeline hands it a
picklable ``make_labeler`` (``functools.partial(Labeler, config)``), which the actor calls.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

from fluxprm.distributed import (ChunkPipeline, DistributedError, RayOptions, RayPool, WorkerError, _counters,
                                 ray_session)
from fluxprm.labels.coherence import NegativePool, collect_negative_pool
from fluxprm.records import BadRecord
from fluxprm.traces import Trace

__all__ = ["LabelWorker", "RemoteLabeling"]

logger = logging.getLogger("fluxprm.labels.pipeline")  # warnings read as the single-process run's


@dataclass(frozen=True)
class LabelWorker:
    """What each actor of a label pool builds once: ``make_labeler()`` (a ``Labeler`` whose models load on the
    actor, on first use) with ``threads`` torch threads."""

    make_labeler: Callable[[], Any]
    threads: int | None = None

    def __call__(self) -> _LabelWorker:
        return _LabelWorker(self.make_labeler, self.threads)


class _LabelWorker:
    """One actor's ``Labeler``; every method is one pool request."""

    def __init__(self, make_labeler: Callable[[], Any], threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.labeler = make_labeler()

    def check_backends(self) -> tuple[list[str], str]:
        """Load the LLMs and ping the HTTP servers here, on the cluster (``ValueError`` naming the option as in
        one process); the warnings, and this actor's :meth:`setup`."""
        return self.labeler.check_backends(), self.setup()

    def embed_pool(self, pool: NegativePool) -> Any:
        """The pool's vectors, from this actor's encoder (one call over every text, as in one process)."""
        pool.embed(self.labeler.encoder)
        return pool.embeddings

    def label(self, pool: NegativePool | None, chunk: list, start: int) -> tuple[list, dict[str, float], str]:
        """A chunk labelled as the single-process job labels it, the stats it added, and this actor's setup."""
        labeler = self.labeler
        labeler.pool = pool
        before = _counters(labeler.stats)
        results = labeler.label_chunk(list(enumerate(chunk, start)))
        return results, {k: v - before[k] for k, v in _counters(labeler.stats).items()}, self.setup()

    def setup(self) -> str:
        """What makes this actor's numbers differ from another's: the device type its models run on."""
        from fluxprm.device import resolve_device

        return resolve_device(self.labeler.config.device).type


class RemoteLabeling:
    """The ``items`` and ``process`` of a label job whose chunks a Ray actor pool labels.

    Nothing touches the cluster until the job loop takes its first item (an output that is already complete
    starts no cluster); then the session opens (or an open one is used) and the pool's actors start. The first
    ``process`` call checks the backends on an actor and, with coherence on, builds the negative pool (texts
    here, vectors on an actor) before any chunk is submitted. ``stats`` (a ``LabelStats``) receives every
    chunk's counters. Use as a context manager: leaving it closes the pool and the session it opened.
    """

    def __init__(self, make_labeler: Callable[[], Any], config: Any, options: RayOptions,
                 source: Callable[[], Iterator[Trace | BadRecord]], stats: Any, threads: int | None = None):
        if threads is None and not options.gpus_per_worker:
            threads = options.threads
        self.worker, self.config, self.options, self.source, self.stats = (
            LabelWorker(make_labeler, threads), config, options, source, stats)
        self._stack = contextlib.ExitStack()
        self._pipeline: ChunkPipeline | None = None
        self._pool: NegativePool | None = None
        self._setup: str | None = None
        self._ready = False

    def items(self) -> Iterator[Trace | BadRecord]:
        """The job's items, through the pool's read-ahead. A generator: the cluster is joined at the first item,
        inside the job loop, so a cluster that cannot be reached ends the job like any other error."""
        self._stack.enter_context(ray_session(self.options))
        pool = self._stack.enter_context(RayPool(self.worker, self.options))
        self._pipeline = ChunkPipeline(pool, self.source, self.config.chunk_size,
                                       lambda chunk, start: ("label", (self._pool, chunk, start)), self._unpack)
        yield from self._pipeline.items()

    def process(self, chunk: list, start: int) -> list:
        assert self._pipeline is not None, "items() opens the pool"
        if not self._ready:
            self._prepare(self._pipeline.pool)
            self._ready = True
        # An actor's exception (an HTTP judge that keeps failing: LLMError) ends the job as it would in one process.
        return _original_errors(self._pipeline.process, chunk, start)

    def _prepare(self, pool: RayPool) -> None:
        warnings, self._setup = _original_errors(pool.call, "check_backends")
        for w in warnings:
            logger.warning(w)
        if self.config.coherence:
            started = time.perf_counter()
            negatives = collect_negative_pool(enumerate(self.source()), self.config)
            vectors = _original_errors(pool.call, "embed_pool", negatives)
            # Actors draw negatives from owners and vectors only; the texts stay here.
            self._pool = replace(negatives, texts=[], embeddings=vectors)
            self.stats.pool_steps = len(negatives)
            self.stats.pool_seconds += time.perf_counter() - started

    def _unpack(self, reply: tuple[list, dict[str, float], str]) -> list:
        results, added, setup = reply
        if setup != self._setup:  # e.g. --device auto on a cluster mixing GPU and CPU nodes
            raise DistributedError(f"an actor labels on {setup} but the first one on {self._setup}: the labels "
                                   "would depend on which actor labelled a chunk; pass --device")
        for name, value in added.items():
            setattr(self.stats, name, getattr(self.stats, name) + value)
        return results

    def close(self) -> None:
        """Close the pool (a job that stopped early leaves replies no one takes) and the session it opened."""
        if self._pipeline is not None:
            self._pipeline.finish()
        self._stack.close()

    def __enter__(self) -> RemoteLabeling:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _original_errors(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, raising a worker's own exception (``ValueError`` naming ``--judge``, say) as one process
    would, rather than a :class:`WorkerError` around it."""
    try:
        return call(*args)
    except WorkerError as exc:
        if isinstance(exc.original, Exception):
            raise exc.original from None
        raise
