"""Format detection and parsing of traces, on real fixture records and synthetic edge cases."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fluxprm.records import BadRecord, iter_records
from fluxprm.traces import (CHAT_TEMPLATES, SHAPES, FieldMap, Trace, TraceError, detect_shape, iter_traces,
                            parse_record, split_thinking)

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


def load(name: str, fields: FieldMap | None = None) -> list[Trace | BadRecord]:
    return list(iter_traces([FIXTURES / name], fields))


def raw(name: str, line: int) -> dict:
    return next(r.data for r in iter_records([FIXTURES / name]) if r.line == line)


def one(data: dict, **kwargs) -> Trace:
    (trace,) = parse_record(data, **kwargs)
    return trace


# ----------------------------------------------------------------------------- split_thinking


@pytest.mark.parametrize("text, thinking, response", [
    ("<think>\nA.\n\nB.\n</think>\n\nAnswer.", "A.\n\nB.", "Answer."),
    ("Inside already.\n</think>\nAnswer.", "Inside already.", "Answer."),  # opening tag was in the prompt
    ("<think>\nstill thinking, cut", "still thinking, cut", ""),  # cut off mid-thought
    ("<think>\n\n</think>\n\nJust the answer.", None, "Just the answer."),  # thinking disabled
    ("No markers at all.\n", None, "No markers at all."),
    ("<|begin_of_thought|>\n\nT.\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\nS.\n\n<|end_of_solution|>",
     "T.", "S."),
    ("<|begin_of_thought|>\n\nT, cut off", "T, cut off", ""),
    ("<|begin_of_thought|>T<|end_of_thought|>\n<|begin_of_solution|>S without end", "T", "S without end"),
    ("<|begin_of_thought|>T<|end_of_thought|>S bare", "T", "S bare"),
    ("<|begin_of_solution|>only solution<|end_of_solution|>", None, "only solution"),
])
def test_split_thinking(text, thinking, response):
    assert split_thinking(text) == (thinking, response)


# ----------------------------------------------------------------------------- Sky-T1 / plain pool file


def test_skythought_long_trace_exact_boundaries():
    record = raw("skythought_amc23_sample.jsonl", 1)
    text = record["response"]
    trace = one(record, source="s.jsonl", line=1)
    assert trace.format == "sky-t1" and trace.id == "34"
    assert trace.problem.startswith("Jackson's paintbrush makes a narrow strip")
    start = text.index("<|begin_of_thought|>") + len("<|begin_of_thought|>")
    assert trace.thinking == text[start:text.index("<|end_of_thought|>")].strip()
    assert trace.thinking.startswith("So I have this problem here. Jackson has a paintbrush")
    assert trace.thinking.endswith("I think the answer is indeed 1625 square centimeters.")
    assert trace.response.startswith("Jackson has a paintbrush that makes a narrow strip")
    assert trace.response.endswith("square centimeters of paper with his paint.")
    assert "<|" not in trace.thinking + trace.response
    assert trace.gold == "1625.0" and trace.correct is True
    assert trace.meta["pred"] == "1625" and trace.meta["model"] == "icml_models/Sky-T1-math-corrupt-0.7-32B"
    assert "question" not in trace.meta and "response" not in trace.meta and "correct" not in trace.meta


def test_skythought_file_cut_off_and_short_rows():
    traces = load("skythought_amc23_sample.jsonl")
    assert [t.format if isinstance(t, Trace) else "bad" for t in traces] == [
        "sky-t1", "sky-t1", "sky-t1", "sky-t1", "plain", "plain", "bad"]
    cut = traces[2]
    assert cut.response == "" and cut.correct is False and cut.meta["long_cot"] is True
    assert cut.thinking.endswith("So, I need to collect")
    no_end = traces[3]  # <|end_of_solution|> missing: the solution runs to the end
    assert no_end.response.endswith("Both equations hold true, confirming our solution.")
    assert no_end.thinking.endswith("I think that's the final answer.")
    short = traces[4]
    assert short.thinking is None and short.response.startswith("To determine how many miles from City")
    empty = traces[6]  # a real empty response from Llama-3.1-8B
    assert empty.to_json() == {"source": str(FIXTURES / "skythought_amc23_sample.jsonl"), "line": 7, "id": "1",
                               "error": "field 'response' is empty"}


# ----------------------------------------------------------------------------- Best-of-N pool


def test_qwen_pool_expands_per_candidate():
    traces = load("qwen25math_pool_sample.jsonl")
    assert len(traces) == 16 and all(t.format == "pool" for t in traces)
    second = traces[8:]
    assert [t.id for t in second] == [f"17#{k}" for k in range(8)]
    assert [t.correct for t in second] == [True, True, False, False, True, True, False, False]
    assert [t.meta["pred"] for t in second][:3] == ["6290000", "6290000", "6287000"]
    t = second[2]
    assert t.meta["candidate"] == 2 and t.meta["group"] == "17" and t.line == 2
    assert t.problem == "Round $6287215$ to the nearest ten thousand." and t.gold == "6290000"
    assert isinstance(t.meta["pred_score"], list) and len(t.meta["pred_score"]) == 1
    assert t.response == raw("qwen25math_pool_sample.jsonl", 2)["response"][2].strip()
    assert "code" not in t.meta and "response" not in t.meta and "gt" not in t.meta


def test_pool_bad_candidate_is_reported_alone(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps({"idx": 7, "question": "q?", "response": ["a", "", "c"], "score": [True, False, True]}))
    out = list(iter_traces([path]))
    assert [type(x).__name__ for x in out] == ["Trace", "BadRecord", "Trace"]
    assert out[1].id == "7#1" and out[1].error == "field 'response[1]' is empty" and out[1].line == 1
    with pytest.raises(TraceError, match=r"response\[1\]"):
        parse_record(json.loads(path.read_text()))


# ----------------------------------------------------------------------------- PRMBench


def test_prmbench_modified_process_labels():
    traces = load("prmbench_train_sample.jsonl")
    assert all(t.format == "prmbench" for t in traces)
    first = traces[0]
    assert first.id == "prm_train_p1_112" and first.problem.startswith("Simplify $\\frac{8xy^2}{6x^2y}$")
    assert len(first.steps) == 4 and first.step_labels == [0.0, 1.0, 0.0, 1.0]
    assert first.meta["classification"] == "circular" and first.meta["error_steps"] == [1, 3]
    assert first.response == "\n\n".join(first.steps)
    assert [t.step_labels for t in traces[1:4]] == [[1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0],
                                                    [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]]


def test_prmbench_out_of_range_error_step_is_flagged_not_fatal():
    last = load("prmbench_train_sample.jsonl")[4]
    assert last.step_labels == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert last.meta["label_warning"] == "error_steps [8] outside 1..7; ignored"


def test_prmbench_modified_question_vs_original():
    record = raw("prmbench_train_sample.jsonl", 4)
    assert record["modified_question"] != record["original_question"]
    modified = one(record)
    original = one(record, fields=FieldMap(steps="original_process"))
    assert modified.problem == record["modified_question"] and original.problem == record["original_question"]
    assert original.steps == record["original_process"] and original.step_labels == [1.0] * len(original.steps)
    assert "modified_process" in original.meta and "original_process" not in original.meta


# ----------------------------------------------------------------------------- PRM800K raw


def test_prm800k_raw_path_and_labels():
    traces = load("prm800k_raw_sample.jsonl")
    assert all(t.format == "prm800k" for t in traces) and len(traces) == 6
    first = traces[0]
    assert first.problem.startswith("Three pencils and a jumbo eraser cost")
    assert first.gold == "29" and first.id == "prm800k_raw_sample.jsonl:1"
    # step 2: all five completions rated -1, none chosen -> the human completion (unrated -> None)
    assert first.steps[1] == "We have $3p+e=1.24$ and $5p+e=1.82$."
    assert first.step_labels == [1.0, None, 1.0, 1.0, 1.0, 1.0]
    # last step: chosen_completion 4 among five (ratings 0, 1, 1, 1, 1)
    assert first.steps[-1].endswith("# Answer\n\n29")
    assert first.meta["finish_reason"] == "solution"
    second = traces[1]  # found_error: the last step has no choice, its first completion is the bad one
    assert second.meta["ratings"] == [1, 0, 1, 1, 1, 1, -1]
    assert second.step_labels == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # neutral 0 counted as good
    assert second.meta["pre_generated_answer"] == "7200"
    give_up = traces[4]  # last step has no completions at all: the trace ends before it
    assert len(give_up.steps) == 8 and give_up.meta["finish_reason"] == "give_up"


# ----------------------------------------------------------------------------- Math-Shepherd


def test_math_shepherd():
    traces = load("math_shepherd_sample.jsonl")
    assert len(traces) == 7 and all(t.format == "math-shepherd" for t in traces)
    first = traces[0]
    assert first.problem.startswith("Janet pays $40/hour for 3 hours per week")
    assert first.problem.endswith("than clarinet lessons in a year?")
    assert len(first.steps) == 5 and first.step_labels == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert first.steps[0] == "Step 1: Janet spends 3 hours + 5 hours = <<3+5=8>>8 hours per week on music lessons."
    assert first.steps[-1].endswith("The answer is: 13520")
    assert all("ки" not in s for s in first.steps)
    assert first.meta == {"task": "GSM8K"}
    assert traces[4].step_labels == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_math_shepherd_without_labels_and_mismatched_labels():
    text = "What is 1+1? Step 1: 1+1=2. ки\nStep 2: The answer is 2. ки"
    t = one({"input": text})
    assert t.steps == ["Step 1: 1+1=2.", "Step 2: The answer is 2."] and t.step_labels is None
    with pytest.raises(TraceError, match="field 'label' does not match 'input'"):
        parse_record({"input": text, "label": "What is 1+1? something else"})


# ----------------------------------------------------------------------------- MATH-APS


def test_math_aps_leaves_of_the_search_tree():
    traces = load("math_aps_sample.jsonl")
    record = raw("math_aps_sample.jsonl", 1)
    assert all(t.format == "math-aps" for t in traces)
    assert len({t.id for t in traces}) == len(traces) and traces[0].meta["group"] == "3"
    assert traces[0].problem.startswith("Consider sequences of positive real numbers")
    assert traces[0].gold == "4" and traces[0].meta["root_mc_value"] == 0.1875
    deep = max(traces, key=lambda t: len(t.steps))
    assert len(deep.steps) == len(deep.step_labels) >= 3
    node = record["reasoning_steps"][deep.meta["candidate"]]
    assert deep.step_labels[-1] == node["mc_value"]
    assert node["solution_prefix"].endswith(deep.steps[-1])


# ----------------------------------------------------------------------------- synthetic formats


def test_r1_records():
    full, open_in_prompt, cut, empty_think, plain = load("r1_synthetic.jsonl")
    assert (full.format, full.thinking, full.response) == ("r1", "I need to add 2 and 3.\n\n2 + 3 = 5.",
                                                           "The sum is 5.\n\n\\boxed{5}")
    assert full.gold == "5" and full.meta == {"model": "synthetic-r1"}
    assert (open_in_prompt.thinking, open_in_prompt.response) == ("Okay, 2+3.\n\nThat is 5.", "**Answer:** 5")
    assert (cut.thinking, cut.response, cut.gold) == ("Let me think about 7*8.\n\n7*8 = 54? No, wait", "", 56)
    assert (empty_think.thinking, empty_think.response) == (None, "The answer is 5.")
    assert empty_think.problem == "What is 2+3?" and empty_think.correct is True
    assert plain.format == "plain" and plain.id == "r1_synthetic.jsonl:5" and plain.gold == 6


def test_s1k_records():
    single, multi = load("s1k_synthetic.jsonl")
    assert single.format == "s1k" and single.thinking_steps is None
    assert single.thinking.startswith("The first 10 odd numbers") and single.response.endswith("$\\boxed{100}$.")
    assert single.gold.startswith("The sum of the first $n$ odd numbers is $n^2$")
    assert multi.thinking_steps == ["A cube has 6 faces.", "Each face has 4 edges and each edge is shared by 2 faces.",
                                    "So 6*4/2 = 12 edges."]
    assert multi.thinking == "\n\n".join(multi.thinking_steps) and multi.gold == "12"
    assert multi.meta["cot_type"] == "math"


def test_messages_records():
    reasoning, tags, sharegpt = load("messages_synthetic.jsonl")
    assert all(t.format == "messages" for t in (reasoning, tags, sharegpt))
    assert (reasoning.problem, reasoning.thinking, reasoning.response) == (
        "What is 3*4?", "Three groups of four.\n\nThat makes 12.", "3*4 = 12.")
    assert reasoning.meta["system"] == "You are a careful solver." and reasoning.gold == "12"
    assert (tags.problem, tags.thinking, tags.response) == ("What is 9-2?", "9 minus 2 is 7.", "The answer is 7.")
    assert (sharegpt.problem, sharegpt.thinking, sharegpt.response) == ("What is 1+1?", "1 plus 1 is 2.", "\\boxed{2}")


def test_messages_with_content_parts_and_cut_off_reply():
    t = one({"messages": [{"role": "user", "content": [{"type": "text", "text": "Q?"}]},
                          {"role": "assistant", "content": None, "reasoning_content": "thinking..."}]})
    assert (t.problem, t.thinking, t.response) == ("Q?", "thinking...", "")


def test_processbench_and_trl_stepwise():
    wrong, right, trl = load("processbench_synthetic.jsonl")
    assert wrong.format == "steps" and wrong.id == "gsm8k-0" and wrong.correct is False
    assert len(wrong.steps) == 4 and wrong.step_labels == [1.0, 0.0, None, None]
    assert right.step_labels == [1.0, 1.0] and right.correct is True and right.meta["generator"] == "synthetic"
    assert trl.problem == "What is 2+2?" and trl.steps == ["2 + 2 = 4.", "So the answer is 5."]
    assert trl.step_labels == [1.0, 0.0]


def test_trl_conversational_prompt_and_completion():
    t = one({"prompt": [{"role": "user", "content": "Q?"}],
             "completion": [{"role": "assistant", "content": "<think>hm</think>A."}]})
    assert (t.problem, t.thinking, t.response, t.format) == ("Q?", "hm", "A.", "r1")


def test_explicit_thinking_field():
    t = one({"problem": "Q", "reasoning_content": "R", "response": "A"})
    assert (t.thinking, t.response) == ("R", "A")


def test_gsm8k_answer_is_gold_not_response():
    with pytest.raises(TraceError, match="no response field found"):
        parse_record({"question": "Q", "answer": "It is 3.\n#### 3"})
    t = one({"question": "Q", "answer": "It is 3.\n#### 3", "output": "3"})
    assert t.gold == "It is 3.\n#### 3" and t.response == "3"


# ----------------------------------------------------------------------------- chat templates inside text fields


def test_chat_template_deepseek_reported_case_prompt_is_not_thinking():
    raw_record, split, cut = load("chat_templates_synthetic.jsonl")[:3]
    # DeepSeek-R1-Distill output saved raw: the prompt used to become the first thinking step
    assert (raw_record.problem, raw_record.thinking, raw_record.response) == ("What is 2+3?", "I add.",
                                                                              "The answer is 5.")
    assert raw_record.format == "r1" and raw_record.id == "r1-distill-raw"
    assert raw_record.meta == {"chat_template": "deepseek", "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}
    # <think>\n in the prompt field: the completion starts inside the thought and ends with the EOS token
    assert split.problem == "What is 7*8? Please reason step by step, and put your final answer within \\boxed{}."
    assert (split.thinking, split.response) == ("Okay, 7 times 8.\n\n7*8 = 56.", "7 × 8 = 56.\n\n\\boxed{56}")
    assert split.format == "r1" and split.gold == "56" and split.meta == {"chat_template": "deepseek"}
    # cut off before </think>: all thinking, because the prompt opened the thought
    assert (cut.thinking, cut.response) == ("Okay, 7 times 8.\n\nLet me count: 8, 16, 24", "")
    assert cut.meta == {"chat_template": "deepseek", "finish_reason": "length"}


def test_chat_template_chatml_qwen():
    qwen_math, qwq = load("chat_templates_synthetic.jsonl")[3:5]
    assert qwen_math.id == "12" and qwen_math.problem == "What is 9-2?" and qwen_math.gold == "7"
    assert (qwen_math.thinking, qwen_math.response, qwen_math.format) == (
        None, "9 - 2 = 7.\n\nThe answer is $\\boxed{7}$.", "plain")
    assert qwen_math.meta == {"chat_template": "chatml", "system": "Please reason step by step, and put your "
                                                                   "final answer within \\boxed{}."}
    assert qwq.problem == "How many edges does a cube have?" and qwq.format == "r1"
    assert qwq.thinking == "A cube has 6 faces.\n\nEach face has 4 edges, each shared by 2 faces: 6*4/2 = 12."
    assert qwq.response == "A cube has **12** edges." and qwq.gold == "12"
    assert qwq.meta["chat_template"] == "chatml" and qwq.meta["system"].startswith("You are a helpful")


def test_chat_template_llama3_gemma_mistral():
    llama, gemma, mistral_v1, mistral_v7 = load("chat_templates_synthetic.jsonl")[5:]
    assert (llama.problem, llama.thinking, llama.response, llama.gold) == (
        "What is 10-4?", None, "10 - 4 = 6.\n\nThe answer is 6.", 6)
    assert llama.meta == {"chat_template": "llama3",
                          "system": "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024"}
    # multi-turn, no problem field: the last user turn is the problem, earlier turns are kept as conversation
    assert (gemma.problem, gemma.response) == ("And 2+2?", "2 + 2 = 4.\n\n**Answer:** 4")
    assert gemma.meta == {"chat_template": "gemma", "conversation": [
        {"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "1 + 1 = 2."}]}
    assert (mistral_v1.problem, mistral_v1.response) == ("What is 6/2?", "6 / 2 = 3.\n\nThe answer is 3.")
    assert mistral_v1.meta == {"chat_template": "mistral"} and mistral_v1.gold == "3"
    # a lone "</s>" is stripped only because the prompt field already showed the Mistral template
    assert (mistral_v7.problem, mistral_v7.response) == ("What is 3*4?", "3 * 4 = 12.\n\nThe answer is 12.")
    assert mistral_v7.meta == {"chat_template": "mistral", "system": "You are a careful solver."}


def test_chat_template_names_and_no_markers_left():
    traces = load("chat_templates_synthetic.jsonl")
    assert len(traces) == 9 and all(isinstance(t, Trace) for t in traces)
    assert {t.meta["chat_template"] for t in traces} == set(CHAT_TEMPLATES)
    markers = ("<｜", "<|im_", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>", "_of_turn>", "<bos>", "<eos>",
               "[INST]", "[/INST]", "</s>", "<s>", "SYSTEM_PROMPT", "<think>", "</think>")
    for t in traces:
        text = t.problem + (t.thinking or "") + t.response + json.dumps(t.meta, ensure_ascii=False)
        assert not any(m in text for m in markers), (t.id, text)


@pytest.mark.parametrize("text", [
    "<think>\nA.\n</think>\n\nAnswer.", "Inside already.\n</think>\nAnswer.", "No markers.\n", "  padded  ",
    "User: What is 2+3?\n\nAssistant: 5",  # DeepSeek's old plain prompt: too ambiguous to touch
    "Use <s> and </s> in HTML; [INST] alone is no template.",  # Mistral needs [/INST]
    "<|begin_of_thought|>T<|end_of_thought|><|begin_of_solution|>S<|end_of_solution|>",
])
def test_text_without_template_markers_is_unchanged(text):
    t = one({"problem": "Q", "response": text})
    assert (t.thinking, t.response, t.format) == split_thinking(text) + (t.format,)
    assert "chat_template" not in t.meta
    assert one({"problem": text, "response": "A"}).problem == text  # problem text byte for byte


def test_problem_field_with_template_markers():
    prompt = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nFirst?<|im_end|>\n<|im_start|>assistant\n"
              "One.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n")
    t = one({"problem": prompt, "response": "2 and 2.\n</think>\n\n4<|im_end|>"})
    assert (t.problem, t.thinking, t.response, t.format) == ("What is 2+2?", "2 and 2.", "4", "r1")
    assert t.meta == {"chat_template": "chatml", "system": "Be brief.", "conversation": [
        {"role": "user", "content": "First?"}, {"role": "assistant", "content": "One."}]}


def test_problem_field_wins_over_user_turn_and_pool_candidates():
    text = "<|im_start|>user\nsome other wording<|im_end|>\n<|im_start|>assistant\nIt is 4.<|im_end|>"
    t = one({"problem": "What is 2+2?", "response": text})
    assert (t.problem, t.response, t.meta) == ("What is 2+2?", "It is 4.", {"chat_template": "chatml"})
    pool = parse_record({"problem": "Q", "response": [text, "<think>t</think>plain"]})
    assert [(c.response, c.meta.get("chat_template")) for c in pool] == [("It is 4.", "chatml"), ("plain", None)]


def test_deepseek_system_prompt_after_bos():
    t = one({"response": "<｜begin▁of▁sentence｜>You are terse.<｜User｜>Q?<｜Assistant｜>A<｜end▁of▁sentence｜>"})
    assert (t.problem, t.response, t.meta) == ("Q?", "A", {"chat_template": "deepseek", "system": "You are terse."})


def test_bare_generation_with_end_token():
    t = one({"problem": "Q", "response": "<think>\nhm\n</think>\n\nThe answer is 5.<｜end▁of▁sentence｜>"})
    assert (t.thinking, t.response, t.meta) == ("hm", "The answer is 5.", {"chat_template": "deepseek"})
    t = one({"problem": "Q", "response": "Final: 4<end_of_turn>\n<eos>"})
    assert (t.response, t.meta) == ("Final: 4", {"chat_template": "gemma"})


@pytest.mark.parametrize("record, message", [
    ({"response": "<|im_start|>user\nQ<|im_end|>\n"}, "field 'response' holds a chatml chat transcript without "
                                                       "an assistant turn"),
    ({"response": "<|im_start|>assistant\nA<|im_end|>"}, "no problem field found"),  # nothing to take it from
    ({"response": "no markers"}, "no problem field found"),
    ({"problem": "<bos><start_of_turn>model\nhi<end_of_turn>", "response": "A"},
     "field 'problem' holds a gemma chat prompt without a user turn"),
    ({"problem": "<|im_start|>user\n  <|im_end|>", "response": "A"}, "field 'problem': the last user turn of its "
                                                                      "chatml chat prompt is empty"),
    ({"problem": "Q", "response": "<|im_start|>assistant\n<|im_end|>"}, "field 'response' is empty"),
])
def test_chat_template_errors(record, message):
    with pytest.raises(TraceError) as info:
        parse_record(record)
    assert message in str(info.value)


# ----------------------------------------------------------------------------- overrides


def test_overrides_take_precedence():
    record = {"my_id": "A-1", "task": "Q?", "reply": "<think>t</think>r", "key": 4, "id": "ignored"}
    t = one(record, fields=FieldMap(id="my_id", problem="task", response="reply", gold="key"))
    assert (t.id, t.problem, t.thinking, t.response, t.gold) == ("A-1", "Q?", "t", "r", 4)
    assert t.meta == {"id": "ignored"}


def test_override_response_selects_pool_field():
    record = raw("qwen25math_pool_sample.jsonl", 1)
    traces = parse_record(record, fields=FieldMap(response="code"))
    assert len(traces) == 8 and traces[0].response == record["code"][0].strip()


def test_missing_override_field_is_named():
    with pytest.raises(TraceError, match=r"field 'reply' is missing \(named as the response field"):
        parse_record({"problem": "Q", "response": "A"}, fields=FieldMap(response="reply"))


def test_steps_override_on_a_generic_record():
    t = one({"problem": "Q", "my_steps": ["a", "b"], "response": "ignored"}, fields=FieldMap(steps="my_steps"))
    assert t.steps == ["a", "b"] and t.format == "steps" and t.meta == {"response": "ignored"}


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("record, message", [
    ({"foo": 1, "bar": 2}, "no problem field found (looked for 'problem', 'question', 'prompt', 'query', "
                           "'instruction', 'input'; record has keys: 'foo', 'bar')"),
    ({"problem": "Q"}, "no response field found (looked for 'response', 'output', 'completion', 'generation', "
                       "'answer_text', 'code'; record has keys: 'problem')"),
    ({"problem": "Q", "response": 3}, "field 'response' must be a string, got int"),
    # a Parquet row with a gap: the key is there (null), so "no problem field found … has keys: 'problem'" was wrong
    ({"problem": None, "response": "A"}, "field 'problem' is null: the record has no problem"),
    ({"question": "Q", "output": None}, "field 'output' is null: the record has no response"),
    ({"problem": "Q", "response": "   "}, "field 'response' is empty"),
    ({"problem": "Q", "response": "<think></think>"}, "field 'response' is empty"),
    ({"problem": "", "response": "A"}, "field 'problem' is empty"),
    ({"problem": 5, "response": "A"}, "field 'problem' must be a string, got int"),
    ({"problem": "Q", "steps": "one step"}, "field 'steps' must be a list of strings, got str"),
    ({"problem": "Q", "steps": ["a", 2]}, "field 'steps' must be a list of strings, got int at index 1"),
    ({"problem": "Q", "steps": []}, "field 'steps' is an empty list"),
    ({"problem": "Q", "steps": ["a", "b"], "label": 5}, "field 'label' is 5, but there are 2 steps"),
    ({"problem": "Q", "steps": ["a", "b"], "labels": [True]}, "field 'labels' has 1 labels but there are 2 steps"),
    ({"problem": "Q", "steps": ["a"], "labels": ["good"]}, "field 'labels' has label 'good'"),
    ({"messages": [{"role": "user", "content": "Q"}]}, "the last message has role 'user', expected 'assistant'"),
    ({"messages": [{"role": "assistant", "content": "A"}]}, "has no user message before the final assistant"),
    ({"messages": "hi"}, "field 'messages' must be a non-empty list of messages, got str"),
    ({"question": "Q", "thinking_trajectories": ["t"], "attempt": 7}, "field 'attempt' must be a string, got int"),
    ({"question": {"problem": "Q"}, "label": {"steps": "x"}}, "field 'label.steps' must be a list, got str"),
    ({"input": "no steps here ки"}, "field 'input' has no 'Step 1:' marker"),
    ({"modified_question": "Q", "modified_process": ["a"], "error_steps": "2"}, "field 'error_steps' must be"),
    ({"id": {"x": 1}, "problem": "Q", "response": "A"}, "field 'id' must be a string or number, got dict"),
])
def test_bad_records_raise_trace_error(record, message):
    with pytest.raises(TraceError) as info:
        parse_record(record)
    assert message in str(info.value)


def test_parse_record_rejects_non_objects():
    with pytest.raises(TraceError, match="expected a JSON object, got list"):
        parse_record([1, 2])


def test_every_bad_input_ends_as_bad_record_with_line(tmp_path):
    lines = [
        json.dumps({"id": "ok", "problem": "Q", "response": "A"}),
        '{"id": "cut", "problem": "Q", "response": "A',
        json.dumps({"id": "n", "problem": "Q", "response": 12}),
        "3",
        json.dumps({"id": "e", "problem": "Q", "response": ""}),
        json.dumps({"unknown": "shape"}),
        json.dumps({"problem": "Q", "steps": "s"}),
        json.dumps({"question": {"problem": "Q"}, "label": {"steps": [{"completions": [{"text": 5}]}]}}),
        json.dumps({"question": {"problem": "Q"}, "label": {"steps": [{"completions": [{"text": "s", "rating": "?"}],
                                                                         "chosen_completion": 0}]}}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "utf", "problem": "\xff"}\n')
    out = list(iter_traces([path]))
    assert [(x.line, type(x).__name__) for x in out] == [(1, "Trace")] + [(i, "BadRecord") for i in range(2, 11)]
    errors = {x.line: x for x in out[1:]}
    assert errors[3].id == "n" and errors[3].error == "field 'response' must be a string, got int"
    assert errors[4].error == "expected a JSON object, got int"
    assert errors[5].error == "field 'response' is empty"
    assert errors[9].error.startswith("unexpected record structure (TypeError")
    assert errors[10].error.startswith("invalid UTF-8")


def test_iter_traces_missing_file_raises_at_call(tmp_path):
    with pytest.raises(FileNotFoundError):
        iter_traces([tmp_path / "missing.jsonl"])


def test_five_megabyte_trace(tmp_path):
    thinking = "\n\n".join(["Let me think about this step."] * 170_000)
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"id": "big", "problem": "Q", "response": f"<think>{thinking}</think>\n\nA."}) + "\n")
    assert path.stat().st_size > 5_000_000
    (trace,) = iter_traces([path])
    assert trace.thinking == thinking and trace.response == "A."


# ----------------------------------------------------------------------------- containers


def fixture_records(name: str) -> list[dict]:
    return [r.data for r in iter_records([FIXTURES / name])]


@pytest.mark.parametrize("container", ["json", "json.gz", "jsonl.gz", "parquet", "parquet.gz"])
def test_container_round_trips_give_same_traces(tmp_path, container):
    records = fixture_records("r1_synthetic.jsonl") + fixture_records("processbench_synthetic.jsonl")[:2]
    records = [{k: v for k, v in r.items() if k != "answer"} for r in records]  # mixed types break one column
    path = tmp_path / f"data.{container}"
    if container.startswith("json"):
        body = (json.dumps(records) if container.startswith("json.") or container == "json"
                else "\n".join(json.dumps(r) for r in records)).encode()
        path.write_bytes(gzip.compress(body) if container.endswith(".gz") else body)
    else:
        keys = list(dict.fromkeys(k for r in records for k in r))  # Parquet stores absent keys as nulls
        table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records])
        pq.write_table(table, tmp_path / "data.parquet")
        if container.endswith(".gz"):
            path.write_bytes(gzip.compress((tmp_path / "data.parquet").read_bytes()))
    traces = list(iter_traces([path]))
    assert [t.line for t in traces] == [1, 2, 3, 4, 5, 6, 7]
    assert [t.format for t in traces] == ["r1", "r1", "r1", "r1", "plain", "steps", "steps"]
    assert traces[2].response == "" and traces[2].thinking.endswith("No, wait")
    assert traces[5].step_labels == [1.0, 0.0, None, None]


# ----------------------------------------------------------------------------- detection & misc


def test_detect_shape_names_are_in_shapes():
    examples = {
        "prm800k": {"question": {"problem": "Q"}, "label": {"steps": []}},
        "math-shepherd": {"input": "Q Step 1: a ки", "label": "Q Step 1: a +"},
        "math-aps": {"question": "Q", "reasoning_steps": []},
        "prmbench": {"modified_process": []},
        "steps": {"problem": "Q", "steps": []},
        "messages": {"messages": []},
        "s1k": {"question": "Q", "thinking_trajectories": [], "attempt": "A"},
        "plain": {"problem": "Q", "response": "A"},
    }
    for name, record in examples.items():
        assert detect_shape(record) == name and name in SHAPES


def test_all_fixtures_parse_without_exceptions():
    counts = {}
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for x in iter_traces([path]):
            counts[type(x).__name__] = counts.get(type(x).__name__, 0) + 1
            if isinstance(x, Trace):
                assert x.format in SHAPES and x.problem and (x.response or x.thinking or x.steps)
                assert x.steps is None or x.step_labels is None or len(x.steps) == len(x.step_labels)
                json.dumps(x.to_json())
    assert counts["BadRecord"] == 1 and counts["Trace"] > 50


def test_trace_id_without_source():
    assert one({"problem": "Q", "response": "A"}, line=3).id == "record:3"


@pytest.mark.parametrize("value, correct", [(True, True), (0, False), ("Yes", True), (" false ", False),
                                            ("NO", False), ("maybe", None), (2, None), (None, None)])
def test_correctness_flags_as_files_converted_from_csv_spell_them(value, correct):
    """``"correct": "yes"`` was left in meta: bon then evaluated nothing and said only "no correctness flags"."""
    from fluxprm.traces import parse_record, truth_value

    assert truth_value(value) is correct
    [trace] = parse_record({"id": "a", "problem": "p", "response": "r", "correct": value})
    assert trace.correct is correct
    assert trace.meta.get("correct") == (value if correct is None else None)  # a flag read is not kept twice
