"""``fluxprm score --ray``: Ray Data scoring on a real local Ray cluster of 2 CPUs (the session's, shared with
``test_distributed_label``: ``tests/ray_cluster.py``).

The promises checked (docs/DISTRIBUTED.md): a distributed run writes byte for byte the files a single-process
run writes (scores and errors file), with an actor pool of ``--workers`` model copies; a driver killed with
SIGKILL mid-run resumes with ``--resume`` to those same bytes (on the cluster, or in one process); and the
usage errors are one line. Every Ray run is a ``fluxprm`` subprocess joining the cluster with ``--address``,
bounded by a timeout; the cluster is this test process's own ``ray.init`` and stops with ``ray.shutdown``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest

from builders import build_qwen_prm
from processes import kill_after_first_checkpoint
from ray_cluster import (TIMEOUT, BackgroundRun, assert_same_files, fluxprm, imported_torch, pool_actors, ray_args,
                         ray_env)

RECORDS = 60


def _traces(path: Path) -> Path:
    """R1 traces of varied length (padded batches mix lengths), a Best-of-N pool record (one trace per
    candidate), records without ids, and cut-off lines that belong in the errors file."""
    lines = []
    for i in range(RECORDS):
        if i % 11 == 4:
            lines.append('{"id": "cut%d", "problem": "What is' % i)
            continue
        steps = [f"Step {k} of trace {i}: we " + "carefully compute the partial sum again and " * (1 + (i + k) % 6)
                 + "note it." for k in range(1 + i % 5)]
        response = "<think>" + "\n\n".join(steps) + f"</think>The answer is {2 * i}."
        if i == 7:
            lines.append(json.dumps({"id": "pool7", "problem": "What is 7 + 7?",
                                     "response": [response, "The answer is 15.", "14, since 7 + 7 = 14."]}))
        elif i % 13 == 9:
            lines.append(json.dumps({"problem": f"What is {i} + {i}?", "response": response}))
        else:
            lines.append(json.dumps({"id": f"t{i}", "problem": f"What is {i} + {i}?", "response": response}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Iterator[dict[str, object]]:
    """The input, the model and the single-process reference run every Ray run is compared with.

    The reference runs in the background while the cluster starts and the first Ray run takes it: the file's
    wall time is what the suite pays. :func:`_reference` waits for it.
    """
    folder = tmp_path_factory.mktemp("distributed")
    src = _traces(folder / "traces.jsonl")
    args = ["score", str(src), "-m", str(build_qwen_prm(None)), "--dtype", "float32", "--device", "cpu",
            "--chunk-size", "4"]
    with BackgroundRun(*args, "--threads", "1", output=folder / "ref" / "out.jsonl") as reference:
        yield {"args": args, "reference": reference, "folder": folder}


def _reference(work: dict[str, object]) -> Path:
    """The reference scores file, once its run has finished."""
    return work["reference"].result()  # type: ignore[attr-defined]


def test_a_ray_run_writes_the_bytes_of_a_single_process_run(work, cluster):
    before = pool_actors()
    out = work["folder"] / "ray" / "out.jsonl"
    res = fluxprm(*work["args"], *ray_args(cluster), "-o", str(out), PYTHONPROFILEIMPORTTIME="1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not imported_torch(res.stderr)  # the driver only reads, sends and writes: the actors score
    assert_same_files(out, _reference(work))
    assert "on a Ray worker" in res.stderr and "Traceback" not in res.stderr
    new_jobs = {job: pids for job, pids in pool_actors().items() if job not in before}
    assert [len(pids) for pids in new_jobs.values()] == [2], new_jobs  # one pool of two actors scored the run
    assert json.loads(out.with_name("out.jsonl.progress.json").read_bytes())["complete"] is True


def test_reference_run_has_scores_errors_and_a_pool(work):
    """The input exercises what must survive the trip to the workers: source/line, pool candidates, no-id ids."""
    reference = _reference(work)
    records = [json.loads(line) for line in reference.read_text().splitlines()]
    errors = [json.loads(line) for line in reference.with_name("out.errors.jsonl").read_text().splitlines()]
    assert len(errors) == len(range(4, RECORDS, 11))
    assert len(records) == RECORDS - len(errors) + 2  # the pool record gives three traces
    assert [r["candidate"] for r in records if r["id"].startswith("pool7#")] == [0, 1, 2]
    assert any(r["id"] == "traces.jsonl:10" for r in records)
    assert all(r["source"].endswith("traces.jsonl") and r["line"] >= 1 for r in records)


def _kill_after_first_checkpoint(args: list[str], out: Path) -> int:
    """Start a ``--ray`` driver, SIGKILL it as soon as its checkpoint counts a finished chunk; return that count."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return kill_after_first_checkpoint(args, out, env=ray_env(), records=RECORDS, timeout=TIMEOUT)


def test_a_killed_ray_driver_resumes_to_the_same_bytes(work, cluster):
    """kill -9 of the driver mid-run, then --resume: on the cluster, and (the same files) in one process."""
    args = [*work["args"], *ray_args(cluster)]
    killed = work["folder"] / "killed" / "out.jsonl"
    done = _kill_after_first_checkpoint(args, killed)
    local = work["folder"] / "local-resume"
    shutil.copytree(killed.parent, local)

    # The one-process resume runs in the background while the cluster resume runs.
    with BackgroundRun(*work["args"], "--threads", "1", "--resume", output=local / "out.jsonl") as single:
        res = fluxprm(*args, "-o", str(killed), "--resume")
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"resumed: {done} records were already done" in res.stderr
        assert_same_files(killed, _reference(work))
        assert_same_files(single.result(), _reference(work))


def _cli(*args: str):
    """``fluxprm ARGS`` in this process (usage errors stop before any model or cluster is touched)."""
    from typer.testing import CliRunner

    from fluxprm.cli import app

    return CliRunner().invoke(app, list(args))


def test_ray_flags_without_ray_are_refused(work, tmp_path):
    res = _cli(*work["args"], "--workers", "2", "--address", "127.0.0.1:1", "-o", str(tmp_path / "o.jsonl"))
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines()[-1] == "error: --address, --workers only apply with --ray"


def test_an_address_where_nothing_answers_is_one_line(work, tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = fluxprm(*work["args"], "--ray", "--address", f"127.0.0.1:{port}", "-o", str(tmp_path / "o.jsonl"),
                  timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot reach the Ray cluster at 127.0.0.1:{port}") and "ray start --head" in last
    assert not (tmp_path / "o.jsonl").exists()


def test_without_ray_installed_the_error_names_the_extra(work, tmp_path, monkeypatch):
    """``import ray`` failing (Ray not installed) ends in one line naming ``pip install 'fluxprm[ray]'``."""
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to `import ray`
    res = _cli(*work["args"], "--ray", "-o", str(tmp_path / "o.jsonl"))
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.exception
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --ray needs Ray Data") and "pip install 'fluxprm[ray]'" in last
    assert not (tmp_path / "o.jsonl").exists()


def _bon_pool(path: Path) -> Path:
    """Best-of-N pool records: a problem, its gold answer and four candidates of different lengths each."""
    lines = []
    for i in range(6):
        answers = [2 * i, 2 * i + 1, 2 * i, 3 * i]
        responses = ["<think>" + "\n\n".join(f"Step {k}: add {i} and {i} " + "once more " * ((i + j + k) % 4)
                                             for k in range(1 + (i + j) % 3)) + f"</think>The answer is {a}."
                     for j, a in enumerate(answers)]
        lines.append(json.dumps({"id": f"p{i}", "problem": f"What is {i} + {i}?", "gold": str(2 * i),
                                 "response": responses}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_select_and_bon_with_ray_write_the_bytes_of_a_single_process_run(work, cluster):
    """``select -m`` and ``bon -m`` score through the same pool: every file they write (scores, selection,
    errors, Best-of-N metrics and picks) is byte for byte the file of the run without ``--ray``."""
    folder = work["folder"]
    model = work["args"][work["args"].index("-m") + 1]
    machine = ["-m", model, "--dtype", "float32", "--device", "cpu"]
    select = ["select", str(folder / "traces.jsonl"), *machine, "--top-k", "10"]
    bon = ["bon", str(_bon_pool(folder / "pool.jsonl")), "-m", model, "--samples", "20"]
    runs = {name: (args, folder / name) for name, args in (("select", select), ("bon", bon))}

    def out_arg(name: str, kind: str) -> str:
        return str(runs[name][1] / kind / ("sel.jsonl" if name == "select" else ""))

    # The single-process runs go in the background while the Ray runs take turns on the 2-CPU cluster: the file's
    # wall time is what the suite pays.
    singles = {name: BackgroundRun(*args, "--threads", "1", output=Path(out_arg(name, "single")))
               for name, (args, _) in runs.items()}
    try:
        for name, (args, _) in runs.items():
            before = pool_actors()
            res = fluxprm(*args, *ray_args(cluster), "-o", out_arg(name, "ray"), PYTHONPROFILEIMPORTTIME="1")
            assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
            assert not imported_torch(res.stderr), name  # the driver reads, sends, picks and writes; actors score
            new_jobs = {job: pids for job, pids in pool_actors().items() if job not in before}
            assert [len(pids) for pids in new_jobs.values()] == [2], (name, new_jobs)  # it scored on a pool of 2
        for single in singles.values():
            single.result()
    finally:
        for single in singles.values():
            single.stop()
    for name, (_, out) in runs.items():
        single_files, ray_files = _files(out / "single"), _files(out / "ray")
        assert any(n.endswith("scores.jsonl") for n in ray_files) and len(ray_files) >= 3, sorted(ray_files)
        assert sorted(ray_files) == sorted(single_files)
        for file_name, content in single_files.items():
            assert ray_files[file_name] == content, f"{name}: {file_name} differs with --ray"


def test_ray_flags_without_ray_are_refused_by_select_bon_and_eval(work, tmp_path):
    src = str(work["folder"] / "traces.jsonl")
    for args in (["select", src, "--scores", src, "--top-k", "1", "--workers", "2", "-o", str(tmp_path / "s.jsonl")],
                 ["bon", src, "--score-field", "x", "--address", "127.0.0.1:1", "-o", str(tmp_path / "b")],
                 ["eval", "outcome", src, "--scores", src, "--workers", "2", "-o", str(tmp_path / "e")]):
        res = _cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert res.stderr.strip().splitlines()[-1].endswith("only apply with --ray"), res.stderr
    res = _cli("select", src, "--score-field", "x", "--top-k", "1", "--ray", "-o", str(tmp_path / "s.jsonl"))
    assert res.exit_code == 2 and "apply to scoring with a model" in res.stderr.strip().splitlines()[-1]
