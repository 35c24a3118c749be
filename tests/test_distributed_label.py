"""``fluxprm label --ray``: teacher rewards labelled on a real local Ray cluster of 2 CPUs (the session's, shared
with ``test_distributed``: ``tests/ray_cluster.py``).

The promises checked (docs/DISTRIBUTED.md, "label"): with the judge on (the embedded SmolLM2, ``--judge-prompt``
default) and coherence on (the run-wide negative pool, embedded by one actor and shipped to all), a run on a
pool of two actors writes byte for byte the label and errors files of a single-process run, whatever actor
labelled which chunk; a driver killed with SIGKILL after its first checkpoint resumes with ``--ray --resume``
to those same bytes; a backend that cannot load fails at once with the single-process message, checked on an
actor; the Ray flags without ``--ray`` are refused. Every run is a ``fluxprm`` subprocess with a timeout, each
with its own LLM cache file so that the actors really judge; the cluster is this process's ``ray.init``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from processes import kill_after_first_checkpoint
from ray_cluster import TIMEOUT, BackgroundRun, assert_same_files, fluxprm, pool_actors, ray_args, ray_env



# (problem, thinking step 1, thinking step 2, gold): each step long enough (>= 30 characters) to stay a step
PROBLEMS = [("What is 2+3?", "I need to add 2 and 3 together to get the sum.", "Counting up from 2 by three gives 5.",
             "5"),
            ("What is 7*8?", "Seven times eight is seven times four, doubled.", "Seven times four is 28; doubled, 56.",
             "56"),
            ("Compute 10 - 4.", "Subtracting four from ten leaves six units.", "Check: 6 + 4 = 10, so it is 6.", "6"),
            ("What is 9 squared?", "Nine squared means nine multiplied by nine.", "Nine times nine is 81 for sure.",
             "81"),
            ("Halve 30.", "Half of thirty is what we get dividing it by two.", "Thirty over two is 15, exactly.",
             "15"),
            ("What is 12 + 19?", "Twelve plus nineteen: add ten, then nine more.",
             "That gives 22, then 31, so the sum is 31.", "31")]
RECORDS = len(PROBLEMS) + 1  # six traces and one cut-off line


def _traces(path: Path) -> Path:
    """Six short R1 traces (two thinking steps each, so coherence has negatives from other traces) and a cut-off
    line that belongs in the errors file."""
    lines = [json.dumps({"id": f"t{i}", "problem": problem, "answer": gold,
                         "response": f"<think>\n{a}\n\n{b}\n</think>\n\nThe answer is \\boxed{{{gold}}}."})
             for i, (problem, a, b, gold) in enumerate(PROBLEMS)]
    lines.insert(3, '{"id": "broken", "problem": ')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Iterator[dict[str, object]]:
    """The input, and the single-process reference run (judge and coherence on) every Ray run is compared with.

    The reference runs in the background while the cluster starts and the first Ray run takes it: the file's
    wall time is what the suite pays. :func:`_reference` waits for it.
    """
    folder = tmp_path_factory.mktemp("distributed_label")
    src = _traces(folder / "traces.jsonl")
    args = ["label", str(src), "--device", "cpu", "--chunk-size", "2", "--negatives", "4"]
    with BackgroundRun(*args, "--cache", str(folder / "ref.sqlite"), output=folder / "ref" / "out.jsonl") as reference:
        yield {"args": args, "reference": reference, "folder": folder}


def _reference(work: dict[str, object]) -> Path:
    """The reference label file, once its run has finished."""
    return work["reference"].result()  # type: ignore[attr-defined]


def test_the_reference_labels_have_judge_and_coherence(work):
    """What the byte comparison is worth: every trace has judge scores and coherence from other traces' steps."""
    reference = _reference(work)
    records = [json.loads(line) for line in reference.read_text().splitlines()]
    errors = [json.loads(line) for line in reference.with_name("out.errors.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"t{i}" for i in range(len(PROBLEMS))]
    assert [e["line"] for e in errors] == [4]
    for r in records:
        assert r["judge_prompt"] == "v2" and len(r["thinking_steps"]) == 2
        assert all(q is not None and 0 <= q <= 1 for q in r["components"]["quality"])
        assert all(c is not None and 0 < c < 1 for c in r["components"]["coherence"])


def test_a_ray_run_killed_and_resumed_writes_the_bytes_of_a_single_process_run(work, cluster):
    """kill -9 of the ``--ray`` driver after its first checkpoint, then ``--ray --resume``: the files of the
    single-process run, byte for byte — every chunk labelled on the cluster, before the kill and after it.
    (One test for both properties: each ``fluxprm label --ray`` run costs ~25 s of actor start-up here.)"""
    killed = work["folder"] / "killed" / "out.jsonl"
    killed.parent.mkdir(parents=True)
    args = [*work["args"], *ray_args(cluster), "--cache", str(killed.parent / "llm.sqlite")]
    done = kill_after_first_checkpoint(args, killed, env=ray_env(), records=RECORDS, timeout=TIMEOUT)
    before = pool_actors()
    res = fluxprm(*args, "-o", str(killed), "--resume")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert f"resumed: {done} records were already done" in res.stderr
    assert_same_files(killed, _reference(work))
    new_jobs = {job: pids for job, pids in pool_actors().items() if job not in before}
    assert [len(pids) for pids in new_jobs.values()] == [2], new_jobs  # one pool of two actors labelled the rest
    assert json.loads(killed.with_name("out.jsonl.progress.json").read_bytes())["complete"] is True


def _cli(*args: str):
    """``fluxprm ARGS`` in this process (usage errors stop before any model or cluster is touched)."""
    from typer.testing import CliRunner

    from fluxprm.cli import app

    return CliRunner().invoke(app, list(args))


def test_a_backend_that_cannot_load_fails_at_once_on_the_cluster_as_in_one_process(work, cluster, tmp_path):
    """check_backends runs on an actor: the same one line naming the option, before any chunk is labelled."""
    args = [*work["args"], "--no-judge", "--policy", "notaurl", "--cache", str(tmp_path / "c.sqlite")]
    single = _cli(*args, "-o", str(tmp_path / "single.jsonl"))
    assert single.exit_code == 2, single.output
    expected = single.stderr.strip().splitlines()[-1]
    assert expected.startswith("error: --policy notaurl: cannot load LLM 'notaurl'"), expected
    res = fluxprm(*args, *ray_args(cluster), "-o", str(tmp_path / "ray.jsonl"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1] == expected
    assert (tmp_path / "ray.jsonl").read_bytes() == b""  # nothing labelled


def test_ray_flags_without_ray_are_refused(work, tmp_path):
    res = _cli(*work["args"], "--workers", "2", "--cpus-per-worker", "2", "-o", str(tmp_path / "o.jsonl"))
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines()[-1] == "error: --workers, --cpus-per-worker only apply with --ray"
    assert not (tmp_path / "o.jsonl").exists()
