"""``fluxprm eval``: tasks on hand-computed fixtures (scores files, no model), bad input, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fluxprm.eval import EvalError, EvalOptions, run_eval
from fluxprm.eval.sources import sources_from

RED = "redundency"


def prm_row(idx: str, cls: str, steps: int, errors: list[int], original: int = 3) -> dict:
    return {"idx": idx, "classification": cls, "modified_question": f"q {idx}", "original_question": f"q {idx}",
            "modified_process": [f"{cls} step {k}" for k in range(1, steps + 1)], "error_steps": errors,
            "original_process": [f"ok step {k}" for k in range(1, original + 1)]}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def score_rec(source: str, line: int, rewards: list[float], model: str = "toy", id: str = "") -> dict:
    """A score record for ``source:line``; without ``id`` it carries the id fluxprm makes up for an id-less record
    (``<file name>:<line>``), which the join does not compare with the record's own id."""
    return {"id": id or f"{Path(source).name}:{line}", "score": min(rewards) if rewards else None, "step_rewards": rewards,
            "thinking_step_rewards": [], "response_step_rewards": rewards, "trajectory_reward": None,
            "num_steps": len(rewards), "truncated": False, "model": model, "source": source, "line": line}


@pytest.fixture()
def prmbench(tmp_path: Path) -> tuple[str, str]:
    """Rows: 1 redundency p1; 2 confidence p1; 3 confidence p2 with an error step past its 2 steps (rejected);
    4 a duplicate of row 2 (upstream keeps the first of each (classification, idx))."""
    data = write_jsonl(tmp_path / "prmbench.jsonl", [prm_row("p1", RED, 4, [3]), prm_row("p1", "confidence", 3, [2, 3]),
                                                     prm_row("p2", "confidence", 2, [5]),
                                                     prm_row("p1", "confidence", 3, [2, 3])])
    src = str(data)
    scores = write_jsonl(tmp_path / "scores.jsonl", [
        score_rec(src, 1, [0.9, 0.6, 0.4, 0.5]), score_rec(src, 2, [0.7, 0.8, 0.2]),
        score_rec(src, 3, [0.9, 0.9]), score_rec(src, 4, [0.1, 0.1, 0.1])])
    return src, str(scores)


def test_prmbench_matches_hand_computed_prmscore(prmbench, tmp_path: Path) -> None:
    data, scores = prmbench
    result = run_eval("prmbench", [data], sources_from(None, [scores], None), tmp_path / "rep")
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    # TP 3, FP 1, TN 2, FN 1 over rows 1 and 2 (see tests/test_metrics.py for each row's counts)
    assert m["f1_correct"] == pytest.approx(0.75, abs=1e-4)
    assert m["f1_error"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["prmscore"] == pytest.approx(0.5 * 0.75 + 0.5 * 2 / 3, abs=1e-4)
    assert m["threshold"] == 0.5 and m["samples"] == 2
    assert m["per_class"][RED]["prmscore"] == pytest.approx(0.5 * 0.8 + 0.5 * 2 / 3, abs=1e-4)
    assert m["per_class"]["confidence"]["prmscore"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["per_class"]["confidence"]["samples"] == 1  # the duplicate row is not counted twice
    assert "PRMScore" in result.output.table
    assert (tmp_path / "rep" / "prmscore.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "summary.md").read_text().startswith("# PRMBench")


def test_prmbench_error_steps_past_the_steps_go_to_the_errors_file(prmbench, tmp_path: Path) -> None:
    data, scores = prmbench
    run_eval("prmbench", [data], sources_from(None, [scores], None), tmp_path / "rep")
    errors = [json.loads(line) for line in (tmp_path / "rep" / "errors.jsonl").read_text().splitlines()]
    assert [(e["source"], e["line"]) for e in errors] == [(data, 3)]
    assert "error_steps [5] outside 1..2: the sample's gold labels cannot be trusted" in errors[0]["error"]


def test_threshold_changes_the_counts(prmbench, tmp_path: Path) -> None:
    data, scores = prmbench
    run_eval("prmbench", [data], sources_from(None, [scores], None), tmp_path / "rep", EvalOptions(threshold=0.45))
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    # at 0.45 the 0.5 step of row 1 becomes valid: TP 4, FP 1, TN 2, FN 0
    assert m["f1_correct"] == pytest.approx(2 * 0.8 * 1 / 1.8, abs=1e-4)
    assert m["f1_error"] == pytest.approx(2 * 1 * (2 / 3) / (5 / 3), abs=1e-4)


def test_a_scores_file_that_does_not_match_names_the_missing_ids(prmbench, tmp_path: Path) -> None:
    data, _ = prmbench
    partial = write_jsonl(tmp_path / "partial.jsonl", [score_rec(data, 1, [0.9, 0.6, 0.4, 0.5])])
    with pytest.raises(EvalError, match=r"no score for 3 of 4 traces \(ids p1, p2, p1\)"):
        run_eval("prmbench", [data], sources_from(None, [str(partial)], None), tmp_path / "rep")


def test_two_score_files_side_by_side(prmbench, tmp_path: Path) -> None:
    data, scores = prmbench
    src = data
    other = write_jsonl(tmp_path / "other.jsonl", [score_rec(src, k, [0.9] * n, model="always-valid")
                                                   for k, n in ((1, 4), (2, 3), (3, 2), (4, 3))])
    result = run_eval("prmbench", [data], sources_from(None, [scores, str(other)], None), tmp_path / "rep")
    m = result.output.metrics
    assert list(m["models"]) == ["toy", "always-valid"]
    assert m["models"]["always-valid"]["f1_error"] is None  # never flags a step: F1 on errors undefined
    assert "always-valid" in result.output.table and "toy" in result.output.table


# ---- processbench ----------------------------------------------------------------------------------------

def pb_row(k: int, label: int, n: int = 3) -> dict:
    return {"id": f"pb{k}", "problem": f"problem {k}", "steps": [f"s{k}.{j}" for j in range(n)], "label": label}


@pytest.fixture()
def processbench(tmp_path: Path) -> tuple[str, str]:
    data = write_jsonl(tmp_path / "pb.jsonl", [pb_row(1, 1), pb_row(2, -1), pb_row(3, 0), pb_row(4, -1)])
    src = str(data)
    scores = write_jsonl(tmp_path / "pb_scores.jsonl", [
        score_rec(src, 1, [0.9, 0.3, 0.8]),   # first < 0.5 at 1 = label 1: hit
        score_rec(src, 2, [0.9, 0.6, 0.7]),   # no error predicted, label -1: hit
        score_rec(src, 3, [0.6, 0.2, 0.1]),   # predicted 1, label 0: miss
        score_rec(src, 4, [0.9, 0.45, 0.9])])  # predicted 1, label -1: miss
    return src, str(scores)


def test_processbench_by_hand(processbench, tmp_path: Path) -> None:
    data, scores = processbench
    run_eval("processbench", [data], sources_from(None, [scores], None), tmp_path / "rep")
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert (m["acc_error"], m["acc_correct"], m["f1"], m["threshold"]) == (0.5, 0.5, 0.5, 0.5)
    assert (tmp_path / "rep" / "f1_vs_threshold.png").exists()


def test_processbench_calibrate_picks_the_best_threshold_on_another_file(processbench, tmp_path: Path) -> None:
    data, scores = processbench
    # pb1 is hit for 0.3 < t <= 0.9, pb2 for t <= 0.6, pb4 for t <= 0.45, pb3 only for t > 0.6: the best is
    # t in (0.3, 0.45] (acc error 1/2, acc correct 1, F1 2/3), searched exactly: the midpoint 0.375
    result = run_eval("processbench", [data], sources_from(None, [scores], None), tmp_path / "rep",
                      EvalOptions(calibrate=data))
    m = result.output.metrics
    assert m["threshold"] == pytest.approx(0.375) and m["f1"] == pytest.approx(2 / 3)
    assert m["calibrated_on"]["samples"] == 4
    assert "sample" not in result.output.table
    # a limit above the file's 4 records keeps it whole: the table said "seeded sample of 10"
    whole = run_eval("processbench", [data], sources_from(None, [scores], None), tmp_path / "rep10",
                     EvalOptions(calibrate=data, calibrate_limit=10)).output
    assert whole.metrics["calibrated_on"]["samples"] == 4
    assert "(all of it: it has no more than --calibrate-limit 10 records)" in whole.table
    assert "seeded sample" not in whole.table


def test_processbench_uses_the_threshold_each_checkpoint_records(processbench, tmp_path: Path) -> None:
    """Per model: a fluxprm checkpoint's recorded error_threshold; for a scores file, the threshold of the registry
    model it names (fluxprm-mini), else 0.5 with a note; --threshold wins."""
    import shutil

    from fluxprm.models.bundled import bundled_model_dir
    from fluxprm.models.fluxprm_config import FluxPRMConfig, recorded_error_threshold

    data, scores = processbench
    ckpt = tmp_path / "mini"
    shutil.copytree(bundled_model_dir("fluxprm-mini"), ckpt)
    config = FluxPRMConfig.load(ckpt)
    config.error_threshold = 0.123
    config.save(ckpt)
    assert recorded_error_threshold(str(ckpt)) == 0.123
    sources = sources_from([str(ckpt)], [scores], None, model_options={"device": "cpu"})
    models = run_eval("processbench", [data], sources, tmp_path / "rep").output.metrics["models"]
    mini, toy = models[str(ckpt)], models["toy"]
    assert (mini["threshold"], mini["threshold_from"]) == (0.123, "checkpoint")
    assert (toy["threshold"], toy["threshold_from"]) == (0.5, "default")
    assert "its checkpoint records" in (tmp_path / "rep" / "summary.md").read_text()
    assert any("toy: threshold 0.5 (default): a scores file names its model" in n
               for n in json.loads((tmp_path / "rep" / "metrics.json").read_text())["notes"])
    # `fluxprm score -m CKPT -o F` notes the checkpoint's threshold in F.progress.json: `eval --scores F` uses it
    # (it gave 0.5 and a note before), and stops trusting it once F is no longer the bytes the note describes
    from fluxprm import load_prm
    from fluxprm.engine.options import ScoreOptions
    from fluxprm.score_job import run_score_job

    by_ckpt = tmp_path / "by_ckpt.jsonl"
    run_score_job(load_prm(str(ckpt), device="cpu"), [data], by_ckpt, None, ScoreOptions(on_error="skip"))
    noted = run_eval("processbench", [data], sources_from(None, [str(by_ckpt)], None), tmp_path / "rep3")
    assert (noted.output.metrics["threshold"], noted.output.metrics["threshold_from"]) == (0.123, "checkpoint")
    by_ckpt.write_text(by_ckpt.read_text().replace('"score":', '"score": ', 1))  # same records, other bytes
    edited = run_eval("processbench", [data], sources_from(None, [str(by_ckpt)], None), tmp_path / "rep4")
    assert (edited.output.metrics["threshold"], edited.output.metrics["threshold_from"]) == (0.5, "default")
    by_mini = tmp_path / "by_mini.jsonl"  # the same scores, written by the embedded model
    by_mini.write_text(Path(scores).read_text().replace('"model": "toy"', '"model": "fluxprm-mini"'))
    named = run_eval("processbench", [data], sources_from(None, [str(by_mini)], None), tmp_path / "rep2")
    recorded = recorded_error_threshold("fluxprm-mini")
    assert recorded is not None and named.output.metrics["threshold_from"] == "checkpoint"
    assert named.output.metrics["threshold"] == recorded
    given = run_eval("processbench", [data], sources, tmp_path / "rep", EvalOptions(threshold=0.3))
    mini = given.output.metrics["models"][str(ckpt)]
    assert (mini["threshold"], mini["threshold_from"]) == (0.3, "--threshold")


def test_prmbench_records_convert_to_processbench_by_earliest_error(prmbench, tmp_path: Path) -> None:
    data, scores = prmbench
    result = run_eval("processbench", [data], sources_from(None, [scores], None), tmp_path / "rep")
    m = result.output.metrics
    assert m["n_error"] == 3 and m["n_correct"] == 0 and m["f1"] is None  # rows 1, 2, 4; row 3 rejected
    # row 1 label 2 (first reward < 0.5 at 2: hit), row 2 label 1 (first < 0.5 at 2: miss), row 4 label 1 (0: miss)
    assert m["acc_error"] == pytest.approx(1 / 3, abs=1e-4)
    assert any("F1 undefined" in n for n in m["notes"])


# ---- outcome and separation ------------------------------------------------------------------------------

def test_outcome_and_separation(tmp_path: Path) -> None:
    rows = [{"id": f"t{k}", "problem": "p", "response": f"answer {k}", "correct": k % 2 == 0,
             "model": "strong" if k < 4 else "weak"} for k in range(8)]
    data = str(write_jsonl(tmp_path / "out.jsonl", rows))
    values = [0.9, 0.2, 0.8, 0.3, 0.6, 0.1, 0.4, 0.35]
    scores = write_jsonl(tmp_path / "s.jsonl", [score_rec(data, k + 1, [v]) for k, v in enumerate(values)])
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    labels = [k % 2 == 0 for k in range(8)]
    m = run_eval("outcome", [data], sources_from(None, [str(scores)], None), tmp_path / "o").output.metrics
    assert m["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, values))
    assert m["auprc"] == pytest.approx(sklearn_metrics.average_precision_score(labels, values))
    assert m["ece"] is not None and (tmp_path / "o" / "reliability.png").exists()
    assert (tmp_path / "o" / "roc.png").exists()
    s = run_eval("separation", [data], sources_from(None, [str(scores)], None), tmp_path / "s").output.metrics
    (pair,) = s["pairs"]
    assert (pair["a"], pair["b"]) == ("strong", "weak")
    strong, weak = values[:4], values[4:]
    expected = sum((a > b) + 0.5 * (a == b) for a in strong for b in weak) / 16
    assert pair["auroc"] == pytest.approx(expected)
    assert 0 <= pair["overlap"] <= 1 and (tmp_path / "s" / "separation.png").exists()


def test_outcome_of_a_score_that_is_no_probability_draws_its_roc_and_says_why_no_reliability(tmp_path: Path) -> None:
    """fluxprm-mini's scores lie in 0-2: the reliability diagram of a new user's first `eval outcome` was an empty
    frame. Every source now gets its ROC curve (roc.png), and the diagram names the sources it cannot draw."""
    import numpy as np
    from PIL import Image

    rows = [{"id": f"t{k}", "problem": "p", "response": f"answer {k}", "correct": k % 3 != 0,
             "prob": (k % 7) / 7, "reward": 2.0 * (k % 5) / 4} for k in range(30)]
    data = str(write_jsonl(tmp_path / "rows.jsonl", rows))
    prob = run_eval("outcome", [data], sources_from(None, None, "prob"), tmp_path / "prob")
    wide = run_eval("outcome", [data], sources_from(None, None, "reward"), tmp_path / "wide")
    assert prob.output.metrics["bins"] and prob.output.metrics["ece"] is not None
    assert wide.output.metrics["bins"] == [] and wide.output.metrics["ece"] is None
    assert set(wide.output.files) == {"summary", "plot", "roc"}

    def ink(path: Path) -> int:  # pixels that are not white or near-white
        return int((np.asarray(Image.open(path).convert("L")) < 200).sum())

    # the same ROC machinery for both; the diagram of the wide source carries a note instead of points
    assert ink(tmp_path / "wide" / "roc.png") > 0.8 * ink(tmp_path / "prob" / "roc.png")
    bare = tmp_path / "bare"
    bare.mkdir()
    from fluxprm.eval.outcome import _plot

    class _Ctx:
        out_dir = bare
    empty = _plot(_Ctx(), {"none": []}, "trace score")  # what the diagram looked like before: frame, diagonal
    assert ink(tmp_path / "wide" / "reliability.png") > ink(empty) + 500


def test_by_evaluates_the_trajectory_reward_or_the_step_rewards_instead_of_the_score(tmp_path: Path) -> None:
    """fluxprm-mini's score lies in 0-2, so `eval outcome` had no ECE and an empty reliability diagram for the
    default model, though its trajectory reward is a correctness probability (trained on outcomes). `--by` picks
    the number evaluated: the trajectory reward (calibration applies), the mean or lowest step reward; a record
    without that number is rejected with a reason, not counted as something else."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rows = [{"id": f"t{k}", "problem": "p", "response": f"answer {k}", "correct": k % 2 == 0,
             "model": "strong" if k < 4 else "weak"} for k in range(8)]
    data = str(write_jsonl(tmp_path / "rows.jsonl", rows))
    trajectory = [0.9, 0.4, 0.7, 0.2, 0.6, 0.5, 0.3, 0.1]
    steps = [[0.2, 0.9], [0.8, 0.7], [0.1, 0.3], [0.6, 0.6], [0.5, 0.4], [0.2, 0.1], [0.9, 0.8], [0.3, 0.9]]
    recs = [{**score_rec(data, k + 1, s), "score": sum(s) / 2 + 1.0 * t, "trajectory_reward": t}
            for k, (s, t) in enumerate(zip(steps, trajectory))]
    recs[7]["trajectory_reward"] = None  # a model without a trajectory head for this one
    scores = str(write_jsonl(tmp_path / "s.jsonl", recs))
    labels = [k % 2 == 0 for k in range(8)]

    def outcome(by: str, name: str):
        return run_eval("outcome", [data], sources_from(None, [scores], None), tmp_path / name, EvalOptions(by=by))

    plain = outcome("score", "score").output.metrics
    assert plain["ece"] is None and plain["by"] == "score"  # 0-2: not a probability
    traj = outcome("trajectory", "traj")
    m = traj.output.metrics
    assert m["by"] == "trajectory" and m["n"] == 7 and m["ece"] is not None and m["bins"]
    assert m["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels[:7], trajectory[:7]))
    assert [(b.line, b.error) for b in traj.rejected] == [(8, "no trajectory reward (the model has no trajectory "
                                                               "head)")]
    for by, number in (("mean-step", lambda s: sum(s) / 2), ("min-step", min), ("last-step", lambda s: s[-1])):
        m = outcome(by, by).output.metrics
        assert m["n"] == 8 and m["auroc"] == pytest.approx(
            sklearn_metrics.roc_auc_score(labels, [number(s) for s in steps])), by
    assert "Trajectory reward vs correctness" in (tmp_path / "traj" / "summary.md").read_text()
    sep = run_eval("separation", [data], sources_from(None, [scores], None), tmp_path / "sep",
                   EvalOptions(by="min-step")).output.metrics
    assert sep["groups"]["strong"]["mean"] == pytest.approx(sum(min(s) for s in steps[:4]) / 4)
    with pytest.raises(ValueError, match="unknown --by"):
        EvalOptions(by="median-step")


def test_separation_of_a_single_group_says_there_is_nothing_to_compare(tmp_path: Path) -> None:
    """The first 300 records of a pool came from one model: the pairs table was only a header, unexplained."""
    rows = [{"id": f"t{k}", "problem": "p", "response": f"answer {k}", "model": "only", "s": k / 10} for k in range(5)]
    data = str(write_jsonl(tmp_path / "rows.jsonl", rows))
    m = run_eval("separation", [data], sources_from(None, None, "s"), tmp_path / "s").output.metrics
    assert m["pairs"] == [] and any("every scored trace has model 'only'" in n and "--group-field" in n
                                    for n in m["notes"])


def test_a_record_without_a_number_in_score_field_goes_to_errors_with_what_it_holds(tmp_path: Path) -> None:
    """outcome/separation with --score-field dropped a record whose field was missing or not a number: the table
    counted fewer traces, errors.jsonl said nothing, and a field no record has gave an empty table with exit 0."""
    rows = [{"id": f"t{k}", "problem": "p", "response": f"answer {k}", "correct": k % 2 == 0, "s": k / 10}
            for k in range(6)]
    rows[1]["s"] = "high"
    del rows[4]["s"]
    data = str(write_jsonl(tmp_path / "rows.jsonl", rows))
    result = run_eval("outcome", [data], sources_from(None, None, "s"), tmp_path / "o")
    assert result.output.metrics["n"] == 4 and result.output.metrics["rejected"] == 2
    errors = [json.loads(x) for x in (tmp_path / "o" / "errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["id"], e["error"]) for e in errors] == [
        (2, "t1", "no score: field 's' is not a finite number (it holds 'high')"),
        (5, "t4", "no score: the record has no field 's'")]
    res = run_cli("outcome", data, "--score-field", "nope", "-o", str(tmp_path / "n"))
    assert res.returncode == 1 and "6  no score: the record has no field 'nope'" in res.stderr, res.stderr


def test_group_and_score_fields_may_name_a_field_the_reader_took_for_a_role(tmp_path: Path) -> None:
    """``--group-field problem_id`` (read as the trace id when a record has no ``id``) and ``correct`` (read as the
    correctness flag) were "no group field" for every record: the reader had consumed them."""
    rows = [{"problem_id": f"p{k % 2}", "problem": "p", "response": f"answer {k}", "correct": k < 2, "s": k / 10}
            for k in range(4)]
    data = str(write_jsonl(tmp_path / "rows.jsonl", rows))
    for field, groups in (("problem_id", {"p0": 2, "p1": 2}), ("correct", {"True": 2, "False": 2})):
        m = run_eval("separation", [data], sources_from(None, None, "s"), tmp_path / field,
                     EvalOptions(group_field=field)).output.metrics
        assert {g: v["n"] for g, v in m["groups"].items()} == groups and m["rejected"] == 0


def test_a_trace_the_model_rejects_is_in_errors_with_the_scorers_reason_also_from_the_cache(tmp_path: Path) -> None:
    """A trace the model could not score vanished from outcome's table (its reason only in scores/<model>.errors.jsonl),
    and the rerun that reads the cached scores stopped with "scores … do not match the traces"."""
    from builders import build_qwen_prm

    from fluxprm.engine.options import ScoreOptions

    rows = [{"id": f"t{k}", "problem": "What is 1+1?", "response": f"It is {k}.", "correct": k % 2 == 0}
            for k in range(4)]
    rows[2]["response"] = "It is " + "very " * 400 + "long."
    data = str(write_jsonl(tmp_path / "rows.jsonl", rows))
    sources = sources_from([str(build_qwen_prm(tmp_path / "prm"))], None, None,
                           model_options={"max_length": 128, "dtype": "float32", "device": "cpu"},
                           score_options=ScoreOptions(long="truncate", on_error="skip", batching="single"))
    for run in ("scored", "cached"):
        result = run_eval("outcome", [data], sources, tmp_path / "rep")
        assert result.output.metrics["n"] == 3, run
        [error] = [json.loads(x) for x in (tmp_path / "rep" / "errors.jsonl").read_text().splitlines()]
        assert error["line"] == 3 and error["id"] == "t2", run
        assert error["error"].startswith("rejected when scoring: the problem and response alone take"), error


# ---- command line ----------------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fluxprm", "eval", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_prints_a_table_and_writes_the_report(prmbench, tmp_path: Path) -> None:
    data, scores = prmbench
    res = run_cli("prmbench", data, "--scores", scores, "-o", str(tmp_path / "rep"), "--threshold", "0.5")
    assert res.returncode == 0, res.stderr
    assert "PRMScore" in res.stdout and "0.708" in res.stdout
    assert "1 records rejected" in res.stderr
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["task"] == "prmbench"


def test_cli_mismatched_scores_exit_1_naming_ids(prmbench, tmp_path: Path) -> None:
    data, _ = prmbench
    partial = write_jsonl(tmp_path / "partial.jsonl", [score_rec(data, 1, [0.9, 0.6, 0.4, 0.5])])
    res = run_cli("prmbench", data, "--scores", str(partial), "-o", str(tmp_path / "rep"))
    assert res.returncode == 1 and "ids p1, p2, p1" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("nosuchtask", data, "--scores", str(partial), "-o", str(tmp_path / "rep"))
    assert res.returncode == 2 and "unknown task" in res.stderr


def test_eval_on_scores_imports_no_torch(prmbench, tmp_path: Path) -> None:
    data, scores = prmbench
    code = ("import sys; from fluxprm.eval import run_eval; from fluxprm.eval.sources import sources_from; "
            f"run_eval('prmbench', [{data!r}], sources_from(None, [{scores!r}], None), {str(tmp_path / 'r')!r}); "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.split()[-1] == "False", res.stdout + res.stderr


def test_bon_task_runs_fluxprm_bon_per_model(tmp_path: Path) -> None:
    rows = [{"id": f"c{p}{k}", "problem": f"problem {p}", "response": f"the answer is \\boxed{{{k}}}",
             "correct": k == p} for p in range(2) for k in range(2)]
    data = str(write_jsonl(tmp_path / "pool.jsonl", rows))
    good = write_jsonl(tmp_path / "good.jsonl", [score_rec(data, i + 1, [0.9 if r["correct"] else 0.1], model="good")
                                                 for i, r in enumerate(rows)])
    bad = write_jsonl(tmp_path / "bad.jsonl", [score_rec(data, i + 1, [0.1 if r["correct"] else 0.9], model="bad")
                                               for i, r in enumerate(rows)])
    result = run_eval("bon", [data], sources_from(None, [str(good), str(bad)], None), tmp_path / "rep")
    models = result.output.metrics["models"]
    assert models["good"]["n"] == 2 and models["good"]["accuracy"]["argmax"] == 1.0
    assert models["bad"]["accuracy"]["argmax"] == 0.0
    assert (tmp_path / "rep" / "bon" / "good" / "metrics.json").exists()


def test_model_scores_are_cached_in_the_report_folder(prmbench, tmp_path: Path, monkeypatch) -> None:
    """A second run (another threshold) reads REPORT_DIR/scores/<model>.jsonl instead of scoring again."""
    import fluxprm.eval.sources as sources

    data, scores = prmbench
    runs: list[str] = []
    real = sources.scored_traces

    def fake(inputs, source, fields=None, *, scores_out=None, resume=False, on_progress=None):
        if source.model:  # "score" by copying the fixture's scores into the cache file
            runs.append(str(scores_out))
            Path(scores_out).write_text(Path(scores).read_text())
            source = sources.ScoreSource(scores=[str(scores_out)])
        return real(inputs, source, fields)

    monkeypatch.setattr(sources, "scored_traces", fake)
    src = [sources.EvalSource("toy", sources.ScoreSource(model="toy"))]
    # with -m the originals are scored too; this fixture has no separate scores for them
    monkeypatch.setattr("fluxprm.eval.prmbench.prmbench_original_file", lambda inputs, out: (None, {}))
    first = run_eval("prmbench", [data], src, tmp_path / "rep").output.metrics
    second = run_eval("prmbench", [data], src, tmp_path / "rep", EvalOptions(threshold=0.45)).output.metrics
    assert runs == [str(tmp_path / "rep" / "scores" / "toy.jsonl")]  # scored once
    assert first["prmscore"] != second["prmscore"] and second["threshold"] == 0.45


def test_processbench_calibrates_on_prmbench_rows_of_a_score_file_covering_both_files(processbench, prmbench,
                                                                                       tmp_path: Path) -> None:
    """The README's `eval processbench ... --scores a.jsonl --calibrate train.jsonl`: one score file of both files
    used to pair nothing (the streaming join stopped at the other file's scores). PRMBench rows scored ahead of
    time bring no original processes, so there is nothing correct to calibrate on: one clear line says so."""
    data, scores = processbench
    prm_data, prm_scores = prmbench
    both = tmp_path / "both.jsonl"
    both.write_text(Path(prm_scores).read_text() + Path(scores).read_text())
    with pytest.raises(EvalError, match=r"--calibrate .*: 3 erroneous and 0 correct samples .* only when scored now"):
        run_eval("processbench", [data], sources_from(None, [str(both)], None), tmp_path / "rep",
                 EvalOptions(calibrate=prm_data))
    # the same file as the evaluated one's calibration joins through the index and gives the hand-computed result
    result = run_eval("processbench", [data], sources_from(None, [str(both)], None), tmp_path / "rep2",
                      EvalOptions(calibrate=data))
    assert result.output.metrics["threshold"] == pytest.approx(0.375)


def test_a_score_file_made_in_another_folder_is_named_as_the_cause(processbench, tmp_path: Path, monkeypatch) -> None:
    """`fluxprm score pb.jsonl` run inside the data folder, `fluxprm eval`/`bon` run above it with data/pb.jsonl:
    the scores name another file from here, and the one error line says to run from the scoring folder."""
    from fluxprm.bon import BonError, BonOptions, run_bon

    data, scores = processbench
    relative = tmp_path / "relative.jsonl"
    relative.write_text(Path(scores).read_text().replace(json.dumps(data), json.dumps("pb.jsonl")))
    (tmp_path / "up").mkdir()
    monkeypatch.chdir(tmp_path / "up")
    inside = str(Path("..") / "pb.jsonl")
    cause = "names its input 'pb.jsonl', which from this folder is"
    with pytest.raises(EvalError, match=f"{cause} .*run this command from that folder"):
        run_eval("processbench", [inside], sources_from(None, [str(relative)], None), tmp_path / "rep")
    with pytest.raises(BonError, match=f"no candidate has a score: .*{cause}"):
        run_bon([inside], tmp_path / "bon", BonOptions(scores=[str(relative)]))
    monkeypatch.chdir(tmp_path)  # from the folder the scores were made in, the same command works
    run_eval("processbench", ["pb.jsonl"], sources_from(None, [str(relative)], None), tmp_path / "rep")


def test_the_score_cache_is_not_reused_for_a_checkpoint_retrained_in_place(processbench, tmp_path: Path) -> None:
    """`eval ... -m ./my-prm` caches the model's scores in REPORT_DIR/scores; after `fluxprm train -o my-prm` again
    the rerun said "reusing cached scores" and reported the old model's numbers."""
    from builders import build_qwen_prm

    data, _ = processbench
    folder = build_qwen_prm(tmp_path / "my-prm", seed=0)
    options = {"dtype": "float32", "device": "cpu"}
    statuses: list[str] = []

    def scored_file() -> bytes:
        run_eval("processbench", [data], sources_from([str(folder)], None, None, options), tmp_path / "rep",
                 on_status=statuses.append)
        [cached] = (tmp_path / "rep" / "scores").glob("*my-prm.jsonl")
        return cached.read_bytes()

    first = scored_file()
    assert scored_file() == first and any("reusing cached scores" in s for s in statuses)
    statuses.clear()
    build_qwen_prm(folder, seed=1)  # retrained into the same folder
    assert scored_file() != first and not any("reusing cached scores" in s for s in statuses)
    assert any("was left by another run" in s and "starting afresh" in s for s in statuses), statuses


def test_cli_nothing_to_evaluate_exits_1_with_the_causes(processbench, tmp_path: Path) -> None:
    """Every record rejected (separation without the group field, prmbench on ProcessBench rows) printed an
    all-"–" table and exited 0; the contract is exit 1 with the commonest causes and a hint."""
    data, scores = processbench
    res = run_cli("separation", data, "--scores", scores, "-o", str(tmp_path / "sep"))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "4  no group field 'model'" in res.stderr and "hint: try --group-field FIELD" in res.stderr
    assert "nothing to evaluate" in res.stderr and res.stdout == ""
    res = run_cli("prmbench", data, "--scores", scores, "-o", str(tmp_path / "prm"))
    assert res.returncode == 1 and "not a PRMBench record" in res.stderr and "nothing to evaluate" in res.stderr


def test_cli_progress_counts_every_model_it_scores_and_the_cached_ones(tmp_path: Path) -> None:
    """`eval outcome -m a -m b` scores every record once per model: the bar read "scoring 12/6 records 200%".
    A rerun that reuses both models' cached scores ends at the total too."""
    from builders import build_qwen_prm

    rows = [{"id": f"t{k}", "problem": "p", "response": f"answer {k}", "correct": k % 2 == 0} for k in range(6)]
    data = str(write_jsonl(tmp_path / "out.jsonl", rows))
    models = [str(build_qwen_prm(tmp_path / f"prm{seed}", seed=seed)) for seed in (0, 1)]
    args = ["outcome", data, "-m", models[0], "-m", models[1], "--dtype", "float32", "-o", str(tmp_path / "rep")]
    for run in ("scores", "reuses the cache"):
        res = run_cli(*args)
        assert res.returncode == 0, res.stderr
        progress = [line for line in res.stderr.splitlines() if line.startswith("scoring ")]
        assert progress and progress[-1].startswith("scoring 12/12 records  100%"), (run, res.stderr)
        assert ("reusing cached scores" in res.stderr) == (run == "reuses the cache"), res.stderr


def test_prmbench_says_what_a_dash_means_only_when_the_table_has_one(prmbench, tmp_path: Path) -> None:
    """A class whose every step is predicted valid has no error F1: its PRMScore prints as "–", with a line that
    says why (a dash alone read like a missing run)."""
    data, scores = prmbench
    defined = run_eval("prmbench", [data], sources_from(None, [scores], None), tmp_path / "a",
                       EvalOptions(threshold=0.5)).output
    assert "–" not in defined.table and "undefined F1" not in defined.table
    all_valid = write_jsonl(tmp_path / "valid.jsonl", [score_rec(data, k, [0.99] * n)
                                                       for k, n in ((1, 4), (2, 3), (3, 2), (4, 3))])
    out = run_eval("prmbench", [data], sources_from(None, [str(all_valid)], None), tmp_path / "b",
                   EvalOptions(threshold=0.5)).output
    assert out.metrics["f1_error"] is None and "–" in out.table
    assert "– is an undefined F1" in out.table
    assert "– is an undefined F1" in (tmp_path / "b" / "summary.md").read_text()


def test_the_progress_total_of_prmbench_and_processbench_is_what_a_model_scores(prmbench, tmp_path: Path) -> None:
    """With -m, prmbench and processbench also score one original process per PRMBench problem: the total is the
    4 rows plus the 2 problems' originals (the bar had no total at all: a 7-minute subset400 run showed no end).
    In process (an interpreter start per task cost ~15 s); the CLI's wiring is tested with two models above."""
    from builders import build_qwen_prm
    from fluxprm.eval.tasks import records_per_model

    data, _ = prmbench
    sources = sources_from([str(build_qwen_prm(tmp_path / "prm", seed=0))], None, None,
                           {"dtype": "float32", "device": "cpu"})
    for task in ("prmbench", "processbench"):
        scored: list[int] = []
        run_eval(task, [data], sources, tmp_path / task, on_progress=scored.append)
        assert sum(scored) == records_per_model(task, [data], EvalOptions(), 4) == 6, task
    # --calibrate is scored too (it had no total either): all of it (an unreadable line counts, as in the inputs),
    # or a seeded sample, with its own originals
    broken = tmp_path / "calibrate.jsonl"
    broken.write_text(Path(data).read_text() + "{not json\n")
    for limit in (None, 3):
        options = EvalOptions(calibrate=str(broken), calibrate_limit=limit)
        scored = []
        run_eval("processbench", [data], sources, tmp_path / f"calibrated-{limit}", options,
                 on_progress=scored.append)
        sample = tmp_path / f"calibrated-{limit}" / "calibration" / "calibration_sample.jsonl"
        rows = [json.loads(x) for x in sample.read_text().splitlines()] if limit else [{"idx": "p1"}, {"idx": "p2"}]
        calibration = (limit or 5) + len({row["idx"] for row in rows})
        assert sum(scored) == records_per_model("processbench", [data], options, 4) == 6 + calibration, limit


def test_the_progress_total_of_bon_is_its_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`eval bon -m` showed a count with no end ("may generate"), but eval bon never generates: it scores the
    records as they are, and a pool record (a list of responses) counts once, as the inputs are counted.
    `-m ./prm` put its output in `bon/._prm`, a folder `ls` hides; it is `bon/prm`, as the score cache names it."""
    from builders import build_qwen_prm
    from fluxprm.eval.tasks import records_per_model
    from fluxprm.records import count_records

    rows = [{"problem": "What is 1+1?", "response": ["It is \\boxed{2}.", "It is \\boxed{3}."], "answer": "2"},
            {"id": "b0", "problem": "What is 2+2?", "response": "It is \\boxed{4}.", "correct": True},
            {"id": "b1", "problem": "What is 2+2?", "response": "It is \\boxed{5}.", "correct": False}]
    data = str(write_jsonl(tmp_path / "pool.jsonl", rows))
    build_qwen_prm(tmp_path / "prm", seed=0)
    monkeypatch.chdir(tmp_path)
    sources = sources_from(["./prm"], None, None, {"dtype": "float32", "device": "cpu"})
    scored: list[int] = []
    result = run_eval("bon", [data], sources, tmp_path / "rep", on_progress=scored.append)
    assert [p.name for p in (tmp_path / "rep" / "bon").iterdir()] == ["prm"]
    assert next(iter(result.output.metrics["models"].values()))["candidates"] == 4
    assert sum(scored) == records_per_model("bon", [data], EvalOptions(), count_records(data)) == 3
    # the same report folder on an edited pool: its scores are another run's, so they are scored afresh (this
    # ended in ResumeMismatch's traceback), and the total still holds
    write_jsonl(tmp_path / "pool.jsonl", rows + [{**rows[1], "id": "b2", "response": "It is 4."}])
    scored, said = [], []
    result = run_eval("bon", [data], sources, tmp_path / "rep", on_progress=scored.append, on_status=said.append)
    assert next(iter(result.output.metrics["models"].values()))["candidates"] == 5
    restarted = "was left by another run (other inputs, model or options) or is damaged; starting afresh"
    assert sum(scored) == 4 and any(restarted in line for line in said), said
    assert sum(line.startswith("scoring with ") for line in said) == 1, said  # not again after "starting afresh"


def test_cli_refuses_an_option_the_task_does_not_read(processbench, tmp_path: Path) -> None:
    """`eval outcome --calibrate f` ran as if the option were not there: a user could believe the outcome metrics
    were calibrated. Each task option says which tasks read it (EvalOptions' ``tasks``); the others refuse it."""
    data, scores = processbench
    res = run_cli("outcome", data, "--scores", scores, "--calibrate", data, "--bins", "5", "-o", str(tmp_path / "o"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "error: --calibrate applies to eval processbench, not outcome"
    res = run_cli("separation", data, "--scores", scores, "--threshold", "0.3", "--seed", "1",
                  "-o", str(tmp_path / "s"))
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == (
        "error: --threshold applies to eval prmbench and processbench, not separation; --seed applies to eval "
        "processbench, not separation")
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()  # refused before anything was written
    res = run_cli("processbench", data, "--scores", scores, "--threshold", "0.3", "-o", str(tmp_path / "p"))
    assert res.returncode == 0, res.stderr  # an option the task reads still passes
