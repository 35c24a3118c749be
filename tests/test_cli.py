"""The command line end to end in subprocesses: score, errors, fail mode, kill -9 and resume, models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_kill9_then_resume_equals_uninterrupted(model_dir, many_traces, tmp_path):
    common = [str(many_traces), "-m", model_dir, "--dtype", "float32", "--chunk-size", "4", "--batching", "single"]
    ref = tmp_path / "ref.jsonl"
    assert fluxprm("score", *common, "-o", str(ref)).returncode == 0

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
    assert out.read_bytes() == ref.read_bytes()
    assert (tmp_path / "run.errors.jsonl").read_bytes() == (tmp_path / "ref.errors.jsonl").read_bytes()
    # a second resume of a finished run does nothing
    res = fluxprm("score", *common, "-o", str(out), "--resume")
    assert res.returncode == 0 and "already complete" in res.stderr


def test_resume_torn_tail_is_discarded(model_dir, many_traces, tmp_path):
    """Bytes written after the last checkpoint (a torn line) are dropped on resume."""
    common = [str(many_traces), "-m", model_dir, "--dtype", "float32", "--chunk-size", "8", "--batching", "single"]
    ref = tmp_path / "ref.jsonl"
    assert fluxprm("score", *common, "-o", str(ref)).returncode == 0
    out = tmp_path / "o.jsonl"
    lines = ref.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:7]) + lines[7][:25])  # 7 good lines, then a torn one
    progress = json.loads((tmp_path / "ref.jsonl.progress.json").read_text())
    first_chunk = b"".join(lines[:7])
    progress.update(done=8, out_bytes=len(first_chunk), complete=False,
                    err_bytes=len((tmp_path / "ref.errors.jsonl").read_bytes().splitlines(keepends=True)[0]))
    (tmp_path / "o.jsonl.progress.json").write_text(json.dumps(progress))
    (tmp_path / "o.errors.jsonl").write_bytes((tmp_path / "ref.errors.jsonl").read_bytes().splitlines(keepends=True)[0])
    res = fluxprm("score", *common, "-o", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == ref.read_bytes()


def test_models_lists_registry():
    res = fluxprm("models")
    assert res.returncode == 0
    for name in ("reasonflux-prm-7b", "reasonflux-prm-1.5b", "qwen2.5-math-prm-7b", "qwen2.5-math-prm-72b",
                 "math-shepherd-mistral-7b"):
        assert name in res.stdout
