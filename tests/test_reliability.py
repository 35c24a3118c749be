"""Nothing lost, never corrupted: the audit's data-loss findings, each on the job loop, the sink and the readers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builders import build_qwen_prm
from fluxprm import load_prm
from fluxprm.engine.options import ScoreOptions
from fluxprm.jobs import OutputPathError
from fluxprm.outputs import ResumeMismatch
from fluxprm.records import BadRecord, iter_records
from fluxprm.score_job import run_score_job
from fluxprm.traces import iter_traces


@pytest.fixture(scope="module")
def prm():
    return load_prm(str(build_qwen_prm(None)), dtype="float32", device="cpu")


def _rec(i, **kw):
    return {"id": f"r{i}", "problem": f"What is {i}+1?", "response": f"It is {i + 1}.", **kw}


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _score(prm, src, out, **kw):
    opts = ScoreOptions(on_error=kw.pop("on_error", "skip"), chunk_size=kw.pop("chunk_size", 4), batching="single")
    return run_score_job(prm, [str(src)], out, None, opts, **kw)


@pytest.mark.parametrize("where", ["id", "problem", "response"])
def test_a_lone_surrogate_loses_only_its_own_record(prm, tmp_path, where):
    bad = _rec(1)
    bad[where] = bad[where] + "\ud800"
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([json.dumps(_rec(0)), json.dumps(bad), json.dumps(_rec(2))]) + "\n")
    out = tmp_path / "out.jsonl"
    result = _score(prm, src, out)
    assert [r["id"] for r in _lines(out)] == ["r0", "r2"]
    [err] = _lines(tmp_path / "out.errors.jsonl")
    assert err["line"] == 2 and result.written == 2 and result.rejected == 1


def test_output_or_errors_equal_to_an_input_is_refused(prm, tmp_path):
    src = _write(tmp_path / "a.jsonl", [_rec(0)])
    before = src.read_bytes()
    with pytest.raises(OutputPathError, match="destroy the input"):
        _score(prm, src, src)
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    with pytest.raises(OutputPathError, match="destroy the input"):
        _score(prm, src, link)
    with pytest.raises(OutputPathError, match="destroy the input"):
        run_score_job(prm, [str(src)], tmp_path / "o.jsonl", tmp_path / "." / "a.jsonl", ScoreOptions(on_error="skip"))
    with pytest.raises(OutputPathError, match="directory"):
        _score(prm, src, tmp_path)
    assert src.read_bytes() == before


@pytest.mark.parametrize("input_name, out_name, errors_name, refusal", [
    ("in.jsonl", "o.jsonl", "o.jsonl.progress.json", "--errors .* is the checkpoint"),
    ("in.jsonl", "o.jsonl", "o.jsonl.progress.json.tmp", "--errors .* is the temporary checkpoint"),
    ("o.jsonl.progress.json.tmp", "o.jsonl", None, "the temporary checkpoint .* destroy the input"),
    ("o.jsonl.tmp", "o.jsonl", None, "the temporary output .* destroy the input"),
    ("e.jsonl.tmp", "o.jsonl", "e.jsonl", "the temporary errors file .* destroy the input"),
])
def test_no_file_a_run_writes_beside_its_outputs_is_an_input_or_its_errors(tmp_path, input_name, out_name,
                                                                           errors_name, refusal):
    """The checkpoint and the temporary files renamed over the outputs were not checked: ``--errors
    OUT.progress.json`` lost every error record to the checkpoint (exit 0), an input named
    ``OUT.progress.json.tmp`` was renamed away, and ``select IN.tmp -o IN`` deleted its input."""
    from fluxprm.jobs import check_outputs

    src = _write(tmp_path / input_name, [_rec(0)])
    with pytest.raises(OutputPathError, match=refusal):
        check_outputs([str(src)], tmp_path / out_name, tmp_path / errors_name if errors_name else None)
    assert json.loads(src.read_text()) == _rec(0)


def test_select_refuses_an_input_named_like_its_temporary_output(tmp_path):
    from fluxprm.scored import ScoreSource
    from fluxprm.select import SelectOptions, run_select

    src = _write(tmp_path / "sx.jsonl.tmp", [_rec(i, s=float(i)) for i in range(3)])
    before = src.read_bytes()
    with pytest.raises(OutputPathError, match="temporary output"):
        run_select([str(src)], tmp_path / "sx.jsonl", ScoreSource(score_field="s"), SelectOptions(top_k=2))
    assert src.read_bytes() == before and not (tmp_path / "sx.jsonl").exists()


def _interrupted(prm, tmp_path) -> tuple[Path, Path]:
    """A finished run whose checkpoint is rewound to look interrupted after the first chunk."""
    src = _write(tmp_path / "in.jsonl", [_rec(i) for i in range(8)])
    out = tmp_path / "out.jsonl"
    _score(prm, src, out, chunk_size=4)
    progress = tmp_path / "out.jsonl.progress.json"
    ck = json.loads(progress.read_text())
    first_chunk = b"".join(out.read_bytes().splitlines(keepends=True)[:4])
    import hashlib

    ck.update(done=4, out_bytes=len(first_chunk), out_sha=hashlib.sha256(first_chunk).hexdigest(), complete=False)
    progress.write_text(json.dumps(ck))
    return src, out


def test_resume_after_an_interruption_completes_identically(prm, tmp_path):
    src, out = _interrupted(prm, tmp_path)
    full = out.read_bytes()
    out.write_bytes(full[: len(full) - 7])  # a torn tail beyond the checkpoint is dropped
    result = _score(prm, src, out, resume=True)
    assert out.read_bytes() == full and result.skipped_done == 4


def test_resume_refuses_an_output_shorter_than_its_checkpoint(prm, tmp_path):
    src, out = _interrupted(prm, tmp_path)
    out.write_bytes(out.read_bytes()[:10])
    with pytest.raises(ResumeMismatch, match="truncated, deleted or replaced"):
        _score(prm, src, out, resume=True)
    assert b"\x00" not in out.read_bytes()
    out.unlink()
    with pytest.raises(ResumeMismatch, match="is missing"):
        _score(prm, src, out, resume=True)


def test_resume_refuses_an_output_overwritten_with_same_length_garbage(prm, tmp_path):
    src, out = _interrupted(prm, tmp_path)
    out.write_bytes(b"x" * out.stat().st_size)
    with pytest.raises(ResumeMismatch, match="differ from what the interrupted run wrote"):
        _score(prm, src, out, resume=True)


def test_resume_without_a_checkpoint_does_not_overwrite_an_existing_output(prm, tmp_path):
    src = _write(tmp_path / "in.jsonl", [_rec(0)])
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    with pytest.raises(ResumeMismatch, match="no checkpoint"):
        _score(prm, src, out, resume=True)
    assert out.read_text() == "precious\n"


@pytest.mark.parametrize("damage", ["", "garbage{", "[]", '{"run": "RUN", "out_bytes": 0, "err_bytes": 0}',
                                    '{"run": "RUN", "done": -1, "out_bytes": 0, "err_bytes": 0}',
                                    '{"run": "RUN", "done": "x", "out_bytes": 0, "err_bytes": 0}', "DIR"])
def test_a_damaged_checkpoint_is_a_clear_refusal(prm, tmp_path, damage):
    src, out = _interrupted(prm, tmp_path)
    progress = tmp_path / "out.jsonl.progress.json"
    run = json.loads(progress.read_text())["run"]
    progress.unlink()
    if damage == "DIR":
        progress.mkdir()
    else:
        progress.write_text(damage.replace("RUN", run))
    expected = (OutputPathError, "is a directory") if damage == "DIR" else (ResumeMismatch, "rerun without --resume")
    with pytest.raises(expected[0], match=expected[1]):
        _score(prm, src, out, resume=True)


def test_fail_keeps_every_record_scored_before_the_bad_one(prm, tmp_path):
    from fluxprm.jobs import JobFailure

    src = _write(tmp_path / "in20.jsonl", [_rec(i) for i in range(7)] + [{"id": "bad", "problem": "p"}]
                 + [_rec(i) for i in range(8, 12)])
    out = tmp_path / "out.jsonl"
    with pytest.raises(JobFailure, match=r"in20\.jsonl:8: "):
        _score(prm, src, out, on_error="fail", chunk_size=64)
    assert [r["id"] for r in _lines(out)] == [f"r{i}" for i in range(7)]


def test_integer_ids_beyond_64_bits_keep_their_exact_text(tmp_path):
    src = _write(tmp_path / "big.jsonl", ['{"id": 123456789012345678901234567890, "problem": "p", "response": "r"}',
                                          '{"id": 123456789012345678901234567891, "problem": "p", "response": "r"}'])
    assert [t.id for t in iter_traces([str(src)])] == ["123456789012345678901234567890",
                                                      "123456789012345678901234567891"]
    arr = tmp_path / "big.json"
    arr.write_text('[{"id": 123456789012345678901234567890, "problem": "p", "response": "r"}]')
    assert [t.id for t in iter_traces([str(arr)])] == ["123456789012345678901234567890"]


def test_a_damaged_parquet_row_group_costs_only_its_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": f"r{i}", "problem": "p" * 50, "response": f"response number {i} " * 20} for i in range(100)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10)
    col = pq.ParquetFile(path).metadata.row_group(3).column(2)
    data = bytearray(path.read_bytes())
    for k in range(col.data_page_offset + 20, col.data_page_offset + 60):
        data[k] ^= 0x5A
    path.write_bytes(data)
    out = list(iter_records([path]))
    good = [r for r in out if not isinstance(r, BadRecord)]
    bad = [r for r in out if isinstance(r, BadRecord)]
    assert len(out) == 100 and 80 <= len(good) < 100
    assert [r.data["id"] for r in good] == [f"r{i}" for i in range(100) if i + 1 not in {b.line for b in bad}]
    assert all("row group" in b.error for b in bad) and {b.line for b in bad} >= set(range(31, 41))


def test_label_backends_are_checked_once_at_start_up(tmp_path):
    from fluxprm.labels.pipeline import LabelConfig, Labeler

    cache = str(tmp_path / "cache.sqlite")
    with pytest.raises(ValueError, match=r"^--policy notaurl: cannot load LLM 'notaurl'"):
        Labeler(LabelConfig(judge=None, alignment=False, coherence=True, policy="notaurl", cache=cache)).check_backends()
    warnings = Labeler(LabelConfig(judge="http://127.0.0.1:9/v1#m", alignment=False, coherence=True,
                                   cache=cache)).check_backends()
    assert len(warnings) == 1
    assert warnings[0].startswith("--judge http://127.0.0.1:9/v1#m: cannot reach http://127.0.0.1:9/v1 (Connect")


def test_an_unknown_device_is_a_value_error_naming_it():
    from fluxprm.device import resolve_device

    with pytest.raises(ValueError, match="unknown device 'bogus'"):
        resolve_device("bogus")


def test_a_checkpoint_retrained_in_place_is_not_resumed_into(tmp_path):
    """A model is named by its folder, the same for every retraining: `score -m my-prm --resume` after
    `fluxprm train ... -o my-prm` again said "already complete" and kept the old model's scores. The run's
    identity now holds what the folder holds (each file's path, size and mtime), so the resume is refused."""
    folder = build_qwen_prm(tmp_path / "my-prm", seed=0)
    src = _write(tmp_path / "in.jsonl", [_rec(i) for i in range(3)])
    out = tmp_path / "out.jsonl"
    first = load_prm(str(folder), dtype="float32", device="cpu")
    _score(first, src, out)
    before = out.read_bytes()
    _score(load_prm(str(folder), dtype="float32", device="cpu"), src, out, resume=True)  # the same model: resumes
    assert out.read_bytes() == before
    (folder / "README.md").write_text("a model card edited after scoring\n")  # no weights or settings: same model
    _score(load_prm(str(folder), dtype="float32", device="cpu"), src, out, resume=True)
    build_qwen_prm(folder, seed=1)  # "retrained": the same folder, other weights
    retrained = load_prm(str(folder), dtype="float32", device="cpu")
    assert retrained.name == first.name and retrained.weights_id != first.weights_id
    with pytest.raises(ResumeMismatch, match="the model"):
        _score(retrained, src, out, resume=True)
    assert out.read_bytes() == before  # untouched
    _score(retrained, src, out)
    assert out.read_bytes() != before


def test_a_pipe_is_refused_before_it_is_drained(prm, tmp_path):
    """A pipe (``/dev/stdin``, ``<(zcat …)``, a FIFO) or ``-`` as an input: counting its records for progress
    drained it, and the run then found no records, wrote an empty output and exited 0. Now it is refused by
    name before anything is read, by the library and by every command that reads inputs or ``--scores``."""
    from fluxprm.jobs import InputNotAFile, check_inputs

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # never opened: a check that opened it would block here, not pass
    for given in (str(fifo), "-"):
        with pytest.raises(InputNotAFile, match="save it to a file first"):
            check_inputs([given])
    with pytest.raises(InputNotAFile, match="pipe.jsonl is a pipe or a device"):
        _score(prm, fifo, tmp_path / "s.jsonl")
    from fluxprm.bon import BonOptions, run_bon
    from fluxprm.eval.sources import EvalSource
    from fluxprm.eval.tasks import run_eval
    from fluxprm.scored import ScoreSource
    from fluxprm.view import build_page

    src = _write(tmp_path / "src.jsonl", [_rec(i, score=0.5) for i in range(2)])
    calls = [lambda: run_bon([fifo], tmp_path / "bon", BonOptions(score_field="score")),
             lambda: run_eval("outcome", [str(fifo)], [EvalSource("s", ScoreSource(score_field="score"))],
                              tmp_path / "ev"),
             lambda: build_page(fifo, tmp_path / "v.html"),
             lambda: build_page(src, tmp_path / "v.html", traces=[fifo])]
    for call in calls:
        with pytest.raises(InputNotAFile, match="pipe.jsonl is a pipe or a device"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.jsonl", "src.jsonl"]


@pytest.mark.parametrize("args", [
    ["score", "/dev/stdin", "-o", "{tmp}/s.jsonl", "-m", "{model}"],
    ["select", "/dev/stdin", "-o", "{tmp}/top.jsonl", "--score-field", "x", "--top-k", "1"],
    ["select", "{src}", "-o", "{tmp}/top.jsonl", "--scores", "/dev/stdin", "--top-k", "1"],
    ["bon", "/dev/stdin", "-o", "{tmp}/bon", "--score-field", "x"],
    ["eval", "outcome", "{src}", "-o", "{tmp}/ev", "--scores", "/dev/stdin"],
    ["view", "/dev/stdin", "-o", "{tmp}/v.html"],
    ["train", "/dev/stdin", "-o", "{tmp}/ckpt"],
])
def test_a_command_given_stdin_as_a_file_says_so_and_writes_nothing(tmp_path, args):
    import subprocess
    import sys

    from builders import build_qwen_prm

    src = _write(tmp_path / "src.jsonl", [_rec(i) for i in range(3)])
    model = build_qwen_prm(None) if "-m" in args else ""
    argv = [a.format(tmp=tmp_path, src=src, model=model) for a in args]
    res = subprocess.run([sys.executable, "-m", "fluxprm", *argv], input=src.read_text(), capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.startswith("error: ") and "/dev/stdin is a pipe or a device, not a file" in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.jsonl"], res.stderr


@pytest.mark.parametrize("setup, args, refusal", [
    ("bx/picks.jsonl", ["bon", "bx/picks.jsonl", "-o", "bx", "--score-field", "s"], "its picks.jsonl would overwrite"),
    ("bx/metrics.json", ["bon", "in.jsonl", "--scores", "bx/metrics.json", "-o", "bx"], "its metrics.json would"),
    ("ev/summary.md", ["eval", "outcome", "ev/summary.md", "-o", "ev", "--score-field", "s"], "its summary.md would"),
    ("rp/report.json", ["select", "rp/report.json", "-o", "top.jsonl", "--score-field", "s", "--top-k", "1",
                        "--report", "rp"], "--report rp: its report.json would overwrite"),
    ("ck/labels.jsonl", ["train", "ck/labels.jsonl", "-o", "ck"], "-o ck holds ck/labels.jsonl"),
    ("ck/train_config.yaml", ["train", "in.jsonl", "--config", "ck/train_config.yaml", "-o", "ck"], "-o ck holds"),
])
def test_a_report_or_checkpoint_folder_never_overwrites_a_file_the_command_reads(tmp_path, monkeypatch, setup, args,
                                                                                 refusal):
    """The files a command writes into its folder under fixed names (bon's picks.jsonl, eval's summary.md,
    select's report.json, a checkpoint's train_config.yaml) replaced an input of the same name there, exit 0."""
    from typer.testing import CliRunner

    from fluxprm.cli import app

    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "in.jsonl", [_rec(i, s=0.5, correct=bool(i % 2)) for i in range(2)])
    (tmp_path / setup).parent.mkdir()
    content = "epochs: 1\n" if setup.endswith(".yaml") else (tmp_path / "in.jsonl").read_text()
    (tmp_path / setup).write_text(content)
    res = CliRunner().invoke(app, args, prog_name="fluxprm")
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and refusal in res.stderr, res.output
    assert (tmp_path / setup).read_text() == content
    assert sorted(p.name for p in (tmp_path / setup).parent.iterdir()) == [Path(setup).name]


def test_an_output_named_gz_is_refused_not_written_as_plain_text(tmp_path):
    """``-o scores.jsonl.gz`` wrote plain JSONL that every reader (fluxprm's too) then took for gzip."""
    from fluxprm.jobs import check_outputs

    src = _write(tmp_path / "in.jsonl", [_rec(0)])
    for out, errors in ((tmp_path / "s.jsonl.gz", None), (tmp_path / "s.jsonl", tmp_path / "e.jsonl.gz")):
        with pytest.raises(OutputPathError, match="not gzip; drop the .gz"):
            check_outputs([str(src)], out, errors)


@pytest.mark.parametrize("args", [
    ["select", "in.jsonl", "--scores", "s.jsonl", "-o", "top.jsonl", "--top-k", "2"],
    ["bon", "in.jsonl", "--scores", "s.jsonl", "-o", "deep/bon"],
    ["eval", "outcome", "in.jsonl", "--scores", "s.jsonl", "-o", "ev"],
])
def test_scores_of_an_input_edited_after_scoring_are_refused_and_nothing_is_left(prm, tmp_path, monkeypatch, args):
    """Scores join their input by (file, line): a record inserted after ``fluxprm score`` shifted every later score
    onto its neighbour, and select/bon/eval reported on the wrong traces with exit 0. The score's id must be the
    record's; a run that fails so leaves no empty report folder behind. Unedited, the same scores join cleanly."""
    from typer.testing import CliRunner

    from fluxprm.cli import app

    monkeypatch.chdir(tmp_path)
    rows = [_rec(i, correct=bool(i % 2)) for i in range(4)]
    _write(tmp_path / "in.jsonl", rows)
    _score(prm, tmp_path / "in.jsonl", tmp_path / "s.jsonl")
    ok = CliRunner().invoke(app, args, prog_name="fluxprm")
    assert ok.exit_code == 0, ok.output
    for made in ("top.jsonl", "top.report.json", "deep", "ev"):
        if (tmp_path / made).is_dir():
            import shutil
            shutil.rmtree(tmp_path / made)
        elif (tmp_path / made).exists():
            (tmp_path / made).unlink()
    _write(tmp_path / "in.jsonl", rows[:2] + [_rec(9, correct=True)] + rows[2:])
    before = sorted(p.name for p in tmp_path.iterdir())
    res = CliRunner().invoke(app, args, prog_name="fluxprm")
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: the score for in.jsonl:3 has id 'r2' but the input record there has id 'r9'")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _cli(*args: str, cwd: Path) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "fluxprm", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})


def test_a_lone_surrogate_in_a_passed_through_field_is_written_back_exactly(tmp_path):
    """A lone surrogate outside the texts fluxprm checks (a gold answer, a pool's ``pred``, the source model, a
    group value) is valid JSON; it made bon stop with a bare codec message (picks.jsonl.tmp left behind), select
    --report and eval separation die in matplotlib with a traceback, and eval fail printing its table. It is now
    written as its \\uXXXX escape (JSON reads it back identically), drawn and printed as \\udXXX."""
    pool = _write(tmp_path / "pool.jsonl", [
        {"id": "a", "problem": "What is 1+1?", "response": ["It is 2. \\boxed{2}", "It is 3. \\boxed{3}"],
         "gold": "2\ud800", "pred": ["2\udc00", "3"], "s": [0.9, 0.1]},
        {"id": "b", "problem": "What is 2+2?", "response": ["It is 4. \\boxed{4}", "It is 5. \\boxed{5}"],
         "gold": "4", "s": [0.2, 0.8]}])
    res = _cli("bon", "pool.jsonl", "--score-field", "s", "-o", "bon", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "bon").iterdir()) == ["accuracy_vs_n.png", "metrics.json",
                                                                    "picks.jsonl", "summary.json"]
    assert [r["gold"] for r in _lines(tmp_path / "bon" / "picks.jsonl")] == ["2\ud800", "4"]

    rows = _write(tmp_path / "rows.jsonl", [_rec(i, correct=bool(i % 2), s=i / 4, model=f"m{i % 2}\ud800")
                                            for i in range(4)])
    res = _cli("select", rows.name, "--score-field", "s", "-o", "top.jsonl", "--top-k", "2", "--report", "rep",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [r["model"] for r in _lines(tmp_path / "top.jsonl")] == ["m0\ud800", "m1\ud800"]  # input order
    assert (tmp_path / "rep" / "scores_by_model.png").stat().st_size > 0
    assert set(json.loads((tmp_path / "rep" / "report.json").read_text())["by_model"]) == {"m0\ud800", "m1\ud800"}
    res = _cli("eval", "separation", rows.name, "--score-field", "s", "-o", "sep", cwd=tmp_path)
    assert res.returncode == 0 and "m1\\ud800" in res.stdout, res.stderr
    assert (tmp_path / "sep" / "separation.png").stat().st_size > 0


def test_a_lone_surrogate_in_a_field_score_passes_through_is_scored_not_rejected(prm, tmp_path):
    """A score record carries the record's ``group`` into its output; one with a lone surrogate was rejected as
    "cannot write this record" (orjson refuses it), losing a trace that scored fine."""
    src = _write(tmp_path / "in.jsonl", [_rec(0, group="g\ud800"), _rec(1)])
    result = _score(prm, src, tmp_path / "out.jsonl")
    assert result.written == 2 and result.rejected == 0
    assert [r.get("group") for r in _lines(tmp_path / "out.jsonl")] == ["g\ud800", None]


def test_an_input_whose_name_is_not_utf8_is_scored_and_joined(prm, tmp_path):
    """A file name that is not UTF-8 (``b"\\xff.jsonl"``, decoded by Python with surrogate escapes) made the run's
    fingerprint raise a bare codec error before anything was scored."""
    name = os.fsdecode(b"\xff\xfe.jsonl")
    src = _write(tmp_path / name, [_rec(i, correct=bool(i % 2)) for i in range(3)])
    result = _score(prm, src, tmp_path / "s.jsonl")
    assert result.written == 3
    res = _cli("select", name, "--scores", "s.jsonl", "-o", "top.jsonl", "--top-k", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(_lines(tmp_path / "top.jsonl")) == 1


def test_resume_with_the_input_spelled_another_way_is_refused(prm, tmp_path, monkeypatch):
    """Each record carries its input path as given: resuming ``./in.jsonl`` into a run of ``in.jsonl`` wrote both
    spellings into one output, unlike any uninterrupted run."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "in.jsonl", [_rec(i) for i in range(6)])
    out = tmp_path / "out.jsonl"
    def interrupt(records: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _score(prm, Path("in.jsonl"), out, chunk_size=2, on_progress=interrupt)
    assert len(_lines(out)) == 2
    with pytest.raises(ResumeMismatch, match="paths as given"):
        _score(prm, "./in.jsonl", out, resume=True)
    _score(prm, Path("in.jsonl"), out, resume=True)
    assert {r["source"] for r in _lines(out)} == {"in.jsonl"} and len(_lines(out)) == 6


@pytest.mark.parametrize("args, flag", [
    (["select", "in.jsonl", "--score-field", "s", "--top-k", "1", "-o", "f/top.jsonl"], "-o/--out f/top.jsonl"),
    (["select", "in.jsonl", "--score-field", "s", "--top-k", "1", "-o", "top.jsonl", "--errors", "f/e.jsonl"],
     "--errors f/e.jsonl"),
    (["select", "in.jsonl", "--score-field", "s", "--top-k", "1", "-o", "top.jsonl", "--sft", "f/sft.jsonl"],
     "--sft f/sft.jsonl"),
    (["select", "in.jsonl", "--score-field", "s", "--top-k", "1", "-o", "top.jsonl", "--report", "f/rep"],
     "--report f/rep"),
    (["score", "in.jsonl", "-m", "fluxprm-mini", "-o", "s.jsonl", "--errors", "f/e.jsonl"], "--errors f/e.jsonl"),
    (["bon", "in.jsonl", "--score-field", "s", "-o", "f/bon"], "-o f/bon"),
    (["eval", "outcome", "in.jsonl", "--score-field", "s", "-o", "f/ev"], "-o f/ev"),
    (["train", "in.jsonl", "-o", "f/ckpt"], "-o f/ckpt"),
    (["view", "in.jsonl", "-o", "f/page.html"], "-o f/page.html"),
])
def test_an_output_under_a_file_is_refused_before_any_work_naming_its_flag(tmp_path, monkeypatch, args, flag):
    """An errors path under a file was found at the first rejected record — after a score run had written its
    output and checkpoint — and every such path said only "cannot write f: File exists"; --sft said -o/--out."""
    from typer.testing import CliRunner

    from fluxprm.cli import app

    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "in.jsonl", [_rec(i, s=i / 2, correct=bool(i % 2)) for i in range(2)] + [_rec(2, problem="")])
    (tmp_path / "f").write_text("a file, not a folder\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    res = CliRunner().invoke(app, args, prog_name="fluxprm")
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(f"error: {flag}: f is a file, not a folder"), res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_output_hard_linked_to_an_input_names_the_input(tmp_path):
    """``-o link.jsonl`` where link.jsonl is a hard link to in.jsonl was refused as "is the input file link.jsonl"."""
    from fluxprm.jobs import check_outputs

    src = _write(tmp_path / "in.jsonl", [_rec(0)])
    os.link(src, tmp_path / "link.jsonl")
    with pytest.raises(OutputPathError, match=r"link.jsonl is the input file .*in.jsonl: writing it would destroy"):
        check_outputs([str(src)], tmp_path / "link.jsonl", None)
