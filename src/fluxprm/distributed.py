"""Scoring on a Ray cluster: Ray Data runs the job loop's chunks on an actor pool, one model per actor.

The driver (the ``fluxprm`` process) keeps everything :func:`fluxprm.jobs.run_job` owns — reading the inputs
with fluxprm's readers, chunking, the checkpoint and ``--resume``, the errors file, writing in input order —
and Ray Data replaces only "score this chunk":

- :class:`RayPool` is one streaming dataset for the pool's life: a read task yields the requests the driver
  puts on a Ray queue, ``map_batches`` runs each on one of a fixed pool of actors (``ActorPoolStrategy``,
  ``num_cpus``/``num_gpus`` per actor) that each loaded the model once, and ``preserve_order`` returns the
  replies in the order of the requests;
- :class:`ChunkPipeline` feeds it the job loop's chunks, a few ahead so that every actor stays busy;
- :class:`RemotePRM` is the model on that pool: the driver never loads it, the first request asks an actor
  for the facts a run's identity needs (name, dtype, trained segmentation, batching verdict).

A chunk is scored whole by the same ``Scorer.score_batch`` the single-process run calls, with the same
batching, so the files are byte-identical to a single-process run's, and a run interrupted on the cluster
resumes from the driver's checkpoint — on the cluster or not — like any other.

Why not ``ray.data.read_json``/``read_parquet``: fluxprm's readers turn a damaged line or row group into an
errors-file record with its file and line, expand Best-of-N pool records into one trace per candidate, read
JSON arrays and ``.gz`` files, keep integer ids exact, and give the deterministic order a verified resume
needs; Ray's readers do none of that, and reading is a vanishing share of a PRM job next to the forwards.
Reading on the driver also means the inputs need to exist only where the driver runs.

Ray is an optional extra (``pip install 'fluxprm[ray]'``) and is imported only when used; this module
imports neither Ray nor torch at import time.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import pickle
import socket
from collections import deque
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Iterator

from fluxprm.engine.options import ScoreOptions
from fluxprm.records import BadRecord

if TYPE_CHECKING:  # pragma: no cover
    from fluxprm.models.base import TransformerPRM

__all__ = ["ChunkPipeline", "DistributedError", "ModelSpec", "RayOptions", "RayPool", "RayUnavailable", "RemotePRM",
           "ScoreWorker", "WorkerError", "import_ray", "ray_flags_without_ray", "ray_session", "scoring_model"]

INSTALL_HINT = "pip install 'fluxprm[ray]'"


@dataclass
class RayOptions:
    """Where and how wide a distributed run is: the cluster and the actor pool (``fluxprm score --ray ...``)."""

    ray: bool = field(default=False, metadata={
        "help": f"Score on a Ray cluster with Ray Data: an actor pool of --workers model copies, writing the same "
                f"files as without --ray. Needs {INSTALL_HINT}."})
    address: str | None = field(default=None, metadata={
        "help": "Ray cluster to join (with --ray): HOST:PORT of a `ray start --head` node, ray://HOST:10001 for "
                "Ray Client, or 'local' for a new cluster on this machine.  [default: RAY_ADDRESS, else the "
                "cluster `ray start` started on this machine, else a new local one]"})
    workers: int = field(default=1, metadata={
        "help": "Actors scoring at once (with --ray), each holding one copy of the model.", "min": 1})
    gpus_per_worker: float = field(default=0.0, metadata={
        "help": "GPUs each actor reserves (with --ray; fractions share a GPU). 0 scores on CPUs.", "min": 0})
    cpus_per_worker: float = field(default=1.0, metadata={
        "help": "CPUs each actor reserves (with --ray); a CPU actor runs that many torch threads unless "
                "--threads says otherwise.", "min": 0})

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        for name in ("gpus_per_worker", "cpus_per_worker"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def threads(self) -> int:
        """Torch threads an actor uses by default: the CPUs it reserved (at least one)."""
        return max(1, int(self.cpus_per_worker))


def ray_flags_without_ray(cluster: RayOptions, explicit: dict[str, Any]) -> list[str]:
    """The cluster flags a command line gave (``explicit``: what :func:`fluxprm.cli.options.generated_options`
    says was typed) although ``--ray`` was not: they would be silently ignored, so commands refuse them."""
    if cluster.ray:
        return []
    return [f"--{f.name.replace('_', '-')}" for f in fields(RayOptions) if f.name != "ray" and f.name in explicit]


class RayUnavailable(RuntimeError):
    """Ray Data is not installed; the message says how to install it."""


class DistributedError(RuntimeError):
    """The cluster failed under a run (an actor could not start, a node was lost for good, ...)."""


def import_ray() -> Any:
    """``ray`` with ``ray.data`` loaded, or :class:`RayUnavailable` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra must bring Ray Data, not only Ray Core
    except ImportError as exc:
        raise RayUnavailable(f"--ray needs Ray Data, which is not installed ({exc.msg}): {INSTALL_HINT}") from None
    return ray


def _quiet_ray_data() -> None:
    """Ray Data logs each execution, and tips about its own progress bars, to the console; keep those in its
    log files (the session's ``logs/ray-data``) and show only errors: fluxprm reports progress itself."""
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """Connect to (or start) the cluster for the duration of the block; yields the ``ray`` module.

    A session the caller already opened (``ray.init`` before calling fluxprm) is used as it is and left
    open; one this function opens is shut down at the end (a local cluster it started stops with it).
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    problem = _unreachable(address)
    if problem:  # Ray itself would retry for minutes before giving up
        raise DistributedError(f"cannot reach the Ray cluster at {address} ({problem}); start its head node with "
                               "`ray start --head` and pass the address it prints")
    try:
        # Worker output stays in the session's log files: the driver's stderr is fluxprm's progress and summary.
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "RAY_ADDRESS / the local cluster"
        hint = ""
        if address and not os.environ.get("RAY_AUTH_MODE"):
            # Something answered, so the commonest cause is a cluster with token authentication (Ray's default for
            # clusters `ray.init` starts, and for `ray start` where a token exists) and a driver without it.
            hint = ("; if the cluster uses token authentication, set RAY_AUTH_MODE=token here too (the token comes "
                    "from RAY_AUTH_TOKEN or ~/.ray/auth_token)")
        raise DistributedError(f"cannot start or join the Ray cluster at {where}: {_first_line(exc)}{hint}") from None
    _quiet_ray_data()
    try:
        yield ray
    finally:
        ray.shutdown()


def _unreachable(address: str | None, timeout: float = 10.0) -> str | None:
    """Why nothing answers at a ``HOST:PORT`` or ``ray://HOST:PORT`` address (None when something does, or when
    the address is not of that form: ``local``, ``auto`` and others are Ray's to interpret)."""
    if not address or address in ("local", "auto"):
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _worker_resources(options: RayOptions) -> dict[str, float]:
    resources = {"num_cpus": options.cpus_per_worker}
    if options.gpus_per_worker:
        resources["num_gpus"] = options.gpus_per_worker
    return resources


class WorkerError(DistributedError):
    """A worker method raised: ``original`` is its exception (a model that cannot load, say)."""

    def __init__(self, original: BaseException):
        super().__init__(f"a Ray worker failed: {type(original).__name__}: {_first_line(original)}")
        self.original = original


# ------------------------------------------------------------------------------------------------ the pool


def _queue_datasource(queue: Any) -> Any:
    """A ``ray.data.Datasource`` whose one read task yields, as one-row blocks, the requests put on ``queue``
    (``(seq, (ref,))`` items, until ``None``)."""
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def metadata() -> Any:
        kwargs: dict[str, Any] = {"num_rows": None, "size_bytes": None, "input_files": None, "exec_stats": None}
        if "schema" in inspect.signature(BlockMetadata).parameters:  # older Ray kept the schema here
            kwargs["schema"] = None
        return BlockMetadata(**kwargs)

    def read() -> Iterator[Any]:
        import ray

        while (item := queue.get(block=True)) is not None:
            seq, (ref,) = item
            yield pa.table({"seq": pa.array([seq], pa.int64()), "request": pa.array([ray.get(ref)], pa.large_binary())})

    class RequestQueueDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        @property
        def supports_distributed_reads(self) -> bool:
            return False  # the read task runs on the driver's node, next to the queue's producer

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[Any]:
            return [ReadTask(read, metadata())]  # one task, so rows keep the order of the queue

    return RequestQueueDatasource()


class _PoolActor:
    """One actor of the pool: builds its worker once (loading the model), then runs one request per row.

    A request is ``(method, args)``; the reply is ``(True, value)`` or ``(False, exception)``, so an error in
    one request (or in building the worker) reaches the driver as the exception it is, and the pool lives on.
    """

    def __init__(self, make_worker: Callable[[], Any]):
        self.worker: Any = None
        self.failed: BaseException | None = None
        try:
            self.worker = make_worker()
        except Exception as exc:  # noqa: BLE001 - reported with every reply instead of killing the pool
            self.failed = exc

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        seqs = batch.column("seq").to_pylist()
        replies = []
        for blob in batch.column("request").to_pylist():
            if self.failed is not None:
                reply: tuple[bool, Any] = (False, self.failed)
            else:
                method, args = pickle.loads(blob)
                try:
                    reply = (True, getattr(self.worker, method)(*args))
                except Exception as exc:  # noqa: BLE001 - the driver decides what a failed request means
                    reply = (False, exc)
            replies.append(_dumps_reply(reply))
        return pa.table({"seq": pa.array(seqs, pa.int64()), "reply": pa.array(replies, pa.large_binary())})


def _dumps_reply(reply: tuple[bool, Any]) -> bytes:
    try:
        return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - an exception that cannot be pickled still says what it was
        return pickle.dumps((False, RuntimeError(f"{type(reply[1]).__name__}: {exc}")))


@contextlib.contextmanager
def _data_context(ray: Any) -> Iterator[None]:
    """The Ray Data settings the pool needs, restored afterwards (a caller's own datasets keep theirs)."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.target_max_block_size)
    ctx.execution_options.preserve_order = True   # replies in the order of the requests
    ctx.enable_progress_bars = False              # fluxprm shows progress in input records
    ctx.target_max_block_size = 1                 # emit every one-request row at once: never wait to fill a block
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.target_max_block_size = saved


def _rows(batches: Iterator[Any]) -> Iterator[dict[str, Any]]:
    """The rows of a stream of Arrow batches, as dicts."""
    for batch in batches:
        yield from batch.to_pylist()


class RayPool:
    """A Ray Data actor pool as an ordered stream: the driver submits requests, replies come back in that order.

    One streaming dataset runs for the pool's life: a read task yields the requests the driver queues, and
    ``map_batches`` runs each on one of ``options.workers`` actors (``ActorPoolStrategy``, with the CPUs and GPUs
    of ``options``), each of which called ``make_worker()`` once — loading the model once. Ray Data restarts
    an actor that dies and retries its request. A request is ``(method, args)`` on the worker. Needs an open
    :func:`ray_session`.
    """

    def __init__(self, make_worker: Callable[[], Any], options: RayOptions):
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            raise DistributedError("no Ray session: open one with fluxprm.distributed.ray_session(options)")
        from ray.util.queue import Queue

        self.options = options
        self._sent = self._received = 0
        self._context = contextlib.ExitStack()
        self._context.enter_context(_data_context(ray))
        self._queue: Any = Queue(actor_options={"num_cpus": 0})
        # One output block per request (never split into empty ones), and a read task that holds no CPU: it only
        # waits on the queue. Older Ray spells both differently.
        accepted = inspect.signature(ray.data.read_datasource).parameters
        read_args: dict[str, Any] = {"override_num_blocks" if "override_num_blocks" in accepted else "parallelism": 1}
        if "num_cpus" in accepted:
            read_args["num_cpus"] = 0
        else:
            read_args["ray_remote_args"] = {"num_cpus": 0}
        dataset = ray.data.read_datasource(_queue_datasource(self._queue), **read_args)
        dataset = dataset.map_batches(_PoolActor, fn_constructor_args=(make_worker,), batch_size=1,
                                      batch_format="pyarrow", zero_copy_batch=True,
                                      compute=ray.data.ActorPoolStrategy(size=options.workers),
                                      **_worker_resources(options))
        # prefetch_batches=0: a prefetching iterator holds each block back until the next one exists, and the
        # pool's last reply has no next one until the driver sends more.
        self._batches: Any = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
        self._replies: Iterator[dict[str, Any]] | None = _rows(self._batches)

    @property
    def pending(self) -> int:
        """Requests submitted whose replies have not been taken yet."""
        return self._sent - self._received

    def submit(self, method: str, *args: Any) -> None:
        if self._replies is None:
            raise DistributedError("the Ray pool is closed")
        ref = self._ray.put(pickle.dumps((method, args), protocol=pickle.HIGHEST_PROTOCOL))
        self._queue.put((self._sent, (ref,)))
        self._sent += 1

    def reply(self) -> Any:
        """The value of the oldest request not yet answered; :class:`WorkerError` if the worker raised."""
        if self._replies is None or not self.pending:
            raise DistributedError("no request is waiting for a reply")
        try:
            row = next(self._replies)
        except StopIteration:
            self.close()
            raise DistributedError("the Ray dataset ended while requests were waiting") from None
        except self._ray.exceptions.RayError as exc:
            self.close()
            raise DistributedError(f"the Ray cluster failed under the run ({_first_line(exc)})") from None
        if row["seq"] != self._received:
            self.close()
            raise DistributedError(f"internal error: reply {row['seq']} arrived for request {self._received}")
        self._received += 1
        ok, value = pickle.loads(row["reply"])
        if not ok:
            raise WorkerError(value)
        return value

    def call(self, method: str, *args: Any) -> Any:
        """One request, waited for (nothing else may be pending)."""
        if self.pending:
            raise DistributedError(f"{self.pending} requests are still waiting for replies")
        self.submit(method, *args)
        return self.reply()

    def close(self) -> None:
        """Stop the dataset, its actors and the queue (idempotent; the Ray session is the caller's)."""
        replies, self._replies = self._replies, None
        if replies is None:
            return
        with contextlib.suppress(Exception):
            self._queue.put(None)      # ends the read task, so the dataset finishes
        for stream in (replies, self._batches):  # closing Ray's iterator stops the executor and its actors
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]
        with contextlib.suppress(Exception):
            self._queue.shutdown(force=True)
        self._context.close()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ChunkPipeline:
    """The ``items`` and ``process`` of :func:`fluxprm.jobs.run_job` for a job whose chunks a :class:`RayPool` processes.

    The job loop reads ``items()`` in consecutive chunks of ``chunk_size`` (after skipping the items a resumed
    run already wrote) and calls ``process(chunk, start)`` for one chunk at a time. To keep every actor busy,
    ``process`` reads ahead: it submits the following chunks to the pool, and ``items()`` hands the job loop
    those same chunks afterwards. Each call returns its own chunk's results once they are back, so the job
    loop still writes, checkpoints and counts exactly as in one process. Every chunk handed to ``process`` is
    checked to be the one submitted for that position, so a change in how the loop chunks can never pair
    results with the wrong records.

    ``request(chunk, start)`` gives the ``(method, args)`` the pool runs for a chunk; ``unpack(reply)`` turns
    the reply into the chunk's results (one per item, in order).
    """

    def __init__(self, pool: RayPool, items: Callable[[], Iterator[Any]], chunk_size: int,
                 request: Callable[[list, int], tuple[str, tuple]], unpack: Callable[[Any], list]):
        if pool.pending:
            raise DistributedError(f"the Ray pool has {pool.pending} requests of another job still waiting")
        self.pool, self.chunk_size, self.request, self.unpack = pool, chunk_size, request, unpack
        self._make_items = items
        self.in_flight = 2 * pool.options.workers + 2  # one running and one waiting per actor, one to hand over
        self._source: Iterator[Any] | None = None
        self._ahead: deque[list[Any]] = deque()               # read ahead, not yet handed to the job loop
        self._submitted: deque[tuple[int, list[Any]]] = deque()  # submitted, results not yet taken
        self._next: int | None = None
        self._exhausted = False

    def items(self) -> Iterator[Any]:
        self._source = iter(self._make_items())
        return self._hand_over(self._source)

    def _hand_over(self, source: Iterator[Any]) -> Iterator[Any]:
        while True:
            if self._ahead:
                yield from self._ahead.popleft()
            elif self._exhausted:
                return
            else:
                try:
                    yield next(source)
                except StopIteration:
                    return

    def process(self, chunk: list[Any], start: int) -> list[Any]:
        if self._next is None:  # the first chunk came straight from the source: submit it, then read ahead
            self._next = start
            self._submit(chunk)
        self._read_ahead()
        position, submitted = self._submitted.popleft() if self._submitted else (None, [])
        if position != start or len(submitted) != len(chunk) or any(a is not b for a, b in zip(submitted, chunk)):
            raise RuntimeError(f"internal error: the job loop's chunk at {start} is not the chunk submitted at "
                               f"{position}")
        return self.unpack(self.pool.reply())

    def _submit(self, chunk: list[Any]) -> None:
        assert self._next is not None
        method, args = self.request(chunk, self._next)
        self.pool.submit(method, *args)
        self._submitted.append((self._next, chunk))
        self._next += len(chunk)

    def _read_ahead(self) -> None:
        assert self._source is not None
        while not self._exhausted and len(self._submitted) < self.in_flight:
            chunk = [item for _, item in zip(range(self.chunk_size), self._source)]
            if chunk:
                self._submit(chunk)
                self._ahead.append(chunk)
            self._exhausted = len(chunk) < self.chunk_size

    def finish(self) -> None:
        """After the job: a job that stopped early (``--on-error fail``, an error) leaves replies in the pool
        that no one will take, so the pool cannot serve another job and is closed."""
        if self.pool.pending:
            self.pool.close()


# ------------------------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class ModelSpec:
    """How to load the PRM (:func:`fluxprm.models.load_prm`'s arguments), so that each worker loads its own copy:
    weights are never shipped through the cluster, and a worker's own device decides the dtype."""

    model: str | None = None
    format: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_length: int | None = None
    aggregate: str | None = None
    alpha: float | None = None
    format_options: dict[str, Any] = field(default_factory=dict)  # system_prompt, separator, ... (see load_prm)

    @classmethod
    def of(cls, model: str | None, load_options: dict[str, Any]) -> ModelSpec:
        """The spec for ``load_prm(model, **load_options)``."""
        named = {f.name for f in fields(cls)} - {"model", "format_options"}
        given = {k: v for k, v in load_options.items() if v is not None}
        return cls(model, **{k: v for k, v in given.items() if k in named},
                   format_options={k: v for k, v in given.items() if k not in named})

    def load(self) -> TransformerPRM:
        from fluxprm.models import load_prm

        return load_prm(self.model, format=self.format, device=self.device, dtype=self.dtype,
                        max_length=self.max_length, aggregate=self.aggregate, alpha=self.alpha,
                        **self.format_options)


@contextlib.contextmanager
def scoring_model(model: str | None, load_options: dict[str, Any], cluster: RayOptions | None = None, *,
                  batching: str = "auto", threads: int | None = None) -> Iterator[TransformerPRM | RemotePRM]:
    """The model a scoring job runs on: ``load_prm(model, **load_options)`` here, or with ``cluster.ray`` an
    actor pool on the Ray cluster (joined for the block unless a session is open) — either one goes to
    :func:`fluxprm.score_job.run_score_job`. This is how a command that scores (``score``, and the scoring
    stage of ``select``, ``bon`` and ``eval``) takes ``--ray``. ``threads``: torch threads, here or per actor.
    """
    if cluster is None or not cluster.ray:
        from fluxprm.models import load_prm

        if threads:
            import torch

            torch.set_num_threads(threads)
        yield load_prm(model, **{k: v for k, v in load_options.items() if v is not None})
        return
    with ray_session(cluster), RemotePRM.load(ModelSpec.of(model, load_options), cluster, batching=batching,
                                              threads=threads) as prm:
        yield prm


@dataclass(frozen=True)
class ScoreWorker:
    """What each actor of a scoring pool builds once: the model, loaded from ``spec`` with ``threads`` torch threads."""

    spec: ModelSpec
    threads: int | None = None

    def __call__(self) -> _ScoreWorker:
        return _ScoreWorker(self.spec, self.threads)


class _ScoreWorker:
    """The model on one actor, and a ``Scorer`` per set of options (one per job, in practice)."""

    def __init__(self, spec: ModelSpec, threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.prm = spec.load()
        self.scorers: dict[bytes, Any] = {}

    def describe(self, batching: str) -> dict[str, Any]:
        """The model's facts a job's identity needs, and the batching verdict for this worker's set-up
        (``auto`` is measured here, where scoring happens, and cached on this node)."""
        from fluxprm.engine.batching import resolve_batching

        mode, how = resolve_batching(self.prm, batching)
        prm = self.prm
        return {"name": prm.name, "weights_id": prm.weights_id, "format": prm.format, "max_length": prm.max_length,
                "aggregate": prm.aggregate, "alpha": prm.alpha, "dtype": str(prm.dtype), "device": str(prm.device),
                "trained_steps": prm.trained_steps, "error_threshold": prm.error_threshold, "batching": mode,
                "batching_how": how, "setup": self.setup()}

    def score(self, options: ScoreOptions, chunk: list) -> tuple[list, dict[str, float], tuple[str, str]]:
        """A chunk scored as the single-process job scores it (``score_batch``, records as JSON dicts), the
        stats it added, and this actor's :meth:`setup`."""
        from fluxprm.engine.score import Scorer

        key = pickle.dumps(options)
        scorer = self.scorers.get(key)
        if scorer is None:
            scorer = self.scorers[key] = Scorer(self.prm, options)
        before = _counters(scorer.stats)
        results = [r if isinstance(r, BadRecord) else r.to_json() for r in scorer.score_batch(chunk)]
        return results, {k: v - before[k] for k, v in _counters(scorer.stats).items()}, self.setup()

    def setup(self) -> tuple[str, str]:
        """What makes this actor's numbers differ from another's: its dtype and device type."""
        return str(self.prm.dtype), self.prm.device.type


def _counters(stats: Any) -> dict[str, float]:
    """The numeric fields of a stats dataclass (what the driver adds up over chunks)."""
    return {f.name: getattr(stats, f.name) for f in fields(stats)
            if isinstance(getattr(stats, f.name), (int, float)) and not isinstance(getattr(stats, f.name), bool)}


@dataclass
class RemotePRM:
    """A PRM loaded by a pool of Ray actors, one copy each, and what the driver knows of it (no weights).

    It stands in for a :class:`~fluxprm.models.base.TransformerPRM` where a job needs the model's facts (the
    run's identity, its trained segmentation): :func:`fluxprm.score_job.run_score_job` given one scores on the
    pool. The pool stays up until :meth:`close` (or the ``with`` block ends), so several jobs reuse the loaded
    models. Build it with :meth:`load` inside :func:`ray_session`.
    """

    pool: RayPool
    name: str
    weights_id: str | None
    format: str
    max_length: int
    aggregate: str
    alpha: float
    dtype: str
    device: str
    trained_steps: dict[str, Any] | None
    error_threshold: float | None  # the first-error threshold the checkpoint records
    batching: str
    batching_how: str
    setup: tuple[str, str]   # (dtype, device type) of the actor that described the model; every actor must match

    @classmethod
    def load(cls, spec: ModelSpec, options: RayOptions, batching: str = "auto",
             threads: int | None = None) -> RemotePRM:
        """Start the pool (each actor loads the model) and ask one actor for the model's facts.

        A model the cluster cannot load raises the loader's own error (``ModelNotFound``, ``ValueError``), as
        ``load_prm`` would here. ``batching="auto"`` is measured on an actor, so every actor batches as the
        measured set-up does. ``threads``: torch threads per actor (default: ``options.cpus_per_worker`` on CPUs).
        """
        if threads is None and not options.gpus_per_worker:
            threads = options.threads
        pool = RayPool(ScoreWorker(spec, threads), options)
        try:
            facts = pool.call("describe", batching)
        except WorkerError as exc:
            pool.close()
            if isinstance(exc.original, Exception):
                raise exc.original from None
            raise
        except BaseException:
            pool.close()
            raise
        return cls(pool, **facts)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> RemotePRM:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
