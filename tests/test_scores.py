"""The score layer: record schema, reading score files back, the join key, aggregation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fluxprm.records import BadRecord
from fluxprm.scores import (ScoreMismatch, TraceScore, aggregate, combine, is_synthesized_id, join_key, join_scores,
                            read_scores, scores_in_order)
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


@pytest.mark.parametrize("ordered", [True, False])
def test_a_record_inserted_after_scoring_is_refused_not_paired_with_its_neighbours_score(tmp_path, ordered):
    """The join key is a position: a record inserted into the input after scoring shifted every later score onto
    the wrong trace, silently (select kept the wrong traces, bon picked wrong answers). The record's own id catches it."""
    src = tmp_path / "in.jsonl"
    rows = [{"id": f"r{i}", "problem": "p", "response": "a b"} for i in range(4)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = [json.loads(line) for line in _score_lines(list(iter_traces([str(src)])))]
    rows.insert(1, {"id": "new", "problem": "p", "response": "c d"})
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ScoreMismatch, match=r"in.jsonl:2 has id 'r1' but the input record there has id 'new'"):
        list(join_scores(map(TraceScore.from_json, scores), iter_traces([str(src)]), ordered=ordered))


def test_ids_made_up_for_id_less_records_are_not_compared(tmp_path):
    """An id-less record's id is its position (``in.jsonl:2``): there is no record id to check, and a score file
    written before the input was moved or renamed (ids ``old.jsonl:2``) still joins by position."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"problem": "p", "response": f"a {i}"}) + "\n" for i in range(3)))
    traces = list(iter_traces([str(src)]))
    scores = [TraceScore.from_json({**json.loads(line), "id": f"old.jsonl:{t.line}"})
              for t, line in zip(traces, _score_lines(traces))]
    assert [s.score for _, s in join_scores(scores, iter_traces([str(src)]), ordered=True)] == [1.0, 2.0, 3.0]
    assert is_synthesized_id("pool.jsonl:12") and is_synthesized_id("pool.jsonl:12#3")
    assert not is_synthesized_id("q12") and not is_synthesized_id("12#3") and not is_synthesized_id("/a/b.jsonl:3")


def _score_lines(traces: list) -> list[str]:
    return [json.dumps(TraceScore(id=t.id, score=float(t.line), step_rewards=[0.5], thinking_step_rewards=[],
                                  response_step_rewards=[0.5], trajectory_reward=None, num_steps=1, truncated=False,
                                  model="m", source=t.source, line=t.line).to_json()) + "\n" for t in traces]


def test_a_score_file_of_more_files_or_another_file_order_still_joins(tmp_path, monkeypatch):
    """A pool scored once (`fluxprm score a.jsonl b.jsonl -o all.jsonl`) and then selected, Best-of-N'd or evaluated
    in parts, or with its files in another order: the streaming join used to pair no trace at all (every record
    "no score"), because it met the other file's scores first and never moved past them."""
    from fluxprm.scored import ScoreSource, scored_traces

    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        Path(f"{name}.jsonl").write_text("".join(json.dumps({"id": f"{name}{i}", "problem": "p", "response": "x y"})
                                                 + "\n" for i in range(3)))
    a, b = list(iter_traces(["a.jsonl"])), list(iter_traces(["b.jsonl"]))
    Path("all.jsonl").write_text("".join(_score_lines(a) + _score_lines(b)))
    Path("revisit.jsonl").write_text("".join(_score_lines(a[:1]) + _score_lines(b) + _score_lines(a[1:])))

    assert scores_in_order(["all.jsonl"], ["a.jsonl", "b.jsonl"])  # exactly the inputs, in order: streams
    assert scores_in_order(["all.jsonl"], ["./a.jsonl", str(tmp_path / "b.jsonl")])
    assert not scores_in_order(["all.jsonl"], ["b.jsonl"])
    assert not scores_in_order(["all.jsonl"], ["b.jsonl", "a.jsonl"])
    assert not scores_in_order(["revisit.jsonl"], ["a.jsonl", "b.jsonl"])
    assert not scores_in_order(["all.jsonl"], ["a.jsonl", "a.jsonl", "b.jsonl"])
    for inputs, scores in [(["b.jsonl"], "all.jsonl"), (["a.jsonl"], "all.jsonl"), (["b.jsonl", "a.jsonl"], "all.jsonl"),
                           (["a.jsonl", "b.jsonl"], "all.jsonl"), (["a.jsonl", "b.jsonl"], "revisit.jsonl")]:
        pairs = list(scored_traces(inputs, ScoreSource(scores=[scores])))
        expected = [t.id for path in inputs for t in (a if path == "a.jsonl" else b)]
        assert [t.id for t, _ in pairs] == expected, (inputs, scores)
        assert all(s is not None and s.id == t.id and s.score == float(t.line) for t, s in pairs), (inputs, scores)
