"""Engine behaviour: order, errors, truncation, windows, batching equivalence, bounded streaming."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from builders import build_qwen_prm
from progress_recorder import ProgressRecorder
import fluxprm
from fluxprm import load_prm
from fluxprm.engine.fit import encode_windows
from fluxprm.engine.options import ScoreOptions
from fluxprm.engine.score import score_stream
from fluxprm.steps import prepare
from fluxprm.records import BadRecord
from fluxprm.score_job import run_score_job
from fluxprm.steps import StepConfig
from fluxprm.traces import Trace

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


@pytest.fixture(scope="module")
def prm():
    return load_prm(str(build_qwen_prm(None)), dtype="float32", device="cpu")


def _trace(i: int, n_think: int = 3, n_resp: int = 2, words: int = 8) -> dict:
    think = "\n\n".join(f"thinking step {i}.{k} " + "word " * words for k in range(n_think))
    resp = "\n\n".join(f"response step {i}.{k} " + "word " * words for k in range(n_resp))
    return {"id": f"t{i}", "problem": f"What is {i} + {i}?", "response": f"<think>{think}</think>{resp}"}


def test_every_record_lands_in_output_or_errors_in_order(prm, tmp_path):
    lines = [json.dumps(_trace(0)), '{"id": "broken", "problem": "x", "resp', json.dumps(_trace(1)),
             json.dumps({"id": "noresp", "problem": "p"}), json.dumps({"id": "num", "problem": "p", "response": 3}),
             json.dumps(_trace(2)), '{"id": "\udcff"}', json.dumps(_trace(3))]
    src = tmp_path / "in.jsonl"
    # line 7 carries a byte that is not UTF-8
    src.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    result = run_score_job(prm, [str(src)], out, err, ScoreOptions(on_error="skip", chunk_size=3))
    scores = [json.loads(x) for x in out.read_text().splitlines()]
    errors = [json.loads(x) for x in err.read_text().splitlines()]
    assert [s["id"] for s in scores] == ["t0", "t1", "t2", "t3"]
    assert [e["line"] for e in errors] == [2, 4, 5, 7]
    assert all(e["source"] == str(src) and e["error"] for e in errors)
    assert result.stats.traces == 4 and result.stats.errors == 4
    for s in scores:
        assert s["num_steps"] == 5 and len(s["step_rewards"]) == 5
        assert len(s["thinking_step_rewards"]) == 3 and len(s["response_step_rewards"]) == 2
        assert s["score"] == pytest.approx(sum(s["step_rewards"]) / 5)
        assert set(s) >= {"id", "score", "step_rewards", "thinking_step_rewards", "response_step_rewards",
                          "trajectory_reward", "num_steps", "truncated", "model"}


def test_truncation_drops_earliest_thinking_only(prm):
    trace = Trace(id="long", problem="Compute the answer.", response="", thinking="", source="x", line=1)
    trace.thinking_steps = [f"thought {k} " + "many words here " * 12 for k in range(30)]
    trace.steps = ["The final answer is 4.", "So the answer is \\boxed{4}."]
    full = prm.encode(prepare(trace, StepConfig()))
    assert full.dropped_thinking == 0
    small = load_prm(str(build_qwen_prm(None)), dtype="float32", device="cpu", max_length=len(full.input_ids) // 2)
    [score] = fluxprm.score(small, [trace])
    assert score.truncated and score.dropped_steps > 0
    assert len(score.response_step_rewards) == 2
    assert len(score.thinking_step_rewards) == 30 - score.dropped_steps
    assert score.num_tokens <= small.max_length
    # the kept steps are the latest ones: dropping one fewer would not fit
    fewer = small.encode_ids(trace.problem, trace.thinking_steps[score.dropped_steps - 1:] + trace.steps)[0]
    assert len(fewer) > small.max_length


def test_too_long_without_thinking_is_an_error_record(prm, tmp_path):
    small = load_prm(str(build_qwen_prm(None)), dtype="float32", device="cpu", max_length=40)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "r", "problem": "p " * 60, "response": "a step"}) + "\n")
    out = tmp_path / "o.jsonl"
    run_score_job(small, [str(src)], out, None, ScoreOptions(on_error="skip", long="truncate"))
    err = json.loads((tmp_path / "o.errors.jsonl").read_text())
    assert err["line"] == 1 and "context" in err["error"] and out.read_text() == ""


def test_windows_score_every_step(prm):
    trace = Trace(id="w", problem="Compute.", response="", thinking="", source="x", line=1)
    trace.thinking_steps = [f"thought {k} " + "words " * 20 for k in range(12)]
    trace.steps = ["answer one", "answer two"]
    inp = prepare(trace, StepConfig())
    full = prm.encode(inp)
    small = load_prm(str(build_qwen_prm(None)), dtype="float32", device="cpu", max_length=len(full.input_ids) // 3)
    windows = encode_windows(small, inp).parts
    assert len(windows) >= 3
    assert all(len(w.input_ids) <= small.max_length for w in windows)
    assert sum(len(w.read_positions) for w in windows) == 14
    [score] = fluxprm.score(small, [trace], long="windows")
    assert len(score.step_rewards) == 14 and not score.truncated and score.extra["windows"] == len(windows)
    # the last window holds both response steps
    assert len(windows[-1].read_positions) >= 2


def test_context_tokens_option_reaches_the_windows(prm):
    """`--context-tokens` / ScoreOptions.context_tokens changes the windows the Scorer lays out."""
    trace = Trace(id="w", problem="Compute.", response="", thinking="", source="x", line=1)
    trace.thinking_steps = [f"thought {k} " + "words " * 20 for k in range(12)]
    trace.steps = ["answer one", "answer two"]
    full = prm.encode(prepare(trace, StepConfig()))
    small = load_prm(str(build_qwen_prm(None)), dtype="float32", device="cpu", max_length=len(full.input_ids) // 3)
    no_context = fluxprm.score(small, [trace], long="windows", context_tokens=0)[0]
    with_context = fluxprm.score(small, [trace], long="windows", context_tokens=64)[0]
    assert len(no_context.step_rewards) == len(with_context.step_rewards) == 14
    assert with_context.extra["windows"] > no_context.extra["windows"]  # room for context: fewer steps per window
    assert with_context.step_rewards != no_context.step_rewards  # steps judged with the text before them


def test_padded_batches_equal_single_forwards(prm):
    traces = [_trace(i, n_think=1 + i % 4, words=3 + 5 * i) for i in range(8)]
    single = fluxprm.score(prm, traces, batching="single")
    padded = fluxprm.score(prm, traces, batching="padded", batch_tokens=4096)
    for a, b in zip(single, padded):
        assert a.step_rewards == pytest.approx(b.step_rewards, abs=1e-4)


def test_stream_pulls_at_most_one_chunk_ahead(prm):
    pulled = itertools.count()

    def gen():
        for i in range(10**6):
            next(pulled)
            yield Trace(id=str(i), problem="p", response="a b c d e f g h i j k l m n o p q r s t")

    stream = score_stream(prm, gen(), ScoreOptions(chunk_size=16, batching="single"))
    first = next(stream)
    assert len(first) == 16
    assert next(pulled) <= 17  # only the first chunk was read from the million


def test_bad_records_pass_through_stream(prm):
    items = [BadRecord("f", 1, "bad"), Trace(id="a", problem="p", response="one step here")]
    [chunk] = list(score_stream(prm, items, ScoreOptions(on_error="skip", batching="single")))
    assert isinstance(chunk[0], BadRecord) and chunk[1].id == "a"


def test_library_api_accepts_raw_records(prm):
    recs = [json.loads(line) for line in (FIXTURES / "prmbench_train_sample.jsonl").read_text().splitlines()[:2]]
    scores = fluxprm.score(prm, recs)
    assert len(scores) == 2 and all(0.0 <= r <= 1.0 for s in scores for r in s.step_rewards)
    assert scores[0].num_steps == len(recs[0]["modified_process"])


def test_default_long_policy_never_rejects_for_length(prm, tmp_path):
    """A plain answer longer than the context (no thinking to drop) is scored in windows, not rejected."""
    small = load_prm(str(build_qwen_prm(None)), dtype="float32", device="cpu", max_length=96)
    answer = "\n\n".join(f"Step {k}: we add the next term and keep going with the sum." for k in range(12))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "plain", "problem": "Add the terms.", "response": answer}) + "\n")
    out = tmp_path / "o.jsonl"
    result = run_score_job(small, [str(src)], out, None, ScoreOptions(on_error="skip"))
    [rec] = [json.loads(x) for x in out.read_text().splitlines()]
    assert result.rejected == 0 and rec["windows"] >= 2 and len(rec["step_rewards"]) == 12
    assert rec["thinking_step_rewards"] == [] and rec["response_step_rewards"] == rec["step_rewards"]


def test_auto_truncates_when_dropping_thinking_makes_it_fit(prm):
    trace = Trace(id="t", problem="Compute.", response="", thinking="", source="x", line=1)
    trace.thinking_steps = [f"thought {k} " + "words " * 20 for k in range(12)]
    trace.steps = ["answer"]
    full = prm.encode(prepare(trace, StepConfig()))
    small = load_prm(str(build_qwen_prm(None)), dtype="float32", device="cpu", max_length=len(full.input_ids) // 2)
    [s] = fluxprm.score(small, [trace])
    assert s.truncated and s.dropped_steps > 0 and "windows" not in s.extra


def test_a_step_longer_than_the_context_is_clipped_not_rejected(prm):
    small = load_prm(str(build_qwen_prm(None)), dtype="float32", device="cpu", max_length=80)
    trace = Trace(id="huge", problem="Compute the sum.", response="The sum is 4.", thinking="thought " * 400,
                  source="x", line=1)
    [s] = fluxprm.score(small, [trace])
    assert s.truncated and s.extra["clipped"] == ["step 1"] and len(s.step_rewards) == 2
    with pytest.raises(fluxprm.ScoreFailure, match="context"):
        fluxprm.score(small, [Trace(id="p", problem="p " * 200, response="a")], long="truncate")


def test_score_batch_returns_a_bad_record_in_place_of_an_unscorable_trace(prm):
    traces = [_trace(0), {"id": "sur", "problem": "p\ud800", "response": "an answer here"}, {"id": "x"}, _trace(1)]
    out = fluxprm.score_batch(prm, traces)
    assert [type(r).__name__ for r in out] == ["TraceScore", "BadRecord", "BadRecord", "TraceScore"]
    assert out[1].id == "sur" and out[1].line == 2 and out[0].source == "<input>"


@pytest.mark.parametrize("batching", ["single", "padded"])
def test_a_score_run_tells_how_far_the_chunk_in_hand_has_got(prm, tmp_path, batching):
    """Records are counted when their chunk is written, and a chunk of 64 long traces takes minutes on a CPU:
    `fluxprm score` on 150 Sky-T1 traces showed "0/150 records" for over 2 minutes, then "64/150" for 2.5 more. The
    display is now told, forward by forward, what share of the chunk's tokens is scored; the output is the same
    bytes either way."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(_trace(i, n_think=1 + i % 4, words=4 + 6 * i)) + "\n" for i in range(7)))
    options = ScoreOptions(on_error="skip", chunk_size=3, batching=batching, batch_tokens=512)
    progress = ProgressRecorder()
    result = run_score_job(prm, [str(src)], tmp_path / "told.jsonl", None, options, on_progress=progress)
    run_score_job(prm, [str(src)], tmp_path / "plain.jsonl", None, options)
    assert (tmp_path / "told.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()
    assert progress.records == [3, 3, 1]
    chunks = "\n".join(progress.details).split("\n\n")  # "" closes each chunk
    assert len(chunks) == 3 and progress.details[-1] == ""
    totals = []
    for chunk in chunks:
        lines = chunk.strip("\n").split("\n")
        pcts = [int(line.split()[1].rstrip("%")) for line in lines]
        assert pcts[0] == 0 and pcts[-1] == 100 and pcts == sorted(set(pcts))  # each share once, growing
        tokens = {line.split(" of ")[1] for line in lines}
        assert len(tokens) == 1 and tokens.pop().endswith(" tokens")
        totals.append(int(lines[0].split(" of ")[1].split()[0].replace(",", "")))
    assert sum(totals) == result.stats.tokens  # the chunks' token counts are the run's
    if batching == "single":  # one forward per trace: a step of news for each (shares of distinct sizes)
        assert sum(len(c.strip("\n").split("\n")) for c in chunks) == 3 + 7
