"""Faults from outside, on real ``fluxprm`` subprocesses: ``kill -9`` mid-run then ``--resume``, and resumes
that must be refused because what is on disk can no longer be trusted.

README "Reliability": output is checkpointed per chunk; ``--resume`` after a crash or ``kill -9`` produces a
file byte-identical to an uninterrupted run; it checks that the output still starts with exactly the bytes
the checkpoint recorded and refuses otherwise, never trusting a damaged checkpoint; inputs are never
overwritten. Refusals are usage errors: exit code 2 and one ``error:`` line, with every file left as it was.

For each of ``fluxprm score`` (tiny random-weight Qwen PRM) and ``fluxprm label`` (``--no-judge``: the bundled
MiniLM encoder for alignment and coherence, whose run-wide negative pool a resume must rebuild exactly), one
uninterrupted reference run and one run killed with SIGKILL after its first checkpoint are made once; every
test then works on its own copy of the killed run's files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from builders import build_qwen_prm
from processes import kill_after_first_checkpoint

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
RECORDS = 100  # enough that a run is still going when its first checkpoint appears


def fluxprm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fluxprm", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _traces(path: Path) -> Path:
    """R1 traces with several thinking steps each; every 9th line is cut off (a bad record for the errors file)."""
    lines = []
    for i in range(RECORDS):
        if i % 9 == 4:
            lines.append('{"id": "cut%d", "problem": "What is' % i)
            continue
        steps = [f"Step {k} of trace {i}: we " + "carefully compute the partial sum again and " * (2 + (i + k) % 5)
                 + "note it." for k in range(2 + i % 4)]
        lines.append(json.dumps({"id": f"t{i}", "problem": f"What is {i} + {i}?",
                                 "response": "<think>" + "\n\n".join(steps) + f"</think>The answer is {2 * i}."}))
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Runs:
    """One command's reference run and the files a SIGKILLed run of it left behind."""

    command: str
    args: list[str]            # the command line minus -o/--resume
    reference: Path            # output of the uninterrupted run (errors file beside it)
    killed: Path               # folder holding out.jsonl, out.errors.jsonl (if any) and out.jsonl.progress.json
    done_at_kill: int


def _command_args(command: str, src: Path, model_dir: str, work: Path) -> list[str]:
    if command == "score":
        return ["score", str(src), "-m", model_dir, "--threads", "1", "--dtype", "float32", "--chunk-size", "4",
                "--batching", "single"]
    return ["label", str(src), "--no-judge", "--device", "cpu", "--cache", str(work / "llm.sqlite"),
            "--chunk-size", "2", "--negatives", "4"]


def _kill_after_first_checkpoint(args: list[str], out: Path) -> int:
    """Start the command, SIGKILL it as soon as its checkpoint counts a finished chunk; return that count."""
    return kill_after_first_checkpoint(args, out, env=ENV, records=RECORDS, timeout=300)


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(build_qwen_prm(None))


@pytest.fixture(scope="module", params=["score", "label"])
def runs(request, tmp_path_factory, model_dir) -> Runs:
    work = tmp_path_factory.mktemp(request.param)
    src = _traces(work / "traces.jsonl")
    args = _command_args(request.param, src, model_dir, work)
    reference = work / "ref" / "out.jsonl"
    # The reference runs in the background while the run to kill starts beside it: two one-thread processes.
    proc = subprocess.Popen([sys.executable, "-m", "fluxprm", *args, "-o", str(reference)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        killed = work / "killed"
        killed.mkdir()
        done = _kill_after_first_checkpoint(args, killed / "out.jsonl")
        stderr = proc.communicate(timeout=600)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    return Runs(request.param, args, reference, killed, done)


def _copy_killed(runs: Runs, dst: Path) -> Path:
    """A private copy of the killed run's files; returns its output path (the run id does not include it)."""
    shutil.copytree(runs.killed, dst)
    return dst / "out.jsonl"


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    return {p.name: (p.read_bytes() if p.is_file() else "<dir>") for p in sorted(folder.iterdir())}


def _assert_refused(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line (the last), naming what it must; returns that line."""
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# ------------------------------------------------------------------------------------------------ kill -9, resume


def test_sigkill_then_resume_equals_an_uninterrupted_run(runs, tmp_path):
    """The SIGKILL test README "Testing" promises for score and label: resume after ``kill -9`` gives the
    uninterrupted run's bytes (output and errors file), and resuming a finished run does nothing."""
    out = _copy_killed(runs, tmp_path / "run")
    res = fluxprm(*runs.args, "-o", str(out), "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed: {runs.done_at_kill} records were already done" in res.stderr
    assert out.read_bytes() == runs.reference.read_bytes()
    ref_errors = runs.reference.with_name("out.errors.jsonl")
    assert (out.parent / "out.errors.jsonl").read_bytes() == ref_errors.read_bytes()
    assert len(ref_errors.read_text().splitlines()) == len(range(4, RECORDS, 9))
    again = fluxprm(*runs.args, "-o", str(out), "--resume")
    assert again.returncode == 0 and "already complete" in again.stderr, again.stderr[-3000:]
    assert out.read_bytes() == runs.reference.read_bytes()


# ------------------------------------------------------------------------------------------------ refused resumes


def test_resume_after_the_output_was_truncated_is_refused(runs, tmp_path):
    out = _copy_killed(runs, tmp_path / "run")
    kept = json.loads(out.with_name("out.jsonl.progress.json").read_bytes())["out_bytes"]
    assert kept > 0
    with open(out, "r+b") as f:
        f.truncate(kept // 2)
    before = _snapshot(out.parent)
    res = fluxprm(*runs.args, "-o", str(out), "--resume")
    _assert_refused(res, str(out), "truncated")
    assert _snapshot(out.parent) == before, "a refused resume must leave every file as it was"


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x00\xffnot a checkpoint{{{")


def _not_an_object(p: Path) -> None:
    p.write_text(json.dumps([json.loads(p.read_bytes())]))


def _done_as_text(p: Path) -> None:
    state = json.loads(p.read_bytes())
    p.write_text(json.dumps({**state, "done": str(state["done"])}))


def _directory(p: Path) -> None:
    p.unlink()
    p.mkdir()
    (p / "inside.txt").write_text("a directory where the checkpoint was\n")


DAMAGES = {"garbage": _garbage, "not-an-object": _not_an_object, "done-as-text": _done_as_text, "directory": _directory}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_with_a_damaged_checkpoint_is_refused(runs, tmp_path, damage):
    out = _copy_killed(runs, tmp_path / "run")
    checkpoint = out.with_name("out.jsonl.progress.json")
    DAMAGES[damage](checkpoint)
    before = _snapshot(out.parent)
    res = fluxprm(*runs.args, "-o", str(out), "--resume")
    _assert_refused(res, str(checkpoint))
    assert _snapshot(out.parent) == before, "a refused resume must leave every file as it was"


def test_a_refused_resume_prints_only_its_error_line(runs, tmp_path):
    out = _copy_killed(runs, tmp_path / "run")
    _garbage(out.with_name("out.jsonl.progress.json"))
    res = fluxprm(*runs.args, "-o", str(out), "--resume")
    error = _assert_refused(res)
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [error]


# ------------------------------------------------------------------------------------------------ inputs are inputs


@pytest.mark.parametrize("command", ["score", "label"])
@pytest.mark.parametrize("how", ["-o", "--errors", "-o symlink", "-o --resume"])
def test_an_output_that_is_the_input_is_refused(command, how, tmp_path, model_dir):
    src = _traces(tmp_path / "traces.jsonl")
    before = src.read_bytes()
    args = _command_args(command, src, model_dir, tmp_path)
    if how == "--errors":
        extra = ["-o", str(tmp_path / "out.jsonl"), "--errors", str(src)]
    elif how == "-o symlink":
        link = tmp_path / "link.jsonl"
        link.symlink_to(src)
        extra = ["-o", str(link)]
    else:
        extra = ["-o", str(src)] + (["--resume"] if "--resume" in how else [])
    res = fluxprm(*args, *extra)
    _assert_refused(res, "input")
    assert src.read_bytes() == before
    assert not (tmp_path / "out.jsonl").exists()
