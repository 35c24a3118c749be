"""Read raw records from JSONL / JSON / Parquet files (optionally gzipped), one at a time.

Every reader here turns a file into a stream of :class:`RawRecord` (a decoded object with its
place in the file) or :class:`BadRecord` (what went wrong, and where). A damaged record never
stops the stream: scoring a million-line file must not die on line 999,999 because one line was
cut off, so record-level problems become ``BadRecord`` values the caller can count, log to the
errors file (``BadRecord.to_json`` is the DESIGN errors record) or turn into a failure.

Only *usage* errors raise: a path that does not exist raises :class:`FileNotFoundError` when
:func:`iter_records` is called, before anything is read.

Memory: JSONL is read line by line in binary and Parquet batch by batch, so memory is bounded by
the longest line / the Parquet row group, whatever the file size. A ``.json`` document is one
value and has to be read whole.

Line numbers (``line``, 1-based): the physical line for JSONL, the element index + 1 for a JSON
array, the row index + 1 for Parquet. ``line == 0`` marks a problem with the file as a whole (an
unreadable Parquet footer, a broken JSON document); it is still reported as a ``BadRecord`` so that
one bad file among many does not abort a run.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

__all__ = ["RawRecord", "BadRecord", "json_text", "iter_records", "iter_file", "detect_file_format", "FILE_FORMATS",
           "decode_json_line", "count_records"]

FILE_FORMATS = ("jsonl", "json", "parquet")

_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"
_READ_ERRORS = (OSError, EOFError, zlib.error)  # what a damaged or truncated (gzip) file raises
_PARQUET_BATCH_ROWS = 256  # rows per batch: traces can be ~100 KB each, so keep batches modest


@dataclass(slots=True)
class RawRecord:
    """One decoded record and where it came from."""

    source: str  # file path as given by the user
    line: int  # 1-based: JSONL line number; JSON array element index+1; Parquet row index+1
    data: Any  # the decoded record (normally a dict)


@dataclass(slots=True)
class BadRecord:
    """A record that could not be read or understood; it becomes one line of the errors file."""

    source: str
    line: int
    error: str  # human message naming the field/problem
    id: str | None = None  # record id if it could be read
    hint: str | None = None  # the flag or fix that would most likely make the record readable

    def to_json(self) -> dict:
        """The errors record: ``{"source", "line", "id", "error"}`` plus ``"hint"`` when there is one."""
        rec = {"source": self.source, "line": self.line, "id": self.id, "error": self.error}
        if self.hint:
            rec["hint"] = self.hint
        return rec


def json_text(value: Any, **dumps_options: Any) -> str:
    """``json.dumps`` for a UTF-8 file: non-ASCII text stays readable, except that a value holding a lone
    surrogate (``"\\ud800"`` is valid JSON input, but no UTF-8 can encode it) is written with ``\\uXXXX`` escapes,
    so it reads back exactly instead of failing the write half-way through a file."""
    text = json.dumps(value, ensure_ascii=False, **dumps_options)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, **dumps_options)
    return text


def iter_records(paths: Iterable[str | os.PathLike]) -> Iterator[RawRecord | BadRecord]:
    """Stream the records of every file in ``paths``, in order.

    All paths are checked up front, so a typo in the last of ten paths fails before any work is
    done: a missing file raises ``FileNotFoundError`` naming it (a usage error, not a record error).
    """
    path_list = [os.fspath(p) for p in paths]
    for p in path_list:
        if not os.path.exists(p):
            raise FileNotFoundError(2, "No such file or directory", p)
        if os.path.isdir(p):
            raise IsADirectoryError(21, "Is a directory (pass the files inside it)", p)
    return _iter_all(path_list)


def _iter_all(paths: list[str]) -> Iterator[RawRecord | BadRecord]:
    for p in paths:
        yield from iter_file(p)


def iter_file(path: str | os.PathLike, fmt: str | None = None) -> Iterator[RawRecord | BadRecord]:
    """Stream the records of one file; ``fmt`` (one of ``FILE_FORMATS``) skips format detection."""
    source = os.fspath(path)
    gzipped, fmt = detect_file_format(source) if fmt is None else (_is_gzip(source), fmt)
    if fmt == "parquet":
        return _iter_parquet(source, gzipped)
    if fmt == "json":
        return _iter_json(source, gzipped)
    return _iter_jsonl(source, gzipped)


# ----------------------------------------------------------------------------- format detection


def detect_file_format(path: str | os.PathLike) -> tuple[bool, str]:
    """Return ``(gzipped, format)`` for a file: by extension, else by sniffing its first bytes.

    Extensions: ``.jsonl``/``.ndjson``, ``.json``, ``.parquet`` (each optionally followed by
    ``.gz``). Anything else is sniffed: gzip magic → look inside; ``PAR1`` → Parquet; first
    non-space byte ``[`` → JSON array; otherwise JSONL.
    """
    name = os.fspath(path).lower()
    gzipped = name.endswith(".gz")
    stem = name[:-3] if gzipped else name
    fmt = _EXTENSIONS.get(os.path.splitext(stem)[1])
    if fmt is not None:
        return gzipped, fmt
    gzipped = _is_gzip(path)
    return gzipped, _sniff(path, gzipped)


def _is_gzip(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _sniff(path: str | os.PathLike, gzipped: bool) -> str:
    try:
        with _open(path, gzipped) as f:
            head = f.read(4096)
    except _READ_ERRORS:  # a broken gzip stream: let the JSONL reader report it
        return "jsonl"
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    head = head.removeprefix(_BOM).lstrip(_WHITESPACE)
    return "json" if head.startswith(b"[") else "jsonl"


def _open(path: str | os.PathLike, gzipped: bool) -> IO[bytes]:
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


# ----------------------------------------------------------------------------- JSON decoding


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def decode_json_line(raw: bytes) -> tuple[Any, str | None]:
    """Decode one JSON value from bytes: ``(value, None)`` or ``(None, error message)``.

    orjson does the work; the standard ``json`` module is only consulted when orjson refuses, both
    for a readable message ("Expecting ',' delimiter at column 17") and to accept what Python
    itself writes but orjson rejects (``NaN``, ``Infinity``).
    """
    if LONG_NUMBER.search(raw):
        # orjson turns integers beyond 64 bits into floats, so two ids 123…890 and 123…891 would collide;
        # the standard parser keeps every integer exact.
        return _decode_standard(raw)
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as fast_error:
        return _decode_standard(raw, fallback=str(fast_error))


LONG_NUMBER = re.compile(rb"\d{19}")  # 19+ digits: possibly an integer beyond 64 bits (orjson makes it a float)


def _decode_standard(raw: bytes, fallback: str | None = None) -> tuple[Any, str | None]:
    """Decode with the standard ``json`` module: exact big integers, ``NaN``, and readable error messages."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8: byte 0x{raw[e.start]:02x} at position {e.start}"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"invalid JSON: {_json_reason(e)} at column {e.colno}"
    except (ValueError, RecursionError) as e:
        return None, f"invalid JSON: {fallback or e}"


def _json_reason(e: json.JSONDecodeError) -> str:
    """The parser's reason without its own trailing "at": some reasons ("Unterminated string starting at",
    "Invalid control character at") are written to be followed by the position, which we add ourselves."""
    return e.msg.removesuffix(" at")


def _as_record(source: str, line: int, value: Any) -> RawRecord | BadRecord:
    if isinstance(value, dict):
        return RawRecord(source, line, value)
    return BadRecord(source, line, f"expected a JSON object, got {_type_name(value)}")


# ----------------------------------------------------------------------------- readers


def _iter_jsonl(source: str, gzipped: bool) -> Iterator[RawRecord | BadRecord]:
    """One record per line; blank lines are skipped; each line is decoded on its own."""
    lineno = 0
    try:
        with _open(source, gzipped) as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1:
                    raw = raw.removeprefix(_BOM)
                raw = raw.strip(_WHITESPACE)
                if not raw:
                    continue
                value, error = decode_json_line(raw)
                yield BadRecord(source, lineno, error) if error else _as_record(source, lineno, value)
    except _READ_ERRORS as e:  # corrupt or truncated gzip stream: report it, keep going
        yield BadRecord(source, lineno + 1, f"cannot read file: {e}")


def _iter_json(source: str, gzipped: bool) -> Iterator[RawRecord | BadRecord]:
    """A JSON array of objects, or one object; a file that fails as a document is read as JSONL.

    The JSONL fallback covers the common ``.json`` file that really holds one object per line.
    A file whose first line is a complete object is streamed as JSONL straight away, so a huge
    JSONL file misnamed ``.json`` is never loaded whole. A broken JSON *array*, or a broken object spread
    over several lines (its second line does not open another object, as a JSONL line would), is reported as
    one ``BadRecord`` (line 0) whose message gives the line and column: reading it line by line would only
    produce noise that hides where the error is.
    """
    try:
        first_line = _first_nonblank_line(source, gzipped)
    except _READ_ERRORS as e:
        yield BadRecord(source, 0, f"cannot read file: {e}")
        return
    if not first_line:
        return  # empty file
    first_line_parses = decode_json_line(first_line)[1] is None
    if first_line.startswith(b"{") and first_line_parses:
        yield from _iter_jsonl(source, gzipped)
        return
    try:
        with _open(source, gzipped) as f:
            value, error = _decode_document(f.read().removeprefix(_BOM))
    except _READ_ERRORS as e:
        yield BadRecord(source, 0, f"cannot read file: {e}")
        return
    if error is None and isinstance(value, list):
        for i, item in enumerate(value):
            yield _as_record(source, i + 1, item)
    elif error is None:
        yield _as_record(source, 1, value)
    elif not first_line_parses and (first_line.startswith(b"[") or (
            first_line.startswith(b"{") and not _second_nonblank_line(source, gzipped).startswith(b"{"))):
        yield BadRecord(source, 0, error)
    else:
        yield from _iter_jsonl(source, gzipped)


def _first_nonblank_line(source: str, gzipped: bool) -> bytes:
    with _open(source, gzipped) as f:
        line = f.readline().removeprefix(_BOM)
        while line and not line.strip(_WHITESPACE):
            line = f.readline()
    return line.strip(_WHITESPACE)


def _second_nonblank_line(source: str, gzipped: bool) -> bytes:
    with _open(source, gzipped) as f:
        seen = 0
        for line in f:
            line = line.removeprefix(_BOM).strip(_WHITESPACE)
            seen += bool(line)
            if seen == 2:
                return line
    return b""


def _decode_document(raw: bytes) -> tuple[Any, str | None]:
    """Like :func:`decode_json_line`, but the message gives line and column in the document."""
    try:
        if LONG_NUMBER.search(raw):
            raise orjson.JSONDecodeError("exact integers", "", 0)  # the standard parser keeps them exact
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        try:
            return json.loads(raw.decode("utf-8")), None
        except UnicodeDecodeError as e:
            return None, f"invalid UTF-8 in JSON document: byte 0x{raw[e.start]:02x} at position {e.start}"
        except json.JSONDecodeError as e:
            return None, f"invalid JSON document: {_json_reason(e)} at line {e.lineno} column {e.colno}"
        except (ValueError, RecursionError) as e:
            return None, f"invalid JSON document: {e}"


def _iter_parquet(source: str, gzipped: bool) -> Iterator[RawRecord | BadRecord]:
    """Stream rows row group by row group, so a damaged group costs only its own rows.

    Every row of a group that cannot be read becomes a ``BadRecord`` with its row number (the footer
    says how many rows each group has), so ``records in == output + errors`` still holds. A damaged
    footer makes the whole file unreadable: one ``BadRecord`` with line 0.
    """
    import pyarrow.parquet as pq  # imported lazily: pyarrow is heavy and JSONL users never need it

    try:
        f = _open(source, gzipped)
        pf = pq.ParquetFile(f)
    except (*_READ_ERRORS, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        yield BadRecord(source, 0, f"cannot read Parquet file: {e}")
        return
    row = 0
    with f:
        for group in range(pf.num_row_groups):
            size = pf.metadata.row_group(group).num_rows
            start, done = row, 0
            try:
                for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=[group]):
                    rows = batch.to_pylist()
                    for data in rows:
                        row += 1
                        yield _as_record(source, row, data)
                    done += len(rows)
            except (*_READ_ERRORS, ValueError) as e:
                reason = "; ".join(part for part in str(e).splitlines() if part.strip())
                message = f"cannot read Parquet row group {group} (rows {start + 1}-{start + size}): {reason}"
                for r in range(start + done + 1, start + size + 1):
                    yield BadRecord(source, r, message)
                row = start + size


def count_records(path: str | os.PathLike) -> int | None:
    """How many records ``path`` holds, cheaply, for a progress total; None when it cannot tell.

    JSONL: non-blank lines (one streaming pass, no decoding). JSON: the array's length (the document
    is parsed; a ``.json`` file is read whole anyway). Parquet: the row count in the footer.
    """
    try:
        gzipped, fmt = detect_file_format(path)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(_open(path, gzipped) if gzipped else os.fspath(path)).metadata.num_rows)
        with _open(path, gzipped) as f:
            if fmt == "json":
                first = _first_nonblank_line(os.fspath(path), gzipped)
                if not first.startswith(b"["):
                    f.seek(0)
                    return sum(1 for line in f if line.strip(_WHITESPACE))
                value, error = _decode_document(f.read().removeprefix(_BOM))
                return len(value) if error is None and isinstance(value, list) else None
            return sum(1 for line in f if line.strip(_WHITESPACE))
    except Exception:  # noqa: BLE001 - a progress total is a nicety; the reader reports real damage
        return None
