"""The one job loop shared by score and label: nothing lost, fail stops cleanly, progress in records, causes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fluxprm.jobs import JobFailure, run_job
from fluxprm.records import BadRecord, count_records
from fluxprm.traces import iter_traces


def _echo(chunk, start):
    return [t if isinstance(t, BadRecord) else {"id": t.id, "at": start + i} for i, t in enumerate(chunk)]


def _run(src: Path, out: Path, **kw):
    inputs = [str(src)]
    return run_job(inputs, out, None, identity={"v": 1}, items=lambda: iter_traces(inputs), process=_echo,
                   chunk_size=kw.pop("chunk_size", 2), stats=None, **kw)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _write(src: Path, records: list) -> None:
    src.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


GOOD = [{"id": f"g{i}", "problem": "p", "response": "an answer"} for i in range(5)]


def test_clean_run_leaves_no_errors_file(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, GOOD)
    result = _run(src, out)
    assert [r["id"] for r in _lines(out)] == [f"g{i}" for i in range(5)]
    assert not (tmp_path / "out.errors.jsonl").exists() and not result.errors_written
    assert result.records_in == 5 and result.written == 5 and result.rejected == 0


def test_a_stale_errors_file_from_an_earlier_run_is_removed(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, GOOD[:2] + ['{"broken'])
    _run(src, out)
    assert (tmp_path / "out.errors.jsonl").exists()
    _write(src, GOOD[:2])
    _run(src, out)
    assert not (tmp_path / "out.errors.jsonl").exists()


def test_fail_writes_everything_before_the_bad_record_then_stops(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, GOOD[:3] + [{"id": "bad", "problem": "p"}] + GOOD[3:])
    with pytest.raises(JobFailure, match=r"in\.jsonl:4: no response field"):
        _run(src, out, on_error="fail", chunk_size=10)
    assert [r["id"] for r in _lines(out)] == ["g0", "g1", "g2"]
    assert [e["line"] for e in _lines(tmp_path / "out.errors.jsonl")] == [4]
    # a resumed run goes on after the bad record: every record ends in one of the two files, once
    progress = _Progress()
    result = _run(src, out, resume=True, chunk_size=10, on_progress=progress)
    assert [r["id"] for r in _lines(out)] == ["g0", "g1", "g2", "g3", "g4"]
    assert result.skipped_done == 4
    assert progress.calls == [("resumed", 4), ("done", 2)]  # the earlier run's records apart, before any work


class _Progress:
    """A progress callback with the optional ``resumed`` method (as the CLI's display has)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, n: int) -> None:
        self.calls.append(("done", n))

    def resumed(self, n: int) -> None:
        self.calls.append(("resumed", n))


def test_progress_counts_records_not_candidates(tmp_path):
    src, out = tmp_path / "pool.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"id": f"q{i}", "problem": "p", "response": ["a", "b", "c"]} for i in range(13)])
    seen: list[int] = []
    result = _run(src, out, chunk_size=4, on_progress=seen.append)
    assert sum(seen) == 13 == count_records(src) and result.records_in == 13
    assert len(_lines(out)) == 39


def test_error_causes_are_counted_with_an_example_and_a_hint(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"question": f"q{i}", "process": ["step one", "step two"]} for i in range(6)] + ['{"x": 1,'])
    result = _run(src, out)
    assert result.written == 0 and result.rejected == 7
    top = result.error_causes[0]
    assert top.count == 6 and top.example.startswith(f"{src}:1: no response field found")
    assert top.hint == "--steps-field process"
    assert result.error_causes[1].count == 1 and "invalid JSON" in result.error_causes[1].cause


def test_count_records_for_each_file_kind(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.json").write_text(json.dumps(GOOD))
    (tmp_path / "b.jsonl").write_text(json.dumps(GOOD[0]) + "\n\n" + json.dumps(GOOD[1]) + "\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps(GOOD[0]) + "\n")
    pq.write_table(pa.Table.from_pylist(GOOD), tmp_path / "d.parquet")
    (tmp_path / "e.jsonl").write_text("")
    assert [count_records(tmp_path / n) for n in ("a.json", "b.jsonl", "c.jsonl.gz", "d.parquet", "e.jsonl")] == \
        [5, 2, 1, 5, 0]


def test_duplicate_ids_are_counted_with_examples(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [GOOD[0], GOOD[1], GOOD[0], GOOD[0], {"problem": "p", "response": "no id"}])
    result = _run(src, out)
    assert result.duplicate_ids == 2
    assert result.duplicate_examples[0] == f"'g0' ({src}:1, {src}:3)"


@pytest.mark.parametrize("change", ["truncate", "rewrite"])
def test_an_input_rewritten_during_the_run_stops_it_unfinished_instead_of_exiting_0(tmp_path, change):
    """Rewriting an input while ``score`` read it lost every record past the new end (or mixed two versions) and the
    run finished with exit 0. Now the chunk after the change stops the run (InputChanged, exit 1 in the CLI), and
    the unfinished output cannot be resumed into as if it belonged to the new file."""
    from fluxprm.jobs import InputChanged
    from fluxprm.outputs import ResumeMismatch

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, GOOD)
    calls = []

    def rewrite_after_first_chunk(chunk, start):
        if not calls:
            _write(src, GOOD[:1] if change == "truncate" else [dict(r, response=r["response"].upper()) for r in GOOD])
            if change == "rewrite":  # same size: only the mtime tells (set it apart even on a coarse clock)
                st = src.stat()
                import os
                os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        calls.append(start)
        return _echo(chunk, start)

    inputs = [str(src)]
    with pytest.raises(InputChanged, match=r"in.jsonl changed while it was being read .*run again without --resume"):
        run_job(inputs, out, None, identity={"v": 1}, items=lambda: iter_traces(inputs),
                process=rewrite_after_first_chunk, chunk_size=2, stats=None)
    assert calls == [0] and len(_lines(out)) == 2
    with pytest.raises(ResumeMismatch):
        _run(src, out, resume=True)


def test_a_cause_keeps_the_numbers_that_never_vary():
    """Every digit became N: "targets must be in [0, 1]" read "targets must be in [N, N]", the constants lost."""
    from fluxprm.jobs import CauseCounter

    counter = CauseCounter()
    for line, message in enumerate(["targets must be in [0, 1], got 3 (step 2)", "targets must be in [0, 1], got 5",
                                    "step 3 of 7 is empty", "step 4 of 7 is empty", "step 9 of 12 does not fit"], 1):
        counter.add(BadRecord("in.jsonl", line, message))
    shown = {c.cause: c.count for c in counter.summary()}
    assert shown == {"targets must be in [0, 1], got N": 2, "step N of 7 is empty": 2,
                     "step 9 of 12 does not fit": 1}
