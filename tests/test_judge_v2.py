"""The v2 judge prompt and the prefix-cached local judge (fluxprm.labels.quality.JudgeTrace,
LogprobJudge.score_traces): prompt layout, windowing, and cached == uncached on the real SmolLM2 judge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from fluxprm.labels import LabelConfig, Labeler, label_config_hash, run_label_job  # noqa: E402
from fluxprm.labels.quality import JudgeTrace, LogprobJudge, TextJudge, load_prompt, score_from_logprobs  # noqa: E402

PROBLEM = "What is 17 * 23?"
RESPONSE = "17 * 23 = 391, so the answer is \\boxed{391}."
STEPS = ["I need 17 times 23. Split 23 into 20 and 3.",
         "17 * 20 = 340.",
         "17 * 3 = 51.",
         "Wait, let me double check 17 * 3: 10 * 3 = 30 and 7 * 3 = 21, total 51. Yes.",
         "Now 340 + 51 = 391.",
         "Hmm, 340 + 51 is 381. No, 340 + 50 = 390 and plus 1 is 391. Good.",
         "So 17 * 23 = 391."]


def test_v2_prompts_share_their_prefix_and_put_the_question_last():
    trace = JudgeTrace.build(PROBLEM, STEPS, RESPONSE)
    assert len(trace) == len(STEPS) and set(trace.starts) == {0}  # a short trace: one segment, all in view
    for t in range(len(STEPS)):
        prompt = trace.prompt(t)
        # problem and response first, then the steps up to the graded one, then the question naming it
        assert prompt.index(PROBLEM) < prompt.index(RESPONSE) < prompt.index(STEPS[0]) <= prompt.index(STEPS[t])
        assert prompt.endswith(f"Grade step {t + 1}.")
        assert all(step not in prompt for step in STEPS[t + 1:] if step not in STEPS[t])
        if t + 1 < len(STEPS):  # the next prompt extends this one, minus the question
            assert trace.prompt(t + 1).startswith(prompt[: -len(trace.questions[t])])
    # the question after the steps is short: what each step costs beyond its own text
    assert len(trace.questions[3]) < 60
    assert list(trace.segments()) == [(0, list(range(len(STEPS))))]


def test_v2_window_restarts_keep_at_least_the_context_and_bound_the_view():
    steps = [f"Step text number {k} " + "x" * (40 + 7 * k) for k in range(40)]
    context, window = 200, 600
    trace = JudgeTrace.build(PROBLEM, steps, RESPONSE, context_chars=context, window_chars=window)
    assert len(set(trace.starts)) > 3  # restarted several times
    for t, start in enumerate(trace.starts):
        assert start <= t and (t == 0 or start < t or len(trace.steps[t - 1]) > context)
        earlier = sum(len(x) for x in trace.steps[start:t])
        # never more than the window (plus the one step that crossed it) in view ...
        assert earlier <= window + max(len(x) for x in trace.steps)
        # ... and the steps that fit in the context (at most one step short of it), or every earlier step
        assert earlier >= min(context - max(len(x) for x in trace.steps), sum(len(x) for x in trace.steps[:t]))
        prompt = trace.prompt(t)
        if start:
            assert f"[{start} earlier steps omitted]" in prompt and trace.steps[start - 1] not in prompt
    # every step is judged exactly once, in order, across the segments
    assert [t for _, group in trace.segments() for t in group] == list(range(len(steps)))
    with pytest.raises(ValueError, match="steps"):
        JudgeTrace.build(PROBLEM, steps, RESPONSE, template="no placeholder here")


def test_v2_clips_long_texts_and_marks_a_missing_response():
    trace = JudgeTrace.build("P" * 5000, ["s" * 5000], "", text_chars=300)
    prompt = trace.prompt(0)
    assert "[…]" in prompt and "(no final response" in prompt and len(prompt) < 2000


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from fluxprm.llm import LLMCache, load_llm

    return load_llm("smollm2", cache=LLMCache(tmp_path_factory.mktemp("llm") / "cache.sqlite"), device="cpu")


@pytest.mark.parametrize("block_tokens", [1024, 1])  # several steps per forward; one step per forward
def test_cached_judge_equals_an_uncached_forward_over_the_same_prompt(smollm2, block_tokens, monkeypatch):
    from fluxprm.labels import quality

    monkeypatch.setattr(quality, "BLOCK_TOKENS", block_tokens)
    if block_tokens == 1:  # this run must compute, not read the first run's results from the LLM cache
        monkeypatch.setattr(smollm2, "cache", None)
    judge = LogprobJudge(smollm2)
    # a small window forces a restart, so a segment that opens with earlier steps and a note is covered too
    trace = JudgeTrace.build(PROBLEM, STEPS, RESPONSE, context_chars=60, window_chars=120)
    assert len(set(trace.starts)) >= 2
    forwards = smollm2.stats["forwards"]
    cached = judge.score_traces([trace])[0]
    for t in range(len(trace)):
        reference = judge.trace_logprobs_uncached(trace, t)
        assert cached[t] == pytest.approx(score_from_logprobs(reference), abs=1e-4)
        assert 0.0 <= cached[t] <= 1.0
    assert smollm2.stats["forwards"] == forwards  # no generate() calls: the judge reads the logits itself
    # the ids the cached path feeds are the whole prompt's text (pieces tokenized one by one)
    ids = judge.trace_ids(trace, 2)
    assert smollm2.tokenizer.decode(ids).endswith(trace.questions[2] + "<|im_end|>\n<|im_start|>assistant\nScore: ")
    assert trace.prompt(2) in smollm2.tokenizer.decode(ids)
    if smollm2.cache is not None:  # answered from the LLM cache the second time, the same numbers
        hits = smollm2.cache.hits
        assert judge.score_traces([trace])[0] == cached and smollm2.cache.hits == hits + len(trace)
    # a different trace of the batch does not change this one's scores
    other = JudgeTrace.build("What is 2 + 2?", ["2 + 2 = 4."], "4")
    both = LogprobJudge(smollm2).score_traces([other, JudgeTrace.build(PROBLEM, STEPS[:3], RESPONSE)])
    assert both[1] == pytest.approx(judge.score_traces([JudgeTrace.build(PROBLEM, STEPS[:3], RESPONSE)])[0],
                                    abs=1e-6)
    assert judge.score_traces([JudgeTrace.build(PROBLEM, [], RESPONSE)]) == [[]]


def test_text_judges_get_whole_v2_prompts_in_step_order():
    seen: list[str] = []

    class Recording:
        name = "recording"

        def generate(self, prompts, params):
            seen.extend(p[0]["content"] for p in prompts)
            return [["Score: 7"] for _ in prompts]

    traces = [JudgeTrace.build(PROBLEM, STEPS[:3], RESPONSE), JudgeTrace.build("2+2?", ["4."], "4")]
    assert TextJudge(Recording()).score_traces(traces) == [[0.7, 0.7, 0.7], [0.7]]
    assert seen == [traces[0].prompt(0), traces[0].prompt(1), traces[0].prompt(2), traces[1].prompt(0)]


def test_label_records_say_which_prompt_made_them(tmp_path, smollm2):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "problem": PROBLEM, "response": "<think>" + "\n\n".join(STEPS[:3])
                               + "</think>" + RESPONSE}) + "\n")
    records = {}
    for version in ("v1", "v2"):
        cfg = LabelConfig(judge_prompt=version, alignment=False, coherence=False, device="cpu")
        out = tmp_path / f"{version}.jsonl"
        run_label_job([str(src)], out, None, cfg, labeler=Labeler(cfg, judge_llm=smollm2))
        records[version] = json.loads(out.read_text())
        assert records[version]["judge_prompt"] == version
        assert records[version]["label_config"] == label_config_hash(cfg)
        quality = records[version]["components"]["quality"]
        assert len(quality) == len(records[version]["thinking_steps"]) >= 1 and all(0 <= q <= 1 for q in quality)
    # the prompt text is part of the labels' identity: v1 and v2 labels are never mixed up
    assert records["v1"]["label_config"] != records["v2"]["label_config"]
    assert records["v1"]["components"]["quality"] != records["v2"]["components"]["quality"]
    assert "{steps}" in load_prompt("judge_step_v2.txt")
    with pytest.raises(ValueError, match="judge_prompt"):
        LabelConfig(judge_prompt="v3")
    # v1's identity is what it was before v2 existed: the hash fluxprm 0.x wrote into label files with the
    # default options (computed by the code of commit bacc1f7), so old label files are recognised
    assert label_config_hash(LabelConfig(judge_prompt="v1")) == "b10c17cadf24"
    assert LabelConfig(judge_prompt="v1").judge_context == 2000 and LabelConfig().judge_context == 1000
    none = LabelConfig(judge=None, alignment=True)
    assert label_config_hash(none) == label_config_hash(LabelConfig(judge=None, alignment=True, judge_prompt="v1"))
