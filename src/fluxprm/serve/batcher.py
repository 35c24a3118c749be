"""The dynamic batcher: requests from many clients coalesced into scoring calls on one model thread.

Every request becomes a *job* (its traces, an estimate of their tokens, a future). One worker thread owns the
model: whenever it is free it takes the queued jobs, oldest first, up to ``max_batch_tokens`` (at least one
job, so a large request runs alone), and hands all their traces to ONE ``score_batch`` call, where the engine
sorts them by length and pads them into forward batches. When the model is idle and the queue holds less than
a full batch, the worker waits up to ``max_wait_ms`` after the oldest job arrived for more to come. With
``dynamic=False`` every job is scored alone, in arrival order: the load benchmark's baseline, and what the app
chooses where the engine measured one trace per forward to be faster (``serve.app.coalescing``).

Why it holds under faults:

* **Bounded.** ``submit`` refuses a job that would put more than ``max_queue`` traces in the queue
  (:class:`Overloaded`, with a Retry-After estimated from the measured drain rate) instead of queueing
  without limit.
* **A client that leaves costs nothing and poisons nothing.** Its future is cancelled; the worker drops
  cancelled jobs when it forms a batch (``Future.set_running_or_notify_cancel``), and a job cancelled while
  its batch runs just has its results discarded.
* **One failure stays one failure.** ``score_batch`` never raises for a bad trace; if a coalesced call
  raises anyway (a bug, out of memory), each of its jobs is run again alone, so only the job that fails
  gets the error.
* **Every job is answered exactly once**: each future gets exactly one result, exception or cancellation,
  also at shutdown (``close(drain=True)`` finishes the queue; ``drain=False`` cancels what has not started).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["DynamicBatcher", "Overloaded", "Closed", "estimate_tokens", "BatcherStats"]

logger = logging.getLogger("fluxprm.serve")

CHARS_PER_TOKEN = 4  # BPE tokenizers give about 3.5–4.5 characters per token on English and LaTeX


def estimate_tokens(*texts: str | None) -> int:
    """A cheap token estimate (characters / 4) for queue accounting, made without touching the tokenizer."""
    return 1 + sum(len(t) for t in texts if t) // CHARS_PER_TOKEN


class Overloaded(RuntimeError):
    """The queue is full; ``retry_after`` (seconds) is when it will likely have room."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Closed(RuntimeError):
    """The batcher is shutting down and accepts no new jobs."""


@dataclass
class _Job:
    items: list[Any]
    tokens: int
    future: concurrent.futures.Future
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    """Counters for ``GET /health`` and the logs (a snapshot; mutate only under the batcher's lock)."""

    requests: int = 0          # jobs accepted
    rejected: int = 0          # jobs refused because the queue was full
    cancelled: int = 0         # jobs whose client left before their batch started
    failed: int = 0            # jobs answered with an exception
    batches: int = 0           # score_batch calls
    traces: int = 0            # traces scored
    max_batch_requests: int = 0
    waiting_requests: int = 0
    waiting_traces: int = 0
    running_requests: int = 0
    running_traces: int = 0
    tokens_per_s: float | None = None  # estimated tokens / model seconds (running average)


class DynamicBatcher:
    """Coalesces jobs into ``score(items)`` calls on one worker thread (see the module docstring)."""

    def __init__(self, score: Callable[[list[Any]], Sequence[Any]], *, dynamic: bool = True,
                 max_batch_tokens: int = 16384, max_wait_ms: float = 5.0, max_queue: int = 1024,
                 thread_name: str = "fluxprm-model"):
        self._score = score
        self.dynamic = dynamic
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_traces = 0
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._closing = False
        self._drain = True
        self._stats = BatcherStats()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------- clients

    def submit(self, items: list[Any], tokens: int) -> concurrent.futures.Future:
        """Queue a job; its future gets ``score(items)``'s results for exactly these items, in order.

        Raises :class:`Overloaded` when the queue has no room for ``len(items)`` more traces and
        :class:`Closed` during shutdown. An empty job is answered at once.
        """
        future: concurrent.futures.Future = concurrent.futures.Future()
        if not items:
            future.set_result([])
            return future
        with self._cond:
            if self._closing:
                raise Closed("the server is shutting down")
            if self._queued_traces + len(items) > self.max_queue:
                self._stats.rejected += 1
                raise Overloaded(f"the queue is full ({self._queued_traces} of {self.max_queue} traces waiting); "
                                 "retry later", self._retry_after_locked())
            self._queue.append(_Job(list(items), max(1, tokens), future))
            self._queued_traces += len(items)
            self._queued_tokens += max(1, tokens)
            self._stats.requests += 1
            self._cond.notify_all()
        return future

    async def score(self, items: list[Any], tokens: int) -> list[Any]:
        """``submit`` and await the results; cancelling the awaiting task cancels the job if it has not started."""
        future = self.submit(items, tokens)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.cancel(future)
            raise

    def cancel(self, future: concurrent.futures.Future) -> bool:
        """Withdraw a job whose client is gone; True if it had not started (its traces will not be scored)."""
        with self._cond:
            if not future.cancel():
                return False
            self._stats.cancelled += 1
            for job in self._queue:
                if job.future is future:  # free its room in the queue now
                    self._queue.remove(job)
                    self._queued_traces -= len(job.items)
                    self._queued_tokens -= job.tokens
                    break
            self._cond.notify_all()
        return True

    def stats(self) -> BatcherStats:
        with self._cond:
            s = BatcherStats(**vars(self._stats))
            s.waiting_requests = len(self._queue)
            s.waiting_traces = self._queued_traces
        return s

    def retry_after(self) -> int:
        with self._cond:
            return self._retry_after_locked()

    def _retry_after_locked(self) -> int:
        """Seconds until the queued work is likely done, from the measured rate (1–60)."""
        rate = self._stats.tokens_per_s
        if not rate:
            return 1
        return int(min(60, max(1, math.ceil(self._queued_tokens / rate))))

    # ------------------------------------------------------------------------------------------- shutdown

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting jobs; finish the queued ones (``drain``) or cancel them, then stop the worker."""
        with self._cond:
            self._closing = True
            self._drain = drain
            if not drain:
                while self._queue:
                    job = self._queue.popleft()
                    job.future.cancel()
                self._queued_traces = self._queued_tokens = 0
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------------------------------- worker

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._execute(batch)

    def _next_batch(self) -> list[_Job] | None:
        """The next jobs to score together ([] if all candidates were cancelled), or None to stop."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            if self.dynamic and not self._closing:
                deadline = self._queue[0].enqueued + self.max_wait
                while (self._queued_tokens < self.max_batch_tokens and not self._closing
                       and (remaining := deadline - time.monotonic()) > 0):
                    self._cond.wait(remaining)
            batch: list[_Job] = []
            tokens = 0
            while self._queue:
                job = self._queue[0]
                if batch and (not self.dynamic or tokens + job.tokens > self.max_batch_tokens):
                    break
                self._queue.popleft()
                self._queued_traces -= len(job.items)
                self._queued_tokens -= job.tokens
                if not job.future.set_running_or_notify_cancel():
                    continue  # its client left while it waited: drop it, score nothing for it
                batch.append(job)
                tokens += job.tokens
            self._stats.running_requests = len(batch)
            self._stats.running_traces = sum(len(j.items) for j in batch)
            return batch

    def _execute(self, batch: list[_Job]) -> None:
        items = [item for job in batch for item in job.items]
        start = time.monotonic()
        try:
            results = list(self._score(items))
            if len(results) != len(items):
                raise RuntimeError(f"scoring returned {len(results)} results for {len(items)} traces")
        except Exception as exc:  # noqa: BLE001 - isolate the failing job, answer the others
            if len(batch) > 1:
                logger.warning("a coalesced batch of %d requests failed (%s: %s); scoring them one by one",
                               len(batch), type(exc).__name__, exc)
                for job in batch:
                    self._execute_alone(job)
            else:
                self._fail(batch[0], exc)
            self._finish_batch()
            return
        elapsed = time.monotonic() - start
        pos = 0
        for job in batch:
            job.future.set_result(results[pos:pos + len(job.items)])
            pos += len(job.items)
        with self._cond:
            s = self._stats
            s.batches += 1
            s.traces += len(items)
            s.max_batch_requests = max(s.max_batch_requests, len(batch))
            tokens = sum(j.tokens for j in batch)
            if elapsed > 0:
                rate = tokens / elapsed
                s.tokens_per_s = rate if s.tokens_per_s is None else 0.8 * s.tokens_per_s + 0.2 * rate
        self._finish_batch()

    def _execute_alone(self, job: _Job) -> None:
        try:
            results = list(self._score(job.items))
            if len(results) != len(job.items):
                raise RuntimeError(f"scoring returned {len(results)} results for {len(job.items)} traces")
        except Exception as exc:  # noqa: BLE001
            self._fail(job, exc)
            return
        job.future.set_result(results)
        with self._cond:
            self._stats.batches += 1
            self._stats.traces += len(job.items)

    def _fail(self, job: _Job, exc: Exception) -> None:
        logger.error("scoring a request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        job.future.set_exception(exc)
        with self._cond:
            self._stats.failed += 1

    def _finish_batch(self) -> None:
        with self._cond:
            self._stats.running_requests = self._stats.running_traces = 0
