"""The score layer: record schema, reading score files back, the join key, aggregation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fluxprm.records import BadRecord
from fluxprm.scores import TraceScore, aggregate, combine, join_key, join_scores, read_scores, scores_in_order
from fluxprm.traces import iter_traces

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


def test_aggregation_rules_and_alpha():
    xs = [0.2, 0.8, 0.5]
    assert aggregate(xs, "mean") == pytest.approx(0.5)
    assert aggregate(xs, "min") == 0.2 and aggregate(xs, "max") == 0.8 and aggregate(xs, "last") == 0.5
    assert aggregate(xs, "prod") == pytest.approx(0.08)
    assert aggregate([], "mean") is None
    assert combine(xs, 0.6, "mean", 0.5) == pytest.approx(0.8)
    assert combine(xs, None, "min", 0.5) == 0.2
    assert combine([], 0.6, "mean", 1.0) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown aggregate"):
        aggregate(xs, "median")


def test_record_round_trip_keeps_extras_and_spans():
    s = TraceScore(id="a#1", score=0.7, step_rewards=[0.5, 0.9], thinking_step_rewards=[0.5],
                   response_step_rewards=[0.9], trajectory_reward=None, num_steps=2, truncated=False, model="m",
                   source="pool.jsonl", line=4, thinking_step_spans=[(0, 5)], response_step_spans=[(0, 3)],
                   extra={"candidate": 1, "group": "a", "correct": True})
    rec = s.to_json()
    assert list(rec)[:9] == ["id", "score", "step_rewards", "thinking_step_rewards", "response_step_rewards",
                             "trajectory_reward", "num_steps", "truncated", "model"]
    back = TraceScore.from_json(json.loads(json.dumps(rec)))
    assert back == s and back.key == (os.path.realpath("pool.jsonl"), 4, 1) == join_key("./pool.jsonl", 4, 1)
    assert back.rescored("min", 1.0) == 0.5


def test_old_score_files_with_null_parts_read_as_response_steps():
    rec = {"id": "x", "score": 0.5, "step_rewards": [0.4, 0.6], "thinking_step_rewards": None,
           "response_step_rewards": None, "trajectory_reward": None, "num_steps": 2, "truncated": False, "model": "m"}
    s = TraceScore.from_json(rec)
    assert s.thinking_step_rewards == [] and s.response_step_rewards == [0.4, 0.6]


def test_read_scores_reports_bad_lines(tmp_path):
    path = tmp_path / "s.jsonl"
    good = {"id": "a", "score": 0.5, "step_rewards": [0.5], "source": "in.jsonl", "line": 1}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"id": "b", "score": "high", "step_rewards": []}) + "\n"
                    + json.dumps({"id": "c"}) + "\n")
    out = list(read_scores([path]))
    assert isinstance(out[0], TraceScore) and out[0].id == "a"
    assert isinstance(out[1], BadRecord) and out[1].line == 2 and "'score'" in out[1].error
    assert isinstance(out[2], BadRecord) and "missing" in out[2].error


def test_join_key_matches_pool_candidates_with_repeated_ids(tmp_path):
    """Sky-T1 pools repeat the problem index as the id; the key (source, line, candidate) still tells them apart."""
    src = tmp_path / "pool.jsonl"
    lines = [json.dumps({"idx": 7, "problem": "p", "response": ["a b c", "d e f"]}),
             json.dumps({"idx": 7, "problem": "p", "response": "g h i"}),
             json.dumps({"problem": "q", "response": "j k l"})]
    src.write_text("\n".join(lines) + "\n")
    traces = list(iter_traces([str(src)]))
    assert [t.id for t in traces] == ["7#0", "7#1", "7", "pool.jsonl:3"]
    scores = [TraceScore(id=t.id, score=float(i), step_rewards=[float(i)], thinking_step_rewards=[],
                         response_step_rewards=[float(i)], trajectory_reward=None, num_steps=1, truncated=False,
                         model="m", source=t.source, line=t.line,
                         extra={"candidate": t.meta["candidate"]} if "candidate" in t.meta else {})
              for i, t in enumerate(traces)]
    pairs = list(join_scores(reversed(scores), iter_traces([str(src)])))
    assert [(t.id, s.score) for t, s in pairs] == [("7#0", 0.0), ("7#1", 1.0), ("7", 2.0), ("pool.jsonl:3", 3.0)]
    assert join_key("./pool.jsonl", 3) == join_key("pool.jsonl", 3)


def test_ordered_join_streams_and_refuses_a_broken_order(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "problem": "p", "response": "a b"}) + "\n" for i in range(5)))
    traces = list(iter_traces([str(src)]))
    scores = [TraceScore(id=t.id, score=float(i), step_rewards=[0.5], thinking_step_rewards=[],
                         response_step_rewards=[0.5], trajectory_reward=None, num_steps=1, truncated=False,
                         model="m", source=t.source, line=t.line) for i, t in enumerate(traces) if i != 2]
    pairs = list(join_scores(iter(scores), iter(traces), ordered=True))
    assert [None if s is None else s.score for _, s in pairs] == [0.0, 1.0, None, 3.0, 4.0]
    with pytest.raises(ValueError, match="not in input order"):
        list(join_scores(reversed(scores), traces, ordered=True))
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(s.to_json()) + "\n" for s in scores))
    assert scores_in_order([path])
    path.write_text("".join(json.dumps(s.to_json()) + "\n" for s in reversed(scores)))
    assert not scores_in_order([path])
