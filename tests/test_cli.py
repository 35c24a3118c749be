"""The command line end to end in subprocesses: score, errors, fail mode, kill -9 and resume, models."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from builders import build_qwen_prm

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


def fluxprm(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "fluxprm", *args], capture_output=True, text=True, env=env,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(build_qwen_prm(None))


@pytest.fixture(scope="module")
def many_traces(tmp_path_factory) -> Path:
    """60 records: R1 traces of varied length, with a bad record every 10th line."""
    path = tmp_path_factory.mktemp("data") / "many.jsonl"
    lines = []
    for i in range(60):
        if i % 10 == 7:
            lines.append('{"id": "bad%d", "problem": ' % i)
            continue
        think = "\n\n".join(f"step {k} of trace {i}: " + "compute things " * (2 + (i * k) % 9) for k in range(2 + i % 6))
        lines.append(json.dumps({"id": f"r{i}", "problem": f"Find {i}.", "response": f"<think>{think}</think>The answer is {i}."}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_score_writes_records_and_summary(model_dir, tmp_path):
    out = tmp_path / "s.jsonl"
    res = fluxprm("score", str(FIXTURES / "skythought_amc23_sample.jsonl"), "-m", model_dir, "-o", str(out),
                  "--dtype", "float32")
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    errs = (tmp_path / "s.errors.jsonl").read_text().splitlines()
    n_lines = len((FIXTURES / "skythought_amc23_sample.jsonl").read_text().splitlines())
    assert len(recs) + len(errs) == n_lines
    assert "tokens/s" in res.stderr and "truncated" in res.stderr
    long = [r for r in recs if r["thinking_step_rewards"]]
    assert long and all(len(r["step_rewards"]) == r["num_steps"] for r in recs)
    # the "truncated" column counts what happened (none here: the traces fit the 4,096-token context);
    # test_long_truncate_really_drops_the_earliest_thinking_steps makes truncation happen
    assert _summary_counts(res.stderr)["truncated"] == sum(r["truncated"] for r in recs) == 0


def _summary_counts(stderr: str) -> dict[str, int]:
    """The counts of the summary table's first block (records, scored, errors, truncated, ...) from stderr."""
    lines = stderr.splitlines()
    i = next(i for i, line in enumerate(lines) if "truncated" in line.split())
    pairs = zip(lines[i].split(), lines[i + 1].split())  # a value with spaces (batching) can only come last
    return {h: int(v.replace(",", "")) for h, v in pairs if v.replace(",", "").isdigit()}


def test_long_truncate_really_drops_the_earliest_thinking_steps(model_dir, tmp_path):
    """`--long truncate` with a 1,024-token context: every trace whose text alone is longer than the context is
    scored with its earliest thinking steps dropped (`truncated`, `dropped_steps` > 0, one reward per kept
    step); traces far shorter than the context are untouched; the summary counts exactly the truncated ones."""
    from transformers import AutoTokenizer

    src = FIXTURES / "skythought_amc23_sample.jsonl"
    out = tmp_path / "cut.jsonl"
    res = fluxprm("score", str(src), "-m", model_dir, "-o", str(out), "--dtype", "float32", "--long", "truncate",
                  "--max-length", "1024")
    assert res.returncode == 0, res.stderr
    tok = AutoTokenizer.from_pretrained(model_dir)
    inputs = [json.loads(x) for x in src.read_text().splitlines()]
    tokens = {n: len(tok(r["question"] + r["response"])["input_ids"]) for n, r in enumerate(inputs, 1)}
    recs = {r["line"]: r for r in (json.loads(x) for x in out.read_text().splitlines())}
    over = [n for n in recs if tokens[n] > 1024]
    under = [n for n in recs if tokens[n] < 512]
    assert len(over) >= 2 and len(under) >= 2, tokens
    for n in over:
        r = recs[n]
        assert r["truncated"] is True and r["dropped_steps"] > 0, r
        assert len(r["step_rewards"]) == r["num_steps"] - r["dropped_steps"]
        assert "windows" not in r  # truncate never falls back to windows
    for n in under:
        assert recs[n]["truncated"] is False and "dropped_steps" not in recs[n]
        assert len(recs[n]["step_rewards"]) == recs[n]["num_steps"]
    assert _summary_counts(res.stderr)["truncated"] == sum(r["truncated"] for r in recs.values())


def test_on_error_fail_names_file_and_line(model_dir, many_traces, tmp_path):
    res = fluxprm("score", str(many_traces), "-m", model_dir, "-o", str(tmp_path / "o.jsonl"), "--on-error", "fail",
                  "--dtype", "float32")
    assert res.returncode == 1
    assert f"{many_traces}:8" in res.stderr


def test_missing_input_and_unknown_model_are_clear(model_dir, tmp_path):
    res = fluxprm("score", str(tmp_path / "nope.jsonl"), "-m", model_dir)
    assert res.returncode == 2 and "not found" in res.stderr and "Traceback" not in res.stderr
    src = tmp_path / "x.jsonl"
    src.write_text("{}\n")
    res = fluxprm("score", str(src), "-m", "no-such-model")
    assert res.returncode == 2 and "no-such-model" in res.stderr and "Traceback" not in res.stderr


def _resume_args(model_dir: str, many_traces: Path) -> list[str]:
    """The score command line (minus -o) of the uninterrupted run and the runs that resume towards its bytes."""
    return ["score", str(many_traces), "-m", model_dir, "--dtype", "float32", "--chunk-size", "4", "--batching",
            "single"]


@pytest.fixture(scope="module")
def uninterrupted(model_dir, many_traces, tmp_path_factory) -> Iterator[Callable[[], Path]]:
    """The uninterrupted run the resume tests compare with, made once and in the background (the kill -9 test
    starts its own run meanwhile); the fixture is a function that waits for it and returns its output path."""
    ref = tmp_path_factory.mktemp("uninterrupted") / "ref.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fluxprm", *_resume_args(model_dir, many_traces), "-o", str(ref)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    def wait() -> Path:
        stderr = proc.communicate(timeout=600)[1] if proc.returncode is None else ""
        assert proc.returncode == 0, stderr
        return ref

    try:
        yield wait
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kill9_then_resume_equals_uninterrupted(model_dir, many_traces, uninterrupted, tmp_path):
    common = _resume_args(model_dir, many_traces)[1:]
    out = tmp_path / "run.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fluxprm", "score", *common, "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    progress = tmp_path / "run.jsonl.progress.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if json.loads(progress.read_text())["done"] >= 12:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = json.loads(progress.read_text())
    assert 0 < done["done"] < 60 and not done["complete"], "the kill must land mid-run"

    res = fluxprm("score", *common, "-o", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    assert "resumed" in res.stderr
    ref = uninterrupted()
    assert out.read_bytes() == ref.read_bytes()
    assert (tmp_path / "run.errors.jsonl").read_bytes() == ref.with_name("ref.errors.jsonl").read_bytes()
    # a second resume of a finished run does nothing
    res = fluxprm("score", *common, "-o", str(out), "--resume")
    assert res.returncode == 0 and "already complete" in res.stderr


def test_resume_torn_tail_is_discarded(model_dir, many_traces, uninterrupted, tmp_path):
    """Bytes written after the last checkpoint (a torn line) are dropped on resume."""
    common = _resume_args(model_dir, many_traces)[1:]
    ref = uninterrupted()
    out = tmp_path / "o.jsonl"
    lines = ref.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:7]) + lines[7][:25])  # 7 good lines, then a torn one
    progress = json.loads(ref.with_name("ref.jsonl.progress.json").read_text())
    first_chunk = b"".join(lines[:7])
    ref_errors = ref.with_name("ref.errors.jsonl").read_bytes()
    first_error = ref_errors.splitlines(keepends=True)[0]
    # records 0-7 (two chunks of 4) hold 7 good ones and the bad record 7
    progress.update(done=8, out_bytes=len(first_chunk), complete=False, err_bytes=len(first_error),
                    out_sha=hashlib.sha256(first_chunk).hexdigest(), err_sha=hashlib.sha256(first_error).hexdigest())
    (tmp_path / "o.jsonl.progress.json").write_text(json.dumps(progress))
    (tmp_path / "o.errors.jsonl").write_bytes(first_error)
    res = fluxprm("score", *common, "-o", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == ref.read_bytes()


def test_models_lists_registry():
    res = fluxprm("models")
    assert res.returncode == 0
    for name in ("reasonflux-prm-7b", "reasonflux-prm-1.5b", "qwen2.5-math-prm-7b", "qwen2.5-math-prm-72b",
                 "math-shepherd-mistral-7b"):
        assert name in res.stdout


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_version():
    from fluxprm import __version__

    res = fluxprm("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"fluxprm {__version__}"


def test_separator_escapes_mean_newlines(model_dir, tmp_path):
    """`--separator '\\n'` splits on newlines (it was taken literally, so every trace became one step)."""
    lines = [f"line {k}: a thought long enough to be a step of its own" for k in range(4)]
    src = _write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "problem": "Find x.",
                                               "response": "<think>" + "\n".join(lines) + "</think>x = 1."}])
    common = [str(src), "-m", model_dir, "--dtype", "float32", "--min-chars", "0"]
    res = fluxprm("score", *common, "--separator", "\\n", "-o", str(tmp_path / "nl.jsonl"))
    assert res.returncode == 0, res.stderr
    [rec] = [json.loads(x) for x in (tmp_path / "nl.jsonl").read_text().splitlines()]
    assert len(rec["thinking_step_rewards"]) == 4
    res = fluxprm("score", *common, "-o", str(tmp_path / "blank.jsonl"))  # default: blank lines
    [rec] = [json.loads(x) for x in (tmp_path / "blank.jsonl").read_text().splitlines()]
    assert len(rec["thinking_step_rewards"]) == 1
    bad = fluxprm("score", *common, "--separator", "\\", "-o", str(tmp_path / "bad.jsonl"))
    assert bad.returncode == 2 and "--separator" in bad.stderr and "Traceback" not in bad.stderr


def test_all_records_rejected_exits_1_with_causes(model_dir, tmp_path):
    src = _write_jsonl(tmp_path / "steps.jsonl", [{"id": f"q{i}", "problem": "Find x.",
                                                   "process": ["x = 1", "so x is 1"]} for i in range(3)])
    out = tmp_path / "o.jsonl"
    res = fluxprm("score", str(src), "-m", model_dir, "-o", str(out), "--dtype", "float32")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "rejected: 3 records" in res.stderr and f"e.g. {src}:1:" in res.stderr
    assert "none of the 3 records" in res.stderr
    assert len((tmp_path / "o.errors.jsonl").read_text().splitlines()) == 3
    assert "hint: try --steps-field process" in res.stderr
    fixed = fluxprm("score", str(src), "-m", model_dir, "-o", str(out), "--dtype", "float32", "--steps-field", "process")
    assert fixed.returncode == 0 and len(out.read_text().splitlines()) == 3, fixed.stderr


def test_empty_input_warns_and_clean_run_leaves_no_errors_file(model_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    good = _write_jsonl(tmp_path / "good.jsonl", [{"id": "a", "problem": "Find x.", "response": "x = 1."}])
    out = tmp_path / "o.jsonl"
    res = fluxprm("score", str(empty), str(good), "-m", model_dir, "-o", str(out), "--dtype", "float32")
    assert res.returncode == 0, res.stderr
    assert f"warning: {empty} holds no records" in res.stderr
    assert str(good) not in res.stderr.split("warning:", 1)[1].splitlines()[0]
    assert len(out.read_text().splitlines()) == 1
    assert not (tmp_path / "o.errors.jsonl").exists() and "rejected" not in res.stderr


def test_progress_total_counts_json_array_records(model_dir, tmp_path):
    from fluxprm.records import count_records

    src = tmp_path / "pool.json"
    src.write_text(json.dumps([{"id": f"p{i}", "problem": "Find x.", "response": "x = 1."} for i in range(3)]))
    assert count_records(src) == 3
    res = fluxprm("score", str(src), "-m", model_dir, "-o", str(tmp_path / "o.jsonl"), "--dtype", "float32")
    assert res.returncode == 0, res.stderr
    assert "3/3" in res.stderr


def test_usage_errors_exit_2_in_one_line(model_dir, tmp_path):
    src = _write_jsonl(tmp_path / "x.jsonl", [{"id": "a", "problem": "p", "response": "r"}])
    for args, needle in ((["score", str(tmp_path), "-m", model_dir], "directory"),
                         (["score", str(src), "-m", model_dir, "--chunk-size", "0"], "--chunk-size"),
                         (["score", str(src), "-m", model_dir, "--long", "sideways"], "--long"),
                         (["score", str(src), "-m", model_dir, "--workers", "2"], "only apply with --ray"),
                         (["label", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "l.jsonl")], "not found")):
        res = fluxprm(*args)
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)


def test_repeated_ids_are_reported(model_dir, tmp_path):
    src = _write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "problem": "Find x.", "response": "x = 1."},
                                                {"id": "a", "problem": "Find y.", "response": "y = 2."}])
    res = fluxprm("score", str(src), "-m", model_dir, "-o", str(tmp_path / "o.jsonl"), "--dtype", "float32")
    assert res.returncode == 0, res.stderr
    assert "1 record repeats an earlier record's id" in res.stderr and f"{src}:2" in res.stderr


def test_progress_in_a_log_is_plain_throttled_lines(capsys):
    """Off a terminal (nohup, CI logs) rich draws nothing until the end, so a long job prints plain progress
    lines instead, throttled, and the final count at the end (also of a failed run: how far it got)."""
    from fluxprm.cli.report import _ProgressLines, progress_bar

    context, advance = progress_bar("labelling", 10)
    assert isinstance(context, _ProgressLines)  # capsys: stderr is not a terminal
    with context:
        advance(3)  # well inside the 30 s interval: no line until the end
        assert capsys.readouterr().err == ""
    assert capsys.readouterr().err.splitlines() == ["labelling 3/10 records  30%  0:00 elapsed  ~0:00 left"]

    lines = _ProgressLines("labelling", 4, every=0.0)
    with lines:
        lines.advance(1)
        lines.advance(3)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "labelling 1/4 records  25%  0:00 elapsed  ~0:00 left"
    assert err[1:] == ["labelling 4/4 records  100%  0:00 elapsed"] * 2  # the last advance, then the final count

    with pytest.raises(RuntimeError):
        with _ProgressLines("scoring", None) as failing:
            failing.advance(2)
            raise RuntimeError("boom")
    assert capsys.readouterr().err.splitlines() == ["scoring 2 records  0:00 elapsed"]
    with pytest.raises(RuntimeError):
        with _ProgressLines("scoring", 5):
            raise RuntimeError("refused before any record")
    assert capsys.readouterr().err == ""  # its error alone, without a "0/5 records" line

    with _ProgressLines("labelling", 16, every=0.2):  # a long chunk: no record finishes for a while
        time.sleep(0.5)
    err = capsys.readouterr().err.splitlines()
    assert len(err) >= 3 and set(err) == {"labelling 0/16 records  0%  0:00 elapsed"}  # heartbeats, final count


def test_progress_shows_what_the_chunk_in_hand_is_doing(capsys):
    """A label chunk of long traces takes minutes with no record finished: its stage ("judge 120/262 steps") shows
    in brackets on the heartbeat lines of a log and in a column of the terminal's bar, and "" clears it."""
    from rich.progress import Progress

    from fluxprm.cli.report import _ProgressLines, _RichAdvance

    with _ProgressLines("labelling", 6, every=0.15) as lines:
        lines.detail("judge 120/262 steps")
        time.sleep(0.4)
        lines.detail("")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "labelling 0/6 records  0% (judge 120/262 steps)  0:00 elapsed"
    assert err[-1] == "labelling 0/6 records  0%  0:00 elapsed"  # cleared at the end of the chunk

    bar = Progress(disable=True)
    advance = _RichAdvance(bar, bar.add_task("labelling", total=6, detail=""))
    advance.detail("encoding 40 steps")
    assert bar.tasks[0].fields["detail"] == "encoding 40 steps"


def test_stage_progress_in_a_log_prints_each_stage(capsys):
    """`fluxprm train` in a log: one throttled display per stage (features, then optimizer steps), each ending with
    the line that says where it stopped; the rich bar it used printed nothing off a terminal."""
    from fluxprm.cli.report import stage_progress

    display, report = stage_progress("training")
    with display:
        for i in range(1, 4):
            report("features", i, 3)
        report("steps", 1, 40)
        report("steps", 7, 40)
    assert capsys.readouterr().err.splitlines() == ["training features 3/3  100%  0:00 elapsed",
                                                    "training steps 7/40  18%  0:00 elapsed  ~0:00 left"]


def test_progress_lines_estimate_time_left_from_this_runs_pace_on_resume(capsys, monkeypatch):
    """A --resume run first reports the 32 records an earlier run finished (run_job → report_resumed); the time
    left must come from the 16 this run labelled in 2 minutes (89 left: ~11 min), not from 48 "done" in 2
    minutes (~3:44) — however long the models took to load before the resumed records were reported."""
    from fluxprm.cli import report
    from fluxprm.jobs import report_resumed

    clock = iter([0.0, 45.0, 165.0])
    monkeypatch.setattr(report.time, "monotonic", lambda: next(clock))
    lines = report._ProgressLines("labelling", 137)
    lines.__enter__()
    report_resumed(lines, 32)  # the resumed records, after a 45 s model load
    lines(16)  # this run's first chunk, two minutes later
    assert capsys.readouterr().err.splitlines() == ["labelling 48/137 records  35%  2:45 elapsed  ~11:07 left"]
    lines._stop.set()  # stop the heartbeat before the fake clock runs out
    monkeypatch.undo()  # (the fake clock is time.monotonic itself, which rich reads too)

    seen: list[int] = []
    report_resumed(seen.append, 5)  # a plain callable (a library caller's) counts them as ordinary records
    assert seen == [5]

    from rich.progress import Progress

    bar = Progress(disable=True)  # a terminal's rich bar: the resumed count restarts the task, dropping samples
    advance = report._RichAdvance(bar, bar.add_task("labelling", total=137))
    advance(3)
    report_resumed(advance, 32)
    advance(16)
    (task,) = bar.tasks
    assert task.completed == 48 and sum(sample.completed for sample in task._progress) == 16


@pytest.mark.parametrize("columns", [80, 200])
def test_models_fits_the_terminal_and_keeps_every_field(columns):
    """At 80 columns the descriptions fold under their rows; wider, they are a column. Nothing is cut."""
    from fluxprm.models.registry import REGISTRY

    res = subprocess.run([sys.executable, "-m", "fluxprm", "models"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": str(columns)})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(map(len, lines)) <= columns, [line for line in lines if len(line) > columns]
    words = res.stdout.split()
    for e in REGISTRY.values():
        assert e.name in words and e.format in words and (e.hub_id or f"bundled:{e.bundled}") in words
        start = words.index(e.description.split()[0])
        assert words[start:start + len(e.description.split())] == e.description.split()


def test_windows_print_no_tokenizer_warning_the_user_cannot_act_on(tmp_path):
    """Clipping context for windows decodes tokens; with the embedded model's tokenizer (BPE, cleanup on in its
    config) transformers warned about clean_up_tokenization_spaces. The scores stay those of the clipped text."""
    example = Path(__file__).resolve().parents[1] / "examples" / "traces.jsonl"
    src = tmp_path / "long.jsonl"
    src.write_text(example.read_text().splitlines()[2] + "\n")  # a long trace that needs several windows
    out = tmp_path / "w.jsonl"
    res = fluxprm("score", str(src), "-o", str(out), "--long", "windows")
    assert res.returncode == 0, res.stderr
    assert all(json.loads(x)["windows"] > 1 for x in out.read_text().splitlines())
    assert "clean_up_tokenization" not in res.stderr, res.stderr
