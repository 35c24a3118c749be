"""The one resumable job loop: input files → items → chunks → output and errors files, with progress.

``fluxprm score`` and ``fluxprm label`` (and every later command that streams records) are this loop plus
a function that turns a chunk of items into one result per item. The loop owns what every such
command must get right, once:

- **nothing lost**: every input item ends in the output or in the errors file, in input order;
- **resume**: output is checkpointed per chunk (:mod:`fluxprm.outputs`); ``resume=True`` continues an
  interrupted run of the same inputs and options and produces the same bytes;
- **failure**: with ``on_error="fail"`` (or the library's ``"raise"``) the run stops at the first bad
  item, after writing every result before it and the bad item itself to the errors file;
- **progress** in input *records* (a Best-of-N pool record is one record however many candidates it has);
- **a summary of what went wrong**: the commonest causes with counts, an example ``file:line`` each,
  and the flag most likely to fix it; and how many records repeat an earlier record's id (with examples),
  since a join by id would silently pair the wrong records (use the ``(source, line)`` join key instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import orjson

from fluxprm.outputs import default_errors_path, fingerprint, open_sink, progress_exists
from fluxprm.records import BadRecord, json_text

__all__ = ["CauseCounter", "JobFailure", "InputChanged", "JobResult", "ErrorCause", "InputNotAFile", "OutputPathError",
           "not_a_regular_file", "run_job", "checkpoint_meta", "check_inputs", "check_option_file", "check_outputs",
           "check_folder_outputs", "report_folder", "report_resumed"]

Item = Any  # a Trace or a BadRecord: anything with .source and .line
Result = dict[str, Any] | BadRecord


class JobFailure(RuntimeError):
    """``on_error`` is ``fail``/``raise`` and an item was rejected; the message is ``file:line: reason``."""


class InputChanged(JobFailure):
    """An input file was rewritten, truncated or appended to while the job read it: the output mixes its
    versions (or stops short of the new one), so the run is not finished and cannot be resumed."""


def _file_states(inputs: Sequence[str]) -> list[tuple[str, int, int]]:
    states = []
    for p in inputs:
        st = os.stat(p)
        states.append((p, st.st_size, st.st_mtime_ns))
    return states


def _check_unchanged(before: list[tuple[str, int, int]]) -> None:
    """Raise :class:`InputChanged` naming the first input whose size or mtime is not what it was at the start."""
    for (path, size, mtime), (_, now_size, now_mtime) in zip(before, _file_states([p for p, _, _ in before])):
        if (size, mtime) != (now_size, now_mtime):
            grew = f" ({size:,} → {now_size:,} bytes)" if size != now_size else " (modified)"
            raise InputChanged(f"{path} changed while it was being read{grew}: the output is incomplete and may mix "
                               "both versions; run again without --resume once the file is final")


@dataclass
class ErrorCause:
    """One kind of rejection: its message (numbers generalised), how often, the first example, a hint."""

    cause: str
    count: int
    example: str   # "file:line: full message" of the first record with this cause
    hint: str | None = None


@dataclass
class JobResult:
    """What a job reports: its command's stats, wall time, files, resume facts and record counts."""

    stats: Any
    seconds: float
    out: Path | None
    errors: Path | None
    skipped_done: int = 0          # input items an interrupted run had already written
    already_complete: bool = False
    records_in: int = 0            # input records read by this run (a pool record counts once)
    written: int = 0               # output records written by this run
    rejected: int = 0              # items sent to the errors file by this run
    error_causes: list[ErrorCause] = field(default_factory=list)  # commonest first
    duplicate_ids: int = 0         # records whose id an earlier record of this run already had
    duplicate_examples: list[str] = field(default_factory=list)  # "id (file:line, file:line)"

    @property
    def errors_written(self) -> bool:
        return self.errors is not None and self.errors.exists()


class InputNotAFile(ValueError):
    """An input that is not a regular file: stdin (``-``), a pipe (``<(zcat …)``, ``/dev/stdin``) or a device."""


_READ_TWICE = "fluxprm reads each input more than once (to count, resume, join), so save it to a file first"


def not_a_regular_file(label: str, path: str | Path) -> str:
    """The message for an existing path that is no regular file, given as ``label`` (``input``, ``--scores``)."""
    return f"{label} {path} is a pipe or a device, not a file: {_READ_TWICE}"


def check_inputs(inputs: Sequence[str]) -> None:
    """Every input exists and is a regular file; raises ``FileNotFoundError`` / ``IsADirectoryError`` /
    :class:`InputNotAFile` naming it. A pipe is refused, not read: the record count would drain it and the
    run would then find no records and write nothing, exit 0."""
    for p in inputs:
        path = Path(p)
        if p == "-" and not path.exists():
            raise InputNotAFile(f"input '-': stdin is not read: {_READ_TWICE}")
        if not path.exists():
            raise FileNotFoundError(f"input file not found: {p}")
        if path.is_dir():
            raise IsADirectoryError(f"input {p} is a directory; pass the files inside it")
        if not path.is_file():
            raise InputNotAFile(not_a_regular_file("input", p))


def check_option_file(flag: str, given: str | Path, what: str) -> None:
    """A file given to an option (``--scores``, ``--calibrate``) exists and is a regular file; raises
    ``IsADirectoryError`` / :class:`InputNotAFile` / ``FileNotFoundError`` naming the option and ``what`` it wants."""
    path = Path(given)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {given} is a directory; give {what}")
    if path.exists() and not path.is_file():
        raise InputNotAFile(not_a_regular_file(flag, given))
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {given}: no such file")


class OutputPathError(ValueError):
    """An output path that would destroy an input, is a directory, or cannot be written."""


def check_outputs(inputs: Sequence[str], out: Path | None, errors: Path | None, out_flag: str = "-o/--out") -> None:
    """Refuse an output or errors path that is an input (symlinks and other spellings included) or a directory,
    and any file the run writes beside them — the checkpoint and the temporary files renamed over the outputs
    and the checkpoint — that is an input or another of the run's files: replacing one of those would destroy
    an input, or the errors, without a word. Refuse too an output whose folder cannot be made or written (a
    file in its path, no permission): found only when the first record is written, or the first rejected one,
    it would cost the work done before. ``out_flag`` names the option ``out`` was given to."""
    if out is None:
        return
    checkpoint = out.with_name(out.name + ".progress.json")
    named: dict[str, Path | None] = {out_flag: out, "--errors": errors, "the checkpoint": checkpoint}
    written = {**named, "the temporary output": out.with_name(out.name + ".tmp"),
               "the temporary checkpoint": checkpoint.with_name(checkpoint.name + ".tmp")}
    if errors is not None:
        written["the temporary errors file"] = errors.with_name(errors.name + ".tmp")
    real_inputs = {os.path.realpath(p): p for p in inputs}
    for what, path in written.items():
        if path is None:
            continue
        real = os.path.realpath(path)
        same = real_inputs.get(real) or (next((p for p in inputs if _same(path, p)), None) if path.exists() else None)
        if same is not None:  # the same path, a symlink to it, or a hard link to the same file
            raise OutputPathError(f"{what} {path} is the input file {same}: writing it would destroy the input; "
                                  "choose another output path")
        if what in named and path.is_dir():
            raise OutputPathError(f"{what} {path} is a directory; give a file path")
        if what in named:
            _check_writable(what, path)
        if what in named and path.suffix == ".gz":  # it would be plain text under a name every reader takes for gzip
            raise OutputPathError(f"{what} {path}: outputs are plain JSONL (appended and resumed by byte offset), not "
                                  "gzip; drop the .gz and compress the finished file if you need to")
    if errors is not None:
        for what, path in written.items():
            if what != "--errors" and path is not None and os.path.realpath(errors) == os.path.realpath(path):
                raise OutputPathError(f"--errors {errors} is {what if what != out_flag else 'the output file'}; "
                                      "choose another path")


def _check_writable(what: str, path: Path, folder: bool = False) -> None:
    """Refuse the file (or, ``folder=True``, the folder) ``path`` when it cannot be made — a file stands in its
    path — or written."""
    if folder and path.is_dir():
        existing = path
    else:
        existing = path.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise OutputPathError(f"{what} {path}: {existing} is a file, not a folder; choose another path")
    if not folder and path.exists():
        existing = path
    if not os.access(existing, os.W_OK):
        raise OutputPathError(f"{what} {path}: cannot write {'it' if existing == path else f'in {existing}'} "
                              "(permission denied or a read-only file system)")


def check_folder_outputs(readable: Sequence[str], folder: Path, names: Sequence[str] | None, option: str = "-o"
                         ) -> None:
    """Refuse an output folder where the command's own files (``picks.jsonl``, ``metrics.json``, …, and their
    temporary names) would replace a file the command reads — an input, a ``--scores`` file, a config.
    ``names=None``: every file directly in the folder counts (a checkpoint, whose file names depend on the model).
    A folder that is a file, or cannot be made or written, is refused too."""
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{option} {folder} is a file; give a folder")
    _check_writable(option, folder, folder=True)
    here = os.path.realpath(folder)
    for given in readable:
        if names is None and os.path.dirname(os.path.realpath(given)) == here:
            raise OutputPathError(f"{option} {folder} holds {given}, which this command reads, and its files are "
                                  "written there; move that file out or choose another folder")
        for name in names or ():
            for candidate in (folder / name, folder / f"{name}.tmp"):
                if os.path.realpath(candidate) == os.path.realpath(given) or _same(candidate, given):
                    raise OutputPathError(f"{option} {folder}: its {name} would overwrite {given}, which this "
                                          "command reads; move that file out or choose another folder")


@contextlib.contextmanager
def report_folder(folder: Path) -> Iterator[Path]:
    """Make ``folder`` (and its missing parents) for a command's report files; if the command then fails,
    remove the folders it made that are still empty, so a refused run leaves no trace of itself.

    A folder that existed before, or that holds anything (a resumable scores file, an earlier report),
    is kept.
    """
    made: list[Path] = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        made.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for path in made:  # innermost first
            try:
                path.rmdir()
            except OSError:
                break  # not empty (or not ours any more): keep it and every parent
        raise


def _same(a: Path, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _dumps(record: dict[str, Any]) -> bytes:
    """One JSON line. orjson refuses lone surrogates (in a passed-through field, or a non-UTF-8 file name) and
    integers beyond 64 bits; ``json`` writes both exactly, so such a record is written, not rejected."""
    try:
        return orjson.dumps(record) + b"\n"
    except TypeError:
        return json_text(record, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def _dumps_error(bad: BadRecord) -> bytes:
    """An errors line that always serializes: text orjson refuses (lone surrogates) is written as ``\\uXXXX``
    escapes, so it reads back exactly."""
    try:
        return _dumps(bad.to_json())
    except (TypeError, ValueError):
        return json_text(bad.to_json(), default=str, separators=(",", ":")).encode("utf-8") + b"\n"


def _serialize(item: Item, result: Result) -> tuple[bytes | None, BadRecord | None]:
    """A result's output line, or the ``BadRecord`` that replaces a result that cannot be written."""
    if isinstance(result, BadRecord):
        return None, result
    try:
        return _dumps(result), None
    except (TypeError, ValueError) as exc:
        ident = result.get("id") if isinstance(result, dict) else None
        return None, BadRecord(item.source, item.line, f"cannot write this record ({exc})",
                               None if ident is None else str(ident))


def checkpoint_meta(out: Path | None, resume: bool) -> dict[str, Any] | None:
    """Run facts an interrupted run fixed at its start (``None`` when this run starts fresh)."""
    if not (resume and progress_exists(out)):
        return None
    import orjson

    try:
        data = orjson.loads(out.with_name(out.name + ".progress.json").read_bytes())  # type: ignore[union-attr]
        return dict(data.get("meta") or {})
    except (OSError, ValueError, AttributeError):
        return {}


_NUMBER = re.compile(r"\d+")


def _cause(message: str) -> str:
    """A rejection's kind: its message without the record-specific tail, numbers generalised."""
    return _NUMBER.sub("N", message.split(" (", 1)[0])


class _Duplicates:
    """Ids seen in this run, kept as 8-byte digests so a million records cost tens of megabytes, not gigabytes."""

    def __init__(self, examples: int = 3) -> None:
        self.first: dict[bytes, str] = {}
        self.count = 0
        self.examples: list[str] = []
        self.limit = examples

    def add(self, item: Item) -> None:
        ident = getattr(item, "id", None)
        if ident is None:
            return
        key = hashlib.blake2b(str(ident).encode("utf-8", "backslashreplace"), digest_size=8).digest()
        where = f"{item.source}:{item.line}"
        if key in self.first:
            self.count += 1
            if len(self.examples) < self.limit:
                self.examples.append(f"{ident!r} ({self.first[key]}, {where})")
        else:
            self.first[key] = where


class CauseCounter:
    """Counts rejections by kind, keeping the first example of each (shared by every command that rejects records).

    A kind is its message with every number generalised; a number that is the same in every message of the kind
    is shown as itself, so "targets must be in [0, 1]" stays readable while "step N of M is empty" generalises.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, BadRecord] = {}
        self.texts: dict[str, list[str]] = {}  # per kind: the text between its numbers
        self.numbers: dict[str, list[str | None]] = {}  # per kind: each number while it has not varied, else None

    def add(self, bad: BadRecord) -> None:
        key = _cause(bad.error)
        self.counts[key] += 1
        self.first.setdefault(key, bad)
        head = bad.error.split(" (", 1)[0]
        seen = _NUMBER.findall(head)
        if key not in self.numbers:
            self.texts[key], self.numbers[key] = _NUMBER.split(head), list(seen)
            return
        kept = self.numbers[key]
        for i, (was, now) in enumerate(zip(kept, seen)):
            if was != now:
                kept[i] = None

    def shown(self, key: str) -> str:
        """The kind as printed: its text, with each number that never varied and ``N`` for each that did."""
        texts, numbers = self.texts[key], self.numbers[key]
        return "".join(t + (("N" if n is None else n) if i < len(numbers) else "")
                       for i, (t, n) in enumerate(zip(texts, numbers + [None])))

    def summary(self, limit: int = 5) -> list[ErrorCause]:
        return [ErrorCause(self.shown(k), n, f"{self.first[k].source}:{self.first[k].line}: {self.first[k].error}",
                           self.first[k].hint) for k, n in self.counts.most_common(limit)]


def report_resumed(on_progress: Callable[[int], None], n: int) -> None:
    """Report ``n`` records an earlier run finished: ``on_progress.resumed(n)`` when the callback has that method
    (the CLI's progress display: counting them as this run's work would promise a finish far too early), else
    an ordinary ``on_progress(n)``, so any plain ``Callable[[int], None]`` still counts every record."""
    resumed = getattr(on_progress, "resumed", None)
    (resumed if callable(resumed) else on_progress)(n)


def run_job(inputs: Sequence[str], out: Path | None, errors: Path | None, *, identity: dict[str, Any],
            items: Callable[[], Iterator[Item]], process: Callable[[list[Item], int], list[Result]], chunk_size: int,
            stats: Any, resume: bool = False, on_error: str = "skip", meta: dict[str, Any] | None = None,
            on_progress: Callable[[int], None] | None = None) -> JobResult:
    """Run ``process`` over ``items()`` in chunks; each item's result goes to ``out`` (dicts) or ``errors``.

    ``identity`` (the options that change the output) fingerprints the run for resume.
    ``process(chunk, start)`` gets a chunk and the run-wide index of its first item (stable across
    resumes, for seeding) and returns exactly one result per item, in order. ``meta`` is stored in the checkpoint of a new run
    (read it back with :func:`checkpoint_meta`). With ``out=None`` results go to stdout and errors to
    stderr. ``on_progress(n)`` is called with the number of input records just finished; the records a
    resumed run skips are reported first, through :func:`report_resumed`.
    """
    inputs = [str(p) for p in inputs]
    check_inputs(inputs)
    started = time.perf_counter()
    if out is not None:
        errors = errors or default_errors_path(out)
    check_outputs(inputs, out, errors)
    states = _file_states(inputs)
    sink = open_sink(out, errors, fingerprint(inputs, identity), resume, meta)
    result = JobResult(stats, 0.0, out, errors, sink.done)
    if sink.complete:
        sink.close()
        result.already_complete = True
        return result
    causes = CauseCounter()
    duplicates = _Duplicates()
    stream = items()
    last_key: tuple[str, int] | None = None

    def new_records(chunk: list[Item]) -> int:
        nonlocal last_key
        n = 0
        for item in chunk:
            key = (item.source, item.line)
            if key != last_key:
                n, last_key = n + 1, key
        return n

    position = sink.done
    try:
        if sink.done:
            skipped = [item for _, item in zip(range(sink.done), stream)]
            if on_progress:
                report_resumed(on_progress, new_records(skipped))
        while chunk := [item for _, item in zip(range(chunk_size), stream)]:
            fresh = new_records(chunk)
            result.records_in += fresh
            for item in chunk:
                duplicates.add(item)
            results = process(chunk, position)
            position += len(chunk)
            if len(results) != len(chunk):
                raise RuntimeError(f"internal error: {len(results)} results for {len(chunk)} items")
            stop = next((i for i, r in enumerate(results) if isinstance(r, BadRecord)), None) \
                if on_error in ("fail", "raise") else None
            kept = results if stop is None else results[:stop + 1]
            recs: list[bytes] = []
            errs: list[BadRecord] = []
            for item, res in zip(chunk, kept):
                line, bad = _serialize(item, res)
                if line is not None:
                    recs.append(line)
                else:
                    errs.append(bad)  # type: ignore[arg-type]
            sink.write_lines(recs, [_dumps_error(e) for e in errs], len(kept))
            result.written += len(recs)
            result.rejected += len(errs)
            for e in errs:
                causes.add(e)
            if stop is not None:
                bad = results[stop]
                raise JobFailure(f"{bad.source}:{bad.line}: {bad.error}")
            _check_unchanged(states)  # each chunk: a rewritten input stops the run before more is mixed in
            if on_progress:
                on_progress(fresh)
        _check_unchanged(states)  # a file emptied before the first chunk was read is caught here
        sink.finish()
    finally:
        sink.close()
        result.seconds = time.perf_counter() - started
        result.error_causes = causes.summary()
        result.duplicate_ids, result.duplicate_examples = duplicates.count, duplicates.examples
    return result
