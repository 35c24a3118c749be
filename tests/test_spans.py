"""Every step keeps its character span: the span cut out of the original text gives back the step's text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fluxprm.steps import StepConfig, prepare, split_spans
from fluxprm.traces import iter_traces, parse_record

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


def _check(text: str, steps: list[str], spans: list[tuple[int, int]]) -> None:
    assert len(steps) == len(spans)
    assert [text[a:b] for a, b in spans] == steps
    assert all(a < b for a, b in spans) and all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))


@pytest.mark.parametrize("cfg", [StepConfig(), StepConfig(min_chars=0), StepConfig(min_chars=200),
                                 StepConfig(max_thinking_steps=3, max_response_steps=1),
                                 StepConfig(separator="\n", min_chars=10, max_thinking_steps=5)])
def test_spans_of_real_traces_survive_merging_and_capping(cfg):
    files = ["skythought_amc23_sample.jsonl", "r1_synthetic.jsonl", "s1k_synthetic.jsonl", "messages_synthetic.jsonl"]
    traces = [t for t in iter_traces([str(FIXTURES / f) for f in files]) if hasattr(t, "problem")]
    assert len(traces) >= 10
    checked = 0
    for t in traces:
        try:
            inp = prepare(t, cfg)
        except ValueError:
            continue
        if t.thinking_steps is None and t.thinking:
            _check(t.thinking, inp.thinking_steps, inp.thinking_spans)
            checked += 1
        if t.steps is None and t.response:
            _check(t.response, inp.response_steps, inp.response_spans)
    assert checked >= 5


def test_merged_step_is_the_original_text_between_its_pieces():
    text = "Okay.\n\nLet me compute the sum of the roots.\n\n\n\nWait.\n\nThe sum is 7 by Vieta."
    spans = split_spans(text, "\n\n", min_chars=10)
    assert [text[a:b] for a, b in spans] == ["Okay.\n\nLet me compute the sum of the roots.\n\n\n\nWait.",
                                             "The sum is 7 by Vieta."]


def test_capping_a_huge_trajectory_keeps_contiguous_spans():
    text = "\n\n".join(f"paragraph number {i} with some words" for i in range(2000))
    spans = split_spans(text, "\n\n", min_chars=30, max_steps=64)
    assert len(spans) == 64 and spans[0][0] == 0 and spans[-1][1] == len(text)


def test_explicit_step_lists_are_located_in_the_joined_text():
    rec = json.loads((FIXTURES / "processbench_synthetic.jsonl").read_text().splitlines()[0])
    [t] = parse_record(rec)
    inp = prepare(t, StepConfig())
    _check(t.response, inp.response_steps, inp.response_spans)


def test_spans_reach_the_score_record(tmp_path):
    from builders import build_qwen_prm
    import fluxprm

    prm = fluxprm.load_prm(str(build_qwen_prm(None)), dtype="float32", device="cpu")
    rec = json.loads((FIXTURES / "r1_synthetic.jsonl").read_text().splitlines()[0])
    [t] = parse_record(rec)
    [s] = fluxprm.score_batch(prm, [t], fluxprm.ScoreOptions(spans=True))
    out = s.to_json()
    steps = [t.thinking[a:b] for a, b in out["thinking_step_spans"]] + [t.response[a:b] for a, b in out["response_step_spans"]]
    inp = prepare(t, StepConfig())
    assert steps == inp.thinking_steps + inp.response_steps and len(steps) == len(out["step_rewards"])
    [plain] = fluxprm.score_batch(prm, [t])
    assert "thinking_step_spans" not in plain.to_json()
