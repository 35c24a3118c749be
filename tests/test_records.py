"""Reading raw records: every file shape, every kind of damage, line numbers and streaming."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fluxprm.records import BadRecord, RawRecord, detect_file_format, iter_records


def read(*paths: Path | str) -> list[RawRecord | BadRecord]:
    return list(iter_records(paths))


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((line.encode() if isinstance(line, str) else line) + b"\n" for line in lines))
    return path


def good(records: list) -> list[RawRecord]:
    return [r for r in records if isinstance(r, RawRecord)]


def bad(records: list) -> list[BadRecord]:
    return [r for r in records if isinstance(r, BadRecord)]


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_line_numbers_skip_blank_lines(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", ['{"id": 1}', "", "   ", '{"id": 2}'])
    records = read(path)
    assert [(r.line, r.data["id"]) for r in records] == [(1, 1), (4, 2)]
    assert all(r.source == str(path) for r in records)


def test_source_is_the_path_as_given(tmp_path, monkeypatch):
    write_lines(tmp_path / "a.jsonl", ['{"id": 1}'])
    monkeypatch.chdir(tmp_path)
    assert read("a.jsonl")[0].source == "a.jsonl"


def test_truncated_last_line_is_a_bad_record(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", ['{"id": 1, "response": "ok"}', '{"id": 2, "response": "cut'])
    records = read(path)
    assert isinstance(records[0], RawRecord)
    (err,) = bad(records)
    assert err.line == 2 and err.error.startswith("invalid JSON: ")
    assert err.to_json() == {"source": str(path), "line": 2, "id": None, "error": err.error}


def test_truncated_line_without_final_newline(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2, "x": [1, 2')
    records = read(path)
    assert isinstance(records[0], RawRecord) and isinstance(records[1], BadRecord) and records[1].line == 2


def test_syntax_error_message_names_column(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", ['{"a": 1 "b": 2}'])
    (err,) = read(path)
    assert err.error == "invalid JSON: Expecting ',' delimiter at column 9"


@pytest.mark.parametrize("line, kind", [("3", "int"), ("[1, 2]", "list"), ('"text"', "str"), ("null", "null"),
                                        ("true", "bool"), ("1.5", "float")])
def test_non_object_values_are_bad_records(tmp_path, line, kind):
    path = write_lines(tmp_path / "v.jsonl", ['{"ok": true}', line])
    records = read(path)
    assert isinstance(records[0], RawRecord)
    assert records[1].error == f"expected a JSON object, got {kind}" and records[1].line == 2


def test_invalid_utf8_line_is_bad_and_rest_reads(tmp_path):
    path = write_lines(tmp_path / "u.jsonl", [b'{"id": 1}', b'{"id": 2, "text": "caf\xe9"}', b'{"id": 3}'])
    records = read(path)
    assert [r.data["id"] for r in good(records)] == [1, 3]
    (err,) = bad(records)
    assert err.line == 2 and err.error.startswith("invalid UTF-8") and "0xe9" in err.error


def test_five_megabyte_single_line(tmp_path):
    text = "x" * (5 * 1024 * 1024)
    path = write_lines(tmp_path / "big.jsonl", [json.dumps({"id": "big", "response": text}), '{"id": "next"}'])
    records = read(path)
    assert len(records[0].data["response"]) == len(text)
    assert records[1].data["id"] == "next" and records[1].line == 2


def test_nan_written_by_python_json_is_accepted(tmp_path):
    path = write_lines(tmp_path / "n.jsonl", ['{"id": 1, "score": NaN}'])
    (record,) = read(path)
    assert record.data["score"] != record.data["score"]  # NaN


def test_utf8_bom_is_ignored(tmp_path):
    path = write_lines(tmp_path / "b.jsonl", [b'\xef\xbb\xbf{"id": 1}', b'{"id": 2}'])
    assert [r.data["id"] for r in read(path)] == [1, 2]


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": 1}\r\n\r\n{"id": 2}\r\n')
    assert [(r.line, r.data["id"]) for r in read(path)] == [(1, 1), (3, 2)]


def test_empty_files_yield_nothing(tmp_path):
    for name in ("e.jsonl", "e.json", "e.ndjson", "e.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "w.json").write_bytes(b"  \n\n ")
    with gzip.open(tmp_path / "e.jsonl.gz", "wb"):
        pass
    assert read(*sorted(tmp_path.iterdir())) == []


def test_missing_file_raises_at_call_before_reading(tmp_path):
    existing = write_lines(tmp_path / "a.jsonl", ['{"id": 1}'])
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError) as info:
        iter_records([existing, missing])  # no iteration needed
    assert info.value.filename == str(missing) and str(missing) in str(info.value)


def test_directory_is_a_usage_error(tmp_path):
    with pytest.raises(IsADirectoryError):
        iter_records([tmp_path])


def test_streams_with_bounded_memory(tmp_path):
    """A 24 MB file is read with a peak far below its size (one line at a time)."""
    path = tmp_path / "many.jsonl"
    line = json.dumps({"id": 0, "response": "y" * 2000}).encode() + b"\n"
    with open(path, "wb") as f:
        for _ in range(12_000):
            f.write(line)
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_records([path]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 12_000
    assert peak < 4 * 1024 * 1024, peak


def test_iter_records_is_lazy(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", ['{"id": 1}', '{"id": 2}'])
    records = iter_records([path])
    assert next(records).data == {"id": 1}
    assert next(records).data == {"id": 2}


def test_several_files_in_order(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", ['{"id": "a1"}'])
    b = write_lines(tmp_path / "b.jsonl", ['{"id": "b1"}', '{"id": "b2"}'])
    assert [(Path(r.source).name, r.line, r.data["id"]) for r in read(a, b)] == [
        ("a.jsonl", 1, "a1"), ("b.jsonl", 1, "b1"), ("b.jsonl", 2, "b2")]


# ----------------------------------------------------------------------------- gzip


def test_jsonl_gz_round_trip(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"id": 1}\n\n{"id": 2\n{"id": 3}\n')
    records = read(path)
    assert [(r.line, type(r).__name__) for r in records] == [(1, "RawRecord"), (3, "BadRecord"), (4, "RawRecord")]


def test_truncated_gzip_reports_and_keeps_earlier_records(tmp_path):
    full = gzip.compress(b"".join(b'{"id": %d, "pad": "%s"}\n' % (i, b"z" * 50) for i in range(2000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(full[: len(full) // 2])
    records = read(path)
    assert len(good(records)) > 10
    (err,) = bad(records)
    assert err.error.startswith("cannot read file") and err.line == len(good(records)) + 1


def test_gzip_without_gz_extension_is_sniffed(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(gzip.compress(b'[{"id": 1}, {"id": 2}]'))
    assert detect_file_format(path) == (True, "json")
    assert [r.line for r in read(path)] == [1, 2]


# ----------------------------------------------------------------------------- JSON


def test_json_array_lines_are_element_indices(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"id": "x"}, 5, {"id": "z"}], indent=2))
    records = read(path)
    assert [(r.line, type(r).__name__) for r in records] == [(1, "RawRecord"), (2, "BadRecord"), (3, "RawRecord")]
    assert records[1].error == "expected a JSON object, got int"


def test_json_single_pretty_object(tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"id": "only", "response": "r"}, indent=2))
    (record,) = read(path)
    assert record.line == 1 and record.data["id"] == "only"


def test_json_that_is_really_jsonl_is_streamed(tmp_path):
    path = write_lines(tmp_path / "l.json", ['{"id": 1}', '{"id": 2', '{"id": 3}'])
    records = read(path)
    assert [(r.line, isinstance(r, RawRecord)) for r in records] == [(1, True), (2, False), (3, True)]


def test_json_gz_array(tmp_path):
    path = tmp_path / "a.json.gz"
    path.write_bytes(gzip.compress(json.dumps([{"id": i} for i in range(3)]).encode()))
    assert [r.data["id"] for r in read(path)] == [0, 1, 2]


def test_broken_json_array_is_one_file_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"id": 1},\n  {"id": 2\n]\n')
    (err,) = read(path)
    assert err.line == 0 and "line 4" in err.error and err.error.startswith("invalid JSON document")


def test_unknown_extension_sniffs_array_or_jsonl(tmp_path):
    arr = tmp_path / "data.txt"
    arr.write_text('  [{"id": 1}]')
    lines = write_lines(tmp_path / "data.log", ['{"id": 1}', '{"id": 2}'])
    assert detect_file_format(arr) == (False, "json") and detect_file_format(lines) == (False, "jsonl")
    assert len(read(arr)) == 1 and len(read(lines)) == 2


# ----------------------------------------------------------------------------- Parquet


def write_parquet(path: Path, rows: list[dict], row_group_size: int = 2) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def test_parquet_round_trip_with_row_numbers(tmp_path):
    rows = [{"id": f"r{i}", "problem": "p", "response": "x" * i, "steps": ["a", "b"]} for i in range(5)]
    path = write_parquet(tmp_path / "t.parquet", rows)
    records = read(path)
    assert [r.line for r in records] == [1, 2, 3, 4, 5]
    assert records[3].data == rows[3]


def test_parquet_gz_and_sniffed_parquet(tmp_path):
    rows = [{"id": i} for i in range(3)]
    plain = write_parquet(tmp_path / "t.parquet", rows)
    gz = tmp_path / "t.parquet.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    odd = tmp_path / "t.bin"
    odd.write_bytes(plain.read_bytes())
    assert detect_file_format(odd) == (False, "parquet")
    assert [r.data["id"] for r in read(gz)] == [0, 1, 2] == [r.data["id"] for r in read(odd)]


def test_corrupt_parquet_is_a_bad_record(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    (err,) = read(path)
    assert err.line == 0 and err.error.startswith("cannot read Parquet file")


def test_parquet_streams_in_batches(tmp_path):
    rows = [{"id": i, "text": "t" * 100} for i in range(1000)]
    path = write_parquet(tmp_path / "many.parquet", rows, row_group_size=100)
    records = iter_records([path])
    assert next(records).data["id"] == 0
    assert sum(1 for _ in records) == 999


def test_bad_record_to_json_is_the_errors_record():
    assert BadRecord("f.jsonl", 3, "boom", id="x").to_json() == {"source": "f.jsonl", "line": 3, "id": "x",
                                                                 "error": "boom"}


def test_json_errors_read_naturally_with_their_position(tmp_path):
    """The parser's "starting at" / "character at" reasons end in "at": the position follows once, not "at at"."""
    path = write_lines(tmp_path / "u.jsonl", ['{"id": "a", "question": "q}'])
    (err,) = read(path)
    assert (err.line, err.error) == (1, "invalid JSON: Unterminated string starting at column 25")
    doc = tmp_path / "c.json"
    doc.write_text('[\n  {"id": "a",\n   "steps": ["x", "y\n]}\n]\n')
    (err,) = read(doc)
    assert (err.line, err.error) == (0, "invalid JSON document: Invalid control character at line 3 column 21")


def test_broken_pretty_printed_object_is_one_error_at_its_line(tmp_path):
    """A multi-line object is not JSONL: its error keeps the line within the file, not one error per line."""
    path = tmp_path / "obj.json"
    path.write_text('{\n  "id": "a",\n  "question": "q",\n  "steps": ["x" "y"]\n}\n')
    (err,) = read(path)
    assert (err.line, err.error) == (0, "invalid JSON document: Expecting ',' delimiter at line 4 column 17")


def test_json_named_jsonl_with_a_broken_first_line_is_still_read_line_by_line(tmp_path):
    path = write_lines(tmp_path / "l.json", ['{"id": 1, "x": tru}', '{"id": 2}', '{"id": 3}'])
    records = read(path)
    assert [r.line for r in bad(records)] == [1] and [r.data["id"] for r in good(records)] == [2, 3]
