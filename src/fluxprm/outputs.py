"""Crash-safe, resumable JSONL output: results file + errors file + a progress checkpoint.

A run writes results chunk by chunk. After each chunk both files are flushed and fsynced, then a
small checkpoint ``OUT.progress.json`` is replaced atomically (write a temp file, ``os.replace``). It
records how many input items are done and the byte length and SHA-256 of each file at that moment.
Resuming first verifies that each file still starts with exactly those bytes (a file truncated,
deleted or overwritten since is refused with a clear message, never padded or appended to), then
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
from typing import Any, Callable, Iterable, TypeVar

import orjson

__all__ = ["check_resumable", "completed_run_meta", "ResumableWriter", "ResumeMismatch", "StdoutSink",
           "default_errors_path", "fingerprint", "open_sink", "progress_exists", "resume_or_restart"]

_VERSION = 2


def default_errors_path(out: Path) -> Path:
    """``scores.jsonl`` → ``scores.errors.jsonl``: the rejected records sit beside the output."""
    name = out.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
    return out.with_name(name + ".errors.jsonl")


class ResumeMismatch(RuntimeError):
    """``--resume`` was asked for a run whose inputs or options differ from the checkpoint's."""


def fingerprint(inputs: Iterable[str], options: dict[str, Any]) -> str:
    """Identity of a run: input paths with their sizes and mtimes, plus the options that change output.

    A path counts as spelled: records carry their input path as given (``source``), so resuming ``./a.jsonl``
    into a run of ``a.jsonl`` would write both spellings into one file, which no uninterrupted run does."""
    h = hashlib.sha256()
    for p in inputs:
        st = os.stat(p)
        h.update(os.fsencode(f"{p}|{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n"))  # any file name
    h.update(orjson.dumps(options, option=orjson.OPT_SORT_KEYS, default=str))
    return h.hexdigest()[:32]


@dataclass
class _State:
    done: int = 0
    out_bytes: int = 0
    err_bytes: int = 0
    out_sha: str | None = None  # sha256 of the output's first out_bytes bytes (None in version-1 checkpoints)
    err_sha: str | None = None
    complete: bool = False
    meta: dict[str, Any] | None = None


def check_resumable(out: Path, errors: Path | None) -> None:
    """Refuse a ``--resume`` that cannot succeed (a damaged checkpoint, outputs changed since) before any work.

    The same checks as opening the writer, except the run's identity, which needs the model and the options;
    a command calls this first so that a refusal costs no model load and shows no progress bar.
    """
    progress = out.with_name(out.name + ".progress.json")
    if progress.exists() or progress.is_symlink():
        state = _read_checkpoint(progress, None)
        _verified_prefix(out, state.out_bytes, state.out_sha, "results")
        if errors is not None:
            _verified_prefix(errors, state.err_bytes, state.err_sha, "errors")
    elif out.is_file() and out.stat().st_size > 0:
        raise ResumeMismatch(f"--resume: {out} exists but has no checkpoint ({progress.name}), "
                             "so what it holds cannot be verified; rerun without --resume to overwrite it")


def completed_run_meta(out: Path) -> dict[str, Any] | None:
    """The run facts (``meta``) of the complete run that wrote ``out``, if its checkpoint says the run finished and
    ``out`` is still exactly the bytes it recorded (size and SHA-256); else None. How a later command learns
    something about a file's making that its records do not carry (``fluxprm score``: the model's recorded
    first-error threshold), without trusting a checkpoint that belongs to another file."""
    progress = out.with_name(out.name + ".progress.json")
    try:
        state = _read_checkpoint(progress, None)
        if not state.complete or not out.is_file() or out.stat().st_size != state.out_bytes or state.out_sha is None:
            return None
        _verified_prefix(out, state.out_bytes, state.out_sha, "results")
    except (ResumeMismatch, OSError):
        return None
    return dict(state.meta or {})


def _read_checkpoint(path: Path, run_id: str | None) -> _State:
    """The checkpoint of an interrupted run, validated field by field; any damage is a clear ``ResumeMismatch``."""
    again = "; rerun without --resume to start over"
    if path.is_dir():
        raise ResumeMismatch(f"{path} is a directory, not a checkpoint{again}")
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ResumeMismatch(f"{path}: unreadable checkpoint ({exc}){again}") from exc
    if not isinstance(data, dict):
        raise ResumeMismatch(f"{path}: not a checkpoint (expected a JSON object){again}")
    if run_id is not None and data.get("run") != run_id:
        raise ResumeMismatch(f"{path}: the inputs, the model or the options differ from the interrupted run (an "
                             "input or a model folder is identified by its files' paths as given, sizes and "
                             f"modification times: a rewritten file is a new one even with the same bytes){again}")
    for key in ("done", "out_bytes", "err_bytes"):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ResumeMismatch(f"{path}: field '{key}' must be a whole number >= 0, got {value!r}{again}")
    for key in ("out_sha", "err_sha"):
        if data.get(key) is not None and not isinstance(data.get(key), str):
            raise ResumeMismatch(f"{path}: field '{key}' must be a string{again}")
    meta = data.get("meta")
    return _State(data["done"], data["out_bytes"], data["err_bytes"], data.get("out_sha"), data.get("err_sha"),
                  bool(data.get("complete", False)), meta if isinstance(meta, dict) else None)


def _verified_prefix(path: Path, size: int, sha: str | None, what: str) -> "hashlib._Hash":
    """Check that ``path`` still starts with the ``size`` bytes the interrupted run wrote; return their running hash.

    A file shorter than its checkpoint was truncated or deleted after the run; one whose prefix hashes
    differently was overwritten. Appending to either would write past a hole or onto garbage.
    """
    again = "; rerun without --resume to start over"
    h = hashlib.sha256()
    if size == 0:
        return h
    actual = path.stat().st_size if path.is_file() else -1
    if actual < size:
        state = "is missing" if actual < 0 else f"has {actual} bytes"
        raise ResumeMismatch(f"{path} {state}, but the interrupted run had written {size} bytes of {what} to it: "
                             f"it was truncated, deleted or replaced{again}")
    with open(path, "rb") as f:
        left = size
        while left:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            h.update(block)
            left -= len(block)
    if sha is not None and h.hexdigest() != sha:
        raise ResumeMismatch(f"{path}: its first {size} bytes differ from what the interrupted run wrote "
                             f"(the file was changed){again}")
    return h


class ResumableWriter:
    """Appends JSON lines to ``out`` (and rejected records to ``errors``) with checkpoints for resume."""

    def __init__(self, out: Path, errors: Path | None, run_id: str, resume: bool,
                 meta: dict[str, Any] | None = None):
        self.out_path, self.err_path, self.run_id = Path(out), Path(errors) if errors else None, run_id
        self.progress_path = self.out_path.with_name(self.out_path.name + ".progress.json")
        self.state = _State()
        resuming = resume and (self.progress_path.exists() or self.progress_path.is_symlink())
        if resuming:
            self.state = _read_checkpoint(self.progress_path, run_id)
        elif resume:
            check_resumable(self.out_path, self.err_path)  # no checkpoint: refuses an output it cannot verify
        if self.state.meta is None:
            self.state.meta = dict(meta or {})
        self._out_hash = _verified_prefix(self.out_path, self.state.out_bytes, self.state.out_sha, "results")
        self._err_hash = _verified_prefix(self.err_path, self.state.err_bytes, self.state.err_sha, "errors") \
            if self.err_path is not None else hashlib.sha256()
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._out = self._open(self.out_path, self.state.out_bytes)
        # The errors file is created on its first line (a clean run leaves none); a resumed run trims it now,
        # a fresh run removes the one an earlier run left (it was truncated to nothing before, same effect).
        if self.err_path is not None and not self.state.err_bytes and self.err_path.is_file():
            self.err_path.unlink()
        self._err = self._open(self.err_path, self.state.err_bytes) if self.err_path and self.state.err_bytes else None
        if not resuming:
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

    def write_lines(self, records: list[bytes], errors: list[bytes], items: int) -> None:
        """Write one chunk's serialized lines, make them durable, then advance the checkpoint by ``items``."""
        if records:
            block = b"".join(records)
            self._out.write(block)
            self._out_hash.update(block)
        if errors and self.err_path is not None:
            if self._err is None:
                self._err = self._open(self.err_path, 0)
            block = b"".join(errors)
            self._err.write(block)
            self._err_hash.update(block)
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
                "out_sha": self._out_hash.hexdigest(), "err_sha": self._err_hash.hexdigest(),
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

    def write_lines(self, records: list[bytes], errors: list[bytes], items: int) -> None:
        sys.stdout.buffer.write(b"".join(records))
        sys.stdout.flush()
        sys.stderr.buffer.write(b"".join(errors))
        sys.stderr.flush()

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def progress_exists(out: Path | None) -> bool:
    """Whether ``out`` has a checkpoint a ``--resume`` would continue from."""
    return out is not None and out.with_name(out.name + ".progress.json").exists()


T = TypeVar("T")


def resume_or_restart(out: Path, run: Callable[[bool], T], on_status: Callable[[str], None] | None = None) -> T:
    """``run(resume)`` for an output a command keeps for itself between runs (eval's score cache): continue what
    an earlier run left in ``out`` when that run was this one, else start over (``run(False)``, after saying
    so through ``on_status``). Nobody asked to continue, so unlike ``--resume`` a mismatch — other inputs, model or
    options, or a damaged checkpoint — is no error. :class:`ResumeMismatch` is raised as the writer opens,
    before anything is scored or written, so the first attempt leaves nothing behind."""
    resume = out.exists()
    try:
        return run(resume)
    except ResumeMismatch:
        if not resume:
            raise
        if on_status is not None:
            on_status(f"{out} was left by another run (other inputs, model or options) or is damaged; starting afresh")
        return run(False)


def open_sink(out: Path | None, errors: Path | None, run_id: str, resume: bool,
              meta: dict[str, Any] | None = None) -> ResumableWriter | StdoutSink:
    """A resumable file writer for ``out`` and ``errors``, or stdout when there is no ``out``."""
    if out is None:
        return StdoutSink()
    return ResumableWriter(out, errors, run_id, resume, meta)
