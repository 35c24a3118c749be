"""Crash-safe, resumable JSONL output: results file + errors file + a progress checkpoint.

A run writes results chunk by chunk. After each chunk both files are flushed and fsynced, then a
small checkpoint ``OUT.progress.json`` is replaced atomically (write a temp file, ``os.replace``). It
records how many input items are done and the byte length of each file at that moment. Resuming
truncates both files back to those lengths — dropping anything a ``kill -9`` left after the last
checkpoint, including a torn last line — and skips the done items. Scoring is deterministic, so
the resumed output equals an uninterrupted run byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import orjson

__all__ = ["ResumableWriter", "ResumeMismatch", "StdoutSink", "default_errors_path", "fingerprint", "open_sink",
           "progress_exists"]

_VERSION = 1


def default_errors_path(out: Path) -> Path:
    """``scores.jsonl`` → ``scores.errors.jsonl``: the rejected records sit beside the output."""
    name = out.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
    return out.with_name(name + ".errors.jsonl")


class ResumeMismatch(RuntimeError):
    """``--resume`` was asked for a run whose inputs or options differ from the checkpoint's."""


def fingerprint(inputs: Iterable[str], options: dict[str, Any]) -> str:
    """Identity of a run: input paths with their sizes and mtimes, plus the options that change output."""
    h = hashlib.sha256()
    for p in inputs:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(orjson.dumps(options, option=orjson.OPT_SORT_KEYS, default=str))
    return h.hexdigest()[:32]


@dataclass
class _State:
    done: int = 0
    out_bytes: int = 0
    err_bytes: int = 0
    complete: bool = False
    meta: dict[str, Any] | None = None


class ResumableWriter:
    """Appends JSON lines to ``out`` (and rejected records to ``errors``) with checkpoints for resume."""

    def __init__(self, out: Path, errors: Path | None, run_id: str, resume: bool,
                 meta: dict[str, Any] | None = None):
        self.out_path, self.err_path, self.run_id = Path(out), Path(errors) if errors else None, run_id
        self.progress_path = self.out_path.with_name(self.out_path.name + ".progress.json")
        self.state = _State()
        if resume and self.progress_path.exists():
            data = orjson.loads(self.progress_path.read_bytes())
            if data.get("run") != run_id:
                raise ResumeMismatch(
                    f"{self.progress_path}: the inputs or options differ from the interrupted run; "
                    "rerun without --resume to start over")
            self.state = _State(data["done"], data["out_bytes"], data["err_bytes"], data.get("complete", False),
                                data.get("meta"))
        if self.state.meta is None:
            self.state.meta = dict(meta or {})
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._out = self._open(self.out_path, self.state.out_bytes)
        # The errors file is created on its first line (a clean run leaves none); a resumed run trims it now,
        # a fresh run removes the one an earlier run left (it was truncated to nothing before, same effect).
        if self.err_path is not None and not self.state.err_bytes and self.err_path.is_file():
            self.err_path.unlink()
        self._err = self._open(self.err_path, self.state.err_bytes) if self.err_path and self.state.err_bytes else None
        if not resume or not self.progress_path.exists():
            self._checkpoint()

    @staticmethod
    def _open(path: Path, keep: int):
        """Open for appending after truncating to ``keep`` bytes (0 for a fresh run)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")
        f.truncate(keep)
        f.seek(keep)
        return f

    @property
    def done(self) -> int:
        """Input items already written by an earlier run (to be skipped)."""
        return self.state.done

    @property
    def meta(self) -> dict[str, Any]:
        """Run facts fixed at the start (e.g. the batching chosen), reused when resuming."""
        return self.state.meta or {}

    @property
    def complete(self) -> bool:
        return self.state.complete

    def write_chunk(self, records: list[dict[str, Any]], errors: list[dict[str, Any]], items: int) -> None:
        """Write one chunk's lines, make them durable, then advance the checkpoint by ``items``."""
        if records:
            self._out.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        if errors and self.err_path is not None:
            if self._err is None:
                self._err = self._open(self.err_path, 0)
            self._err.write(b"".join(orjson.dumps(e) + b"\n" for e in errors))
        for f in (self._out, self._err):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
        self.state.done += items
        self.state.out_bytes = self._out.tell()
        self.state.err_bytes = self._err.tell() if self._err else 0
        self._checkpoint()

    def finish(self) -> None:
        """Mark the run complete."""
        self.state.complete = True
        self._checkpoint()
        self.close()

    def close(self) -> None:
        for f in (self._out, self._err):
            if f is not None and not f.closed:
                f.close()

    def _checkpoint(self) -> None:
        data = {"version": _VERSION, "run": self.run_id, "done": self.state.done,
                "out_bytes": self.state.out_bytes, "err_bytes": self.state.err_bytes,
                "complete": self.state.complete, "meta": self.state.meta}
        tmp = self.progress_path.with_name(self.progress_path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.progress_path)


class StdoutSink:
    """Where records go without ``-o``: scores to stdout, rejected records to stderr; nothing to resume."""

    done = 0
    complete = False
    meta: dict[str, Any] = {}

    def write_chunk(self, records: list[dict[str, Any]], errors: list[dict[str, Any]], items: int) -> None:
        sys.stdout.buffer.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        sys.stdout.flush()
        for e in errors:
            sys.stderr.write(orjson.dumps(e).decode() + "\n")

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def progress_exists(out: Path | None) -> bool:
    """Whether ``out`` has a checkpoint a ``--resume`` would continue from."""
    return out is not None and out.with_name(out.name + ".progress.json").exists()


def open_sink(out: Path | None, errors: Path | None, run_id: str, resume: bool,
              meta: dict[str, Any] | None = None) -> ResumableWriter | StdoutSink:
    """A resumable file writer for ``out`` and ``errors``, or stdout when there is no ``out``."""
    if out is None:
        return StdoutSink()
    return ResumableWriter(out, errors, run_id, resume, meta)
