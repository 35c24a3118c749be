"""`fluxprm label`'s HTTP judge, expert and policy path against the real llama.cpp server (SmolLM2).

The server fixture comes from test_llm.py (started on 127.0.0.1, stopped after the module). A second
run points at a port where nothing listens: it can only succeed if every LLM call is answered by
the on-disk cache, which proves a rerun costs no requests.
"""

from __future__ import annotations

import json
import socket


from fluxprm.labels.pipeline import LabelConfig, run_label_job
from fluxprm.llm.cache import LLMCache
from test_llm import API_KEY, MODEL, llama_server  # noqa: F401  (the fixture)

TRACE = {"id": "add", "problem": "What is 2 + 3? Put the final answer in \\boxed{}.", "gold": "5",
         "response": "<think>I need to add the numbers 2 and 3 together.\n\nCounting up from two by three gives five.</think>"
                     "2 + 3 = 5.\n\nThe answer is \\boxed{5}."}


JUDGE_RETRIES = 2


def _config(url: str, cache: str) -> LabelConfig:
    spec = f"{url}#{MODEL}"
    return LabelConfig(judge=spec, policy=spec, rollouts=2, judge_max_tokens=64, judge_retries=JUDGE_RETRIES,
                       rollout_max_tokens=48, template_max_tokens=48, cache=cache, on_error="raise")


def test_label_http_judge_expert_policy(llama_server, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FLUXPRM_LLM_API_KEY", API_KEY)
    src = tmp_path / "t.jsonl"
    src.write_text(json.dumps(TRACE) + "\n")
    cache = str(tmp_path / "llm.sqlite")
    out = tmp_path / "labels.jsonl"
    run_label_job([str(src)], out, None, _config(llama_server, cache))
    [rec] = [json.loads(x) for x in out.read_text().splitlines()]
    assert rec["rollouts"]["n"] == 2
    assert rec["trajectory_reward"] in (0.0, 0.5, 1.0)
    quality = rec["components"]["quality"]
    assert len(quality) == len(rec["thinking_steps"]) == 2
    # The 135M judge seldom follows the "Score: N" format (with the v2 prompt it answered in prose on 9 of 10
    # sampled tries, and greedy decoding on the server is not bit-stable across runs), so whether a step gets
    # a score is the model's business. What the pipeline owes: a value in [0, 1] or a missing value named in
    # the notes (never a 0), and a retry — a fresh sampled request — for every unparseable answer and no other.
    assert all(q is None or 0.0 <= q <= 1.0 for q in quality)
    missing = [i + 1 for i, q in enumerate(quality) if q is None]
    if missing:
        assert any(note.startswith("quality: no usable judge score") and str(missing) in note
                   for note in rec["notes"]), rec["notes"]
    tries = JUDGE_RETRIES + 1
    judge_requests = len(LLMCache(cache)) - 1 - 2  # every distinct request is one cache row: template + 2 rollouts
    assert len(missing) * tries + (len(quality) - len(missing)) <= judge_requests <= len(quality) * tries

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    again = tmp_path / "again.jsonl"
    run_label_job([str(src)], again, None, _config(dead, cache))
    [rec2] = [json.loads(x) for x in again.read_text().splitlines()]
    rec.pop("label_config"), rec2.pop("label_config")  # the hash names the server URL, which changed
    assert rec2 == rec
