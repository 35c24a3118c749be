"""The on-disk generation cache, and the lookup-then-run loop every backend sends its prompts through.

Labelling a corpus makes tens of thousands of LLM calls; keying each result by sha256(model, prompt, params)
in one SQLite file makes a rerun or a resume after a crash cost nothing. Kept free of torch and HTTP so
either backend (and the label stages' own cached reads) can use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .base import GenParams, Prompt

__all__ = ["LLMCache", "cache_lookup", "cached_map", "default_cache_path"]


def default_cache_path() -> Path:
    """``llm-cache.sqlite`` in fluxprm's cache folder (``$FLUXPRM_CACHE``, else ``~/.cache/fluxprm``)."""
    from fluxprm.embedded import cache_dir

    return cache_dir() / "llm-cache.sqlite"


class LLMCache:
    """A SQLite file of generations. Thread-safe, usable by several processes at once, and WAL-journaled, so
    everything stored before a ``kill -9`` is still there afterwards.

    ``hits``/``misses`` count lookups made through this object.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a fresh connection after fork
            conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS generations ("
                "key TEXT PRIMARY KEY, model TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)"
            )
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    @staticmethod
    def key(model: str, prompt: Any, params: GenParams | dict) -> str:
        p = asdict(params) if isinstance(params, GenParams) else params
        blob = json.dumps([model, prompt, p], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._connect().execute("SELECT value FROM generations WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, model: str, value: Any) -> None:
        blob = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._connect().execute(
                "INSERT OR REPLACE INTO generations (key, model, value, created) VALUES (?, ?, ?, ?)",
                (key, model, blob, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"LLMCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"


def cache_lookup(
    cache: LLMCache | None, model: str, prompts: list[Prompt], params: GenParams
) -> tuple[list[Any | None], list[tuple[int, str | None]]]:
    """The cached result of each prompt (``None`` where there is none), and ``(index, key)`` of every prompt
    still to run (``key`` is ``None`` when there is no cache). Hits = ``len(prompts) - len(todo)``."""
    results: list[Any | None] = [None] * len(prompts)
    todo: list[tuple[int, str | None]] = []
    for i, prompt in enumerate(prompts):
        key = LLMCache.key(model, prompt, params) if cache is not None else None
        if key is not None and (hit := cache.get(key)) is not None:
            results[i] = hit
        else:
            todo.append((i, key))
    return results, todo


def cached_map(
    prompts: list[Prompt],
    params: GenParams,
    run: Callable[[Prompt, GenParams], list[str]],
    *,
    cache: LLMCache | None,
    model: str,
    workers: int = 1,
    count_hits: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Run ``run(prompt, params)`` for the prompts missing from ``cache`` (in ``workers`` threads), store
    each result as soon as it arrives (so a crash loses only calls in flight), and return all results in
    prompt order. ``count_hits`` is told how many prompts came from the cache, before anything runs."""
    results, todo = cache_lookup(cache, model, prompts, params)
    if count_hits is not None:
        count_hits(len(prompts) - len(todo))

    def one(i: int, key: str | None) -> None:
        out = run(prompts[i], params)
        results[i] = out
        if key is not None:
            cache.put(key, model, out)

    if len(todo) == 1 or workers == 1:
        for i, key in todo:
            one(i, key)
    elif todo:
        with ThreadPoolExecutor(min(workers, len(todo)), thread_name_prefix="fluxprm-llm") as ex:
            futures = [ex.submit(one, i, key) for i, key in todo]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    ex.shutdown(wait=True, cancel_futures=True)
                    raise f.exception()
    return results  # type: ignore[return-value]
