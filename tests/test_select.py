"""``fluxprm select``: ranking, ties, fractions, per-problem groups, min-score, α re-weighting, duplicates, the
output files (JSONL, Parquet, SFT chat through a real chat template), the report, errors, the CLI end to end
(scoring with a tiny checkpoint and from a scores file), no torch without a model, and memory bounded by k on a
100K-record pool."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fluxprm.scored import ScoreSource
from fluxprm.select import SelectOptions, _Pick, _TopK, _k_of, run_select
from fluxprm.traces import parse_record

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


def fluxprm(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fluxprm", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def score_record(source: Path, line: int, score: float | None, *, steps: list[float] | None = None,
                 traj: float | None = None, candidate: int | None = None, model: str = "toy") -> dict:
    steps = [score] if steps is None and score is not None else (steps or [])
    # The id fluxprm makes up for an id-less record: the join compares only ids a record carries itself.
    made_up_id = f"{Path(source).name}:{line}" + ("" if candidate is None else f"#{candidate}")
    rec = {"id": made_up_id, "score": score, "step_rewards": steps, "thinking_step_rewards": [],
           "response_step_rewards": steps, "trajectory_reward": traj, "num_steps": len(steps), "truncated": False,
           "model": model, "source": str(source), "line": line}
    if candidate is not None:
        rec["candidate"] = candidate
    return rec


def pool(tmp_path: Path, rows: list[dict], scores: list[float | None], **kw) -> tuple[Path, Path]:
    """An input file and its scores file (a ``None`` score: no score record, as if rejected when scoring)."""
    inp = write_jsonl(tmp_path / "pool.jsonl", rows)
    recs = [score_record(inp, i + 1, s, **kw) for i, s in enumerate(scores) if s is not None]
    return inp, write_jsonl(tmp_path / "scores.jsonl", recs)


def select(tmp_path: Path, inp: Path, scores: Path, name: str = "sel.jsonl", **options):
    out = tmp_path / name
    result = run_select([inp], out, ScoreSource(scores=[str(scores)]), SelectOptions(**options))
    records = [json.loads(x) for x in out.read_text().splitlines()] if options.get("format") != "parquet" else None
    return result, records


def rows(n: int, problem: str = "What is 1+1?") -> list[dict]:
    return [{"problem": problem, "response": f"answer number {i}"} for i in range(n)]


def lines_of(records: list[dict]) -> list[int]:
    return [r["fluxprm"]["line"] for r in records]


# ---------------------------------------------------------------------------------------------- ranking

def test_top_k_keeps_the_best_in_input_order_with_ranks(tmp_path):
    inp, sc = pool(tmp_path, rows(5), [0.1, 0.9, 0.5, 0.8, 0.3])
    result, recs = select(tmp_path, inp, sc, top_k=3)
    assert lines_of(recs) == [2, 3, 4]  # input order, not score order
    assert {r["fluxprm"]["line"]: r["fluxprm"]["rank"] for r in recs} == {2: 1, 4: 2, 3: 3}
    assert [r["fluxprm"]["score"] for r in recs] == [0.9, 0.5, 0.8]
    assert recs[0]["response"] == "answer number 1" and recs[0]["problem"] == "What is 1+1?"  # record unchanged
    c = result.counts
    assert (c.records_in, c.scored, c.selected, c.not_selected, c.errors, c.unscored) == (5, 5, 3, 2, 0, 0)
    assert result.errors is None and not (tmp_path / "sel.errors.jsonl").exists()


def test_ties_go_to_the_earlier_record(tmp_path):
    inp, sc = pool(tmp_path, rows(5), [0.2, 0.7, 0.7, 0.1, 0.7])
    _, recs = select(tmp_path, inp, sc, top_k=2)
    assert lines_of(recs) == [2, 3]
    assert {r["fluxprm"]["line"]: r["fluxprm"]["rank"] for r in recs} == {2: 1, 3: 2}
    _, recs = select(tmp_path, inp, sc, top_k=1)
    assert lines_of(recs) == [2]


def test_top_fraction_is_ceil_of_f_times_scored(tmp_path):
    inp, sc = pool(tmp_path, rows(6), [0.6, 0.5, None, 0.4, 0.3, 0.2])  # 5 scored
    result, recs = select(tmp_path, inp, sc, top_fraction=0.5)
    assert result.k == 3 and lines_of(recs) == [1, 2, 4]
    assert result.counts.unscored == 1
    result, recs = select(tmp_path, inp, sc, top_fraction=0.4)
    assert result.k == 2 and lines_of(recs) == [1, 2]
    result, _ = select(tmp_path, inp, sc, top_fraction=1.0)
    assert result.k == 5 and result.counts.selected == 5
    assert _k_of(0.1, 30) == 3 and _k_of(0.25, 600) == 150 and _k_of(0.25, 5885) == 1472 and _k_of(1e-9, 1) == 1


def test_min_score_is_applied_after_the_ranking(tmp_path):
    inp, sc = pool(tmp_path, rows(5), [0.1, 0.9, 0.5, 0.8, 0.3])
    result, recs = select(tmp_path, inp, sc, top_k=4, min_score=0.5)
    assert lines_of(recs) == [2, 3, 4]  # 0.5 itself passes
    c = result.counts
    assert (c.selected, c.below_min_score, c.not_selected) == (3, 2, 0)
    result, recs = select(tmp_path, inp, sc, top_k=4, min_score=0.95)
    assert recs == [] and result.counts.below_min_score == 5 and any("min-score" in w for w in result.warnings)


def test_per_problem_groups_by_id_and_normalised_text(tmp_path):
    data = [
        {"idx": 0, "dataset": "a", "question": "Find x.", "response": "x = 1"},      # problem A
        {"idx": 0, "dataset": "a", "question": "find  X.", "response": "x = 2"},     # A: whitespace and case
        {"idx": 0, "dataset": "b", "question": "Compute y.", "response": "y = 1"},   # same idx, other text: B
        {"idx": 0, "dataset": "b", "question": "Compute y.", "response": "y = 2"},   # B
        {"idx": 1, "dataset": "a", "question": "Find x.", "response": "x = 3"},      # same text, other id: C
        {"question": "Find z.", "response": "z = 1"},                                # no id: by text, D
        {"question": "FIND   z.", "response": "z = 2"},                              # D
    ]
    inp, sc = pool(tmp_path, data, [0.3, 0.4, 0.9, 0.1, 0.2, 0.5, 0.6])
    result, recs = select(tmp_path, inp, sc, top_k=1, per_problem=True)
    assert lines_of(recs) == [2, 3, 5, 7]
    assert all(r["fluxprm"]["problem_rank"] == 1 for r in recs)
    assert {r["fluxprm"]["line"]: r["fluxprm"]["rank"] for r in recs} == {3: 1, 7: 2, 2: 3, 5: 4}
    assert result.counts.problems == 4 and result.k is None
    _, recs = select(tmp_path, inp, sc, top_k=2, per_problem=True)
    assert lines_of(recs) == [1, 2, 3, 4, 5, 6, 7]
    # a fraction per problem: ceil(0.5 * 2) = 1 of A, B, D and ceil(0.5 * 1) = 1 of C
    _, recs = select(tmp_path, inp, sc, top_fraction=0.5, per_problem=True)
    assert lines_of(recs) == [2, 3, 5, 7]
    # a named id field: by dataset, line 5 joins A (same dataset, same text)
    result, recs = select(tmp_path, inp, sc, top_k=1, per_problem=True, problem_id_field="dataset")
    assert lines_of(recs) == [2, 3, 7] and result.counts.problems == 3


def test_alpha_reweights_from_the_stored_parts(tmp_path):
    inp = write_jsonl(tmp_path / "pool.jsonl", rows(3))
    sc = write_jsonl(tmp_path / "scores.jsonl", [
        score_record(inp, 1, 0.8, steps=[0.8, 0.6], traj=0.1),   # mean 0.7 + 1 * 0.1
        score_record(inp, 2, 1.0, steps=[0.5], traj=0.5),        # mean 0.5 + 1 * 0.5
        score_record(inp, 3, 0.65, steps=[0.65], traj=None),     # no trajectory head: keeps its score
    ])
    result, recs = select(tmp_path, inp, sc, top_k=1)
    assert lines_of(recs) == [2] and not result.warnings
    result, recs = select(tmp_path, inp, sc, top_k=1, alpha=0.0)  # 0.7, 0.5, 0.65
    assert lines_of(recs) == [1] and not result.warnings
    f = recs[0]["fluxprm"]
    assert f["score"] == pytest.approx(0.7) and f["stored_score"] == 0.8 and f["alpha"] == 0.0
    assert f["aggregate"] == "mean" and f["trajectory_reward"] == 0.1 and f["step_rewards"] == [0.8, 0.6]
    _, recs = select(tmp_path, inp, sc, top_k=2, alpha=0.1)  # 0.71, 0.55, 0.65
    assert [r["fluxprm"]["score"] for r in recs] == [pytest.approx(0.71), 0.65]
    _, recs = select(tmp_path, inp, sc, top_k=1, alpha=2.0)  # 0.9, 1.5, 0.65
    assert lines_of(recs) == [2] and recs[0]["fluxprm"]["score"] == pytest.approx(1.5)
    # the wrong aggregate is noticed: min gives implied alphas (0.8-0.6)/0.1 = 2 and (1.0-0.5)/0.5 = 1
    result, _ = select(tmp_path, inp, sc, top_k=1, alpha=1.0, aggregate="min")
    assert any("not min(step rewards)" in w for w in result.warnings)


def test_duplicates_keep_the_best_scoring_copy(tmp_path):
    data = [{"problem": "P", "response": "same  answer\n"},   # duplicate of line 3 (whitespace aside), worse
            {"problem": "P", "response": "other answer"},
            {"problem": "P", "response": "same answer"},
            {"problem": "Q", "response": "same answer"},       # another problem: not a duplicate
            {"problem": "P", "response": "Same answer"}]      # case differs: not a duplicate
    inp, sc = pool(tmp_path, data, [0.5, 0.7, 0.9, 0.8, 0.1])
    result, recs = select(tmp_path, inp, sc, top_k=4)
    assert lines_of(recs) == [2, 3, 4, 5]
    assert (result.counts.duplicates, result.counts.not_selected) == (1, 0)
    result, recs = select(tmp_path, inp, sc, top_k=4, dedup=False)
    assert lines_of(recs) == [1, 2, 3, 4] and result.counts.duplicates == 0
    # the better copy comes first: the later, worse copy is refused
    inp, sc = pool(tmp_path, data, [0.95, 0.7, 0.9, 0.8, 0.1])
    result, recs = select(tmp_path, inp, sc, top_k=2)
    assert lines_of(recs) == [1, 4] and result.counts.duplicates == 1
    # a duplicate tie goes to the earlier copy
    inp, sc = pool(tmp_path, data, [0.9, 0.7, 0.9, 0.8, 0.1])
    _, recs = select(tmp_path, inp, sc, top_k=1)
    assert lines_of(recs) == [1]


def test_heap_equals_brute_force_on_random_streams():
    rnd = random.Random(7)
    for trial in range(300):
        n, k = rnd.randint(1, 40), rnd.randint(1, 12)
        scores = [rnd.choice([0.1, 0.2, 0.3, 0.5, 0.8, rnd.random()]) for _ in range(n)]
        dups = [bytes([rnd.randint(0, 9)]) for _ in range(n)]
        heap = _TopK(k)
        for i, (s, d) in enumerate(zip(scores, dups)):
            heap.offer(_Pick(s, i, ("f", i + 1, None), d, None, None))  # type: ignore[arg-type]
        ranked = sorted(range(n), key=lambda i: (-scores[i], i))
        seen, expected = set(), []
        for i in ranked:  # brute force: best first, one per digest, first k
            if dups[i] not in seen:
                seen.add(dups[i])
                expected.append(i)
        assert [p.order for p in heap.picks()] == expected[:k], (trial, scores, dups, k)


# ---------------------------------------------------------------------------------------------- outputs

def test_pool_candidates_become_records_and_sft(tmp_path):
    inp = FIXTURES / "qwen25math_pool_sample.jsonl"
    raw = [json.loads(x) for x in inp.read_text().splitlines()]
    n = len(raw[0]["response"])
    recs = []
    for line, r in enumerate(raw, 1):
        for k in range(len(r["response"])):
            recs.append(score_record(inp, line, float(r["pred_score"][k][0]), candidate=k, model="toy"))
    sc = write_jsonl(tmp_path / "scores.jsonl", recs)
    out = tmp_path / "sel.jsonl"
    result = run_select([inp], out, ScoreSource(scores=[str(sc)]),
                        SelectOptions(top_k=1, per_problem=True, sft=tmp_path / "sft.jsonl", system="Be brief."))
    sel = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(sel) == 2 == result.counts.selected
    for rec in sel:
        src = raw[rec["fluxprm"]["line"] - 1]
        k = rec["fluxprm"]["candidate"]
        best = max(range(n), key=lambda j: (src["pred_score"][j][0], -j))
        assert k == best
        assert rec["response"] == src["response"][k] and rec["pred"] == src["pred"][k]
        assert rec["score"] == src["score"][k] and rec["pred_score"] == src["pred_score"][k]
        assert rec["question"] == src["question"] and rec["history"] == src["history"]  # not per candidate
    sft = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert [m["role"] for m in sft[0]["messages"]] == ["system", "user", "assistant"]
    assert sft[0]["messages"][0]["content"] == "Be brief."
    assert sft[0]["messages"][1]["content"] == raw[0]["question"]
    assert sft[0]["messages"][2]["content"] == sel[0]["response"].strip()
    # the --score-field source gives the same selection without a scores file
    result = run_select([inp], tmp_path / "f.jsonl", ScoreSource(score_field="pred_score"),
                        SelectOptions(top_k=1, per_problem=True))
    assert [json.loads(x)["response"] for x in (tmp_path / "f.jsonl").read_text().splitlines()] == \
        [r["response"] for r in sel]


def test_sft_wraps_thinking_as_the_source_did_and_renders_through_qwen_template(tmp_path):
    datasets = pytest.importorskip("datasets")
    from transformers import AutoTokenizer

    from builders import build_qwen25_tokenizer

    sky = [json.loads(x) for x in (FIXTURES / "skythought_amc23_sample.jsonl").read_text().splitlines()]
    sky_long = next(r for r in sky if "<|end_of_solution|>" in r["response"] and "<|end_of_thought|>" in r["response"])
    data = [
        {"problem": "What is 2+3?", "response": "<think>\nAdd 2 and 3.\n\n2 + 3 = 5.\n</think>\n\nThe sum is 5."},
        sky_long,
        {"problem": "What is 4+4?", "reasoning_content": "Four plus four.", "response": "8"},
        {"problem": "What is 1+1?", "response": "It is 2."},
    ]
    inp, sc = pool(tmp_path, data, [0.9, 0.8, 0.7, 0.6])
    sft_path = tmp_path / "sft.jsonl"
    run_select([inp], tmp_path / "sel.jsonl", ScoreSource(scores=[str(sc)]),
               SelectOptions(top_k=4, sft=sft_path, system="You are a careful mathematician."))
    convs = [json.loads(x)["messages"] for x in sft_path.read_text().splitlines()]
    r1, sky_t1, reasoning, plain = (c[-1]["content"] for c in convs)
    assert r1 == "<think>\nAdd 2 and 3.\n\n2 + 3 = 5.\n</think>\n\nThe sum is 5."
    trace = parse_record(sky_long)[0]
    assert sky_t1 == (f"<|begin_of_thought|>\n\n{trace.thinking}\n\n<|end_of_thought|>\n\n"
                      f"<|begin_of_solution|>\n\n{trace.response}\n\n<|end_of_solution|>")
    assert reasoning == "<think>\nFour plus four.\n</think>\n\n8" and plain == "It is 2."
    assert convs[1][1]["content"] == sky_long["question"]

    ds = datasets.load_dataset("json", data_files=str(sft_path), split="train")
    assert ds.num_rows == 4 and ds.column_names == ["messages"]
    tok = AutoTokenizer.from_pretrained(str(build_qwen25_tokenizer(None)))
    for row, conv in zip(ds, convs):
        text = tok.apply_chat_template(row["messages"], tokenize=False)
        assert "You are a careful mathematician." in text and conv[1]["content"] in text
        assert conv[2]["content"] in text  # thinking and response, in their markers
        assert text.count("<|im_start|>assistant") == 1
    assert trace.thinking in tok.apply_chat_template(ds[1]["messages"], tokenize=False)


def test_parquet_output_is_readable(tmp_path):
    pa_parquet = pytest.importorskip("pyarrow.parquet")
    data = [{"problem": "P", "response": "a", "gt": "1"}, {"problem": "P", "response": "b", "gt": 2},  # mixed gt
            {"problem": "P", "response": "c", "gt": "3"}]
    inp, sc = pool(tmp_path, data, [0.3, 0.9, 0.5])
    result, _ = select(tmp_path, inp, sc, name="sel.parquet", top_k=2, format="parquet")
    table = pa_parquet.read_table(tmp_path / "sel.parquet")
    rows_ = table.to_pylist()
    assert [r["response"] for r in rows_] == ["b", "c"]
    assert [r["fluxprm"]["rank"] for r in rows_] == [1, 2] and rows_[0]["fluxprm"]["score"] == 0.9
    assert [json.loads(r["gt"]) for r in rows_] == [2, "3"]  # a column Arrow cannot type is JSON text


def test_parquet_output_of_a_field_that_is_an_empty_object_is_json_text(tmp_path):
    """``{}`` in every selected record is a struct with no child, which Parquet cannot store: it was a pyarrow
    traceback and no output."""
    pa_parquet = pytest.importorskip("pyarrow.parquet")
    data = [{"problem": "P", "response": r, "meta": {}, "gt": g} for r, g in (("a", "1"), ("b", 2))]
    inp, sc = pool(tmp_path, data, [0.3, 0.9])
    select(tmp_path, inp, sc, name="sel.parquet", top_k=2, format="parquet")
    rows_ = pa_parquet.read_table(tmp_path / "sel.parquet").to_pylist()
    assert [r["response"] for r in rows_] == ["a", "b"] and [r["meta"] for r in rows_] == ["{}", "{}"]
    assert [json.loads(r["gt"]) for r in rows_] == ["1", 2] and [r["fluxprm"]["rank"] for r in rows_] == [2, 1]


# ---------------------------------------------------------------------------------------------- report, errors

def test_report_counts_correctness_and_histograms(tmp_path):
    data = [{"problem": "A", "response": f"a{i}", "correct": c, "model": m}
            for i, (c, m) in enumerate([(False, "m1"), (True, "m1"), (True, "m2"), (False, "m2")])]
    data += [{"problem": "B", "response": "b0", "correct": True, "model": "m1"},
             {"problem": "B", "response": "b1", "correct": False, "model": "m2"}]
    inp, sc = pool(tmp_path, data, [0.9, 0.8, 0.3, 0.1, 0.2, 0.7])
    report = tmp_path / "report"
    result, recs = select(tmp_path, inp, sc, top_k=2, report=report)
    assert lines_of(recs) == [1, 2]
    q = result.correctness
    assert q["known"] == 6 and q["pool"] == pytest.approx(3 / 6)
    assert q["selected"] == pytest.approx(1 / 2) and q["random_expected"] == pytest.approx(3 / 6)
    assert q["best_possible"] == 1.0
    data_json = json.loads((report / "report.json").read_text())
    assert data_json["counts"]["selected"] == 2 and data_json["counts"]["scored"] == 6
    m1 = data_json["by_model"]["m1"]
    assert (m1["scored"], m1["selected"], m1["selected_correct"]) == (3, 2, 1)
    assert m1["random_expected_selected"] == pytest.approx(2 * 3 / 6)
    assert m1["best_expected_selected"] == pytest.approx(2 * 2 / 3)  # 3 correct (2 from m1) fill 2 slots
    hist = data_json["histogram"]["by_model"]
    assert sum(hist["m1"]["selected"]) == 2 and sum(hist["m2"]["not selected"]) == 3
    for png in ("scores.png", "scores_by_model.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    # a pool of one model made a 3.4-inch figure whose title ran off both edges
    one = tmp_path / "one"
    one.mkdir()
    inp1, sc1 = pool(one, [dict(r, model="m1") for r in data], [0.9, 0.8, 0.3, 0.1, 0.2, 0.7])
    select(one, inp1, sc1, top_k=2, report=one / "report")
    assert Image.open(one / "report" / "scores_by_model.png").size[0] >= 6.5 * 110
    # per problem: the random baseline and the ceiling are per problem (A: 2 of 4 correct, B: 1 of 2)
    result, recs = select(tmp_path, inp, sc, top_k=1, per_problem=True)
    assert lines_of(recs) == [1, 6]  # A: 0.9 (wrong); B: 0.7 (wrong)
    q = result.correctness
    assert q["selected"] == 0.0 and q["random_expected"] == pytest.approx((2 / 4 + 1 / 2) / 2)
    assert q["best_possible"] == 1.0


def test_unknown_correctness_still_selects_and_says_so(tmp_path):
    inp, sc = pool(tmp_path, rows(3), [0.1, 0.3, 0.2])
    result, recs = select(tmp_path, inp, sc, top_k=1, report=tmp_path / "rep")
    assert lines_of(recs) == [2]
    assert result.correctness["known"] == 0 and "unknown" in result.correctness["note"]
    res = fluxprm("select", str(inp), "--scores", str(sc), "--top-k", "1", "-o", str(tmp_path / "cli.jsonl"))
    assert res.returncode == 0, res.stderr
    assert "correctness: unknown" in res.stderr


def test_bad_and_unscored_records_go_to_the_errors_file(tmp_path):
    data = rows(4)
    data[1] = '{"problem": "broken'
    inp, sc = pool(tmp_path, data, [0.5, None, None, 0.9])
    result, recs = select(tmp_path, inp, sc, top_k=5)
    assert lines_of(recs) == [1, 4]
    c = result.counts
    assert (c.records_in, c.traces, c.errors, c.unscored, c.scored) == (4, 3, 1, 1, 2)
    errs = [json.loads(x) for x in (tmp_path / "sel.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errs] == [2, 3] and "no score" in errs[1]["error"]
    assert result.errors == tmp_path / "sel.errors.jsonl"
    res = fluxprm("select", str(inp), "--scores", str(sc), "--top-k", "1", "-o", str(tmp_path / "f.jsonl"),
                  "--on-error", "fail")
    assert res.returncode == 1 and f"{inp}:2" in res.stderr
    res = fluxprm("select", str(inp), "--scores", str(sc), "--top-k", "1", "-o", str(inp))
    assert res.returncode == 2 and "input" in res.stderr and json.loads(inp.read_text().splitlines()[0])
    res = fluxprm("select", str(inp), "--scores", str(sc), "-o", str(tmp_path / "g.jsonl"))
    assert res.returncode == 2 and "--top-k or --top-fraction" in res.stderr
    res = fluxprm("select", str(inp), "--scores", str(sc), "--score-field", "x", "--top-k", "1", "-o",
                  str(tmp_path / "g.jsonl"))
    assert res.returncode == 2 and "one source of scores" in res.stderr


def test_an_input_spelled_otherwise_joins_but_another_file_gets_a_hint(tmp_path, monkeypatch):
    inp, sc = pool(tmp_path, rows(2), [0.1, 0.3])  # the scores name the input by its absolute path
    monkeypatch.chdir(tmp_path)
    result, recs = select(tmp_path, Path("pool.jsonl"), sc, top_k=1)  # relative: the same file
    assert len(recs) == 1 and recs[0]["fluxprm"]["score"] == 0.3 and result.counts.unscored == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "pool.jsonl").write_bytes(inp.read_bytes())  # the same records in another file: not what was scored
    monkeypatch.chdir(copy)  # "pool.jsonl" now names the copy (a relative path must not be resolved from elsewhere)
    result, recs = select(tmp_path, Path("pool.jsonl"), sc, name="sel2.jsonl", top_k=1)
    assert recs == [] and result.counts.unscored == 2
    assert f"scored '{inp}', another file than 'pool.jsonl' ({copy / 'pool.jsonl'})" in result.error_causes[0].hint
    relative = tmp_path / "relative.scores.jsonl"  # `fluxprm score pool.jsonl` run inside copy/ ...
    relative.write_text(sc.read_text().replace(json.dumps(str(inp)), json.dumps("pool.jsonl")))
    monkeypatch.chdir(tmp_path)  # ... and `fluxprm select copy/pool.jsonl` run above it
    result, recs = select(tmp_path, Path("copy/pool.jsonl"), relative, name="sel3.jsonl", top_k=1)
    assert recs == [] and result.counts.unscored == 2
    assert (f"names its input 'pool.jsonl', which from this folder is {tmp_path / 'pool.jsonl'}, not "
            "'copy/pool.jsonl'" in result.error_causes[0].hint and "run this command from that folder"
            in result.error_causes[0].hint)


def test_select_imports_no_torch_with_a_scores_file(tmp_path):
    inp, sc = pool(tmp_path, rows(3), [0.1, 0.3, 0.2])
    code = ("import sys\n"
            "from fluxprm.select import run_select, SelectOptions\n"
            "from fluxprm.scored import ScoreSource\n"
            "import fluxprm.cli.select\n"
            f"r = run_select([{str(inp)!r}], {str(tmp_path / 'o.jsonl')!r}, ScoreSource(scores=[{str(sc)!r}]), "
            f"SelectOptions(top_k=1, report=__import__('pathlib').Path({str(tmp_path / 'rep')!r})))\n"
            "assert r.counts.selected == 1\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# ---------------------------------------------------------------------------------------------- CLI end to end

def test_cli_end_to_end_scoring_with_a_model_and_from_its_scores(tmp_path):
    from builders import build_qwen_prm

    model = str(build_qwen_prm(None))
    inp = FIXTURES / "skythought_amc23_sample.jsonl"
    a = tmp_path / "a"
    res = fluxprm("select", str(inp), "-m", model, "--dtype", "float32", "--threads", "1", "--top-fraction", "0.5",
                  "-o", str(a / "sel.jsonl"), "--sft", str(a / "sft.jsonl"), "--report", str(a / "report"))
    assert res.returncode == 0, res.stderr
    scores = [json.loads(x) for x in (a / "sel.scores.jsonl").read_text().splitlines()]
    assert len(scores) == 6  # the 7th record has an empty response
    sel = [json.loads(x) for x in (a / "sel.jsonl").read_text().splitlines()]
    assert len(sel) == math.ceil(0.5 * 6) == 3
    best = sorted(scores, key=lambda s: (-s["score"], s["line"]))[:3]
    assert sorted(r["fluxprm"]["line"] for r in sel) == sorted(s["line"] for s in best)
    assert [r["fluxprm"]["line"] for r in sel] == sorted(r["fluxprm"]["line"] for r in sel)
    raw = inp.read_text().splitlines()
    for rec in sel:
        original = json.loads(raw[rec["fluxprm"]["line"] - 1])
        assert {k: v for k, v in rec.items() if k != "fluxprm"} == original
    errs = [json.loads(x) for x in (a / "sel.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errs] == [7]
    report = json.loads((a / "report" / "report.json").read_text())
    assert report["counts"]["records_in"] == 7 and report["correctness"]["known"] == 6
    assert len((a / "sft.jsonl").read_text().splitlines()) == 3
    assert "selected" in res.stderr and "random" in res.stderr

    b = tmp_path / "b"
    res = fluxprm("select", str(inp), "--scores", str(a / "sel.scores.jsonl"), "--top-fraction", "0.5",
                  "-o", str(b / "sel.jsonl"), "--sft", str(b / "sft.jsonl"))
    assert res.returncode == 0, res.stderr
    assert (b / "sel.jsonl").read_bytes() == (a / "sel.jsonl").read_bytes()
    assert (b / "sft.jsonl").read_bytes() == (a / "sft.jsonl").read_bytes()


# ---------------------------------------------------------------------------------------------- memory

_MEASURE = r"""
import sys
from fluxprm.scored import ScoreSource, scored_traces
from fluxprm.select import SelectOptions, run_select

def peak_kb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))

pool, scores, out, mode = sys.argv[1:5]
before = peak_kb()
if mode == "select":
    result = run_select([pool], out, ScoreSource(scores=[scores]), SelectOptions(top_k=100))
    assert result.counts.selected == 100 and result.counts.scored == 100_000, result.counts
    held = None
else:  # what a selection that held the pool would hold: every trace with its score
    held = list(scored_traces([pool], ScoreSource(scores=[scores])))
    assert len(held) == 100_000
print(peak_kb() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux) to read peak RSS")
def test_100k_pool_selects_with_memory_bounded_by_k(tmp_path):
    rnd = random.Random(0)
    pool_path, scores_path = tmp_path / "pool.jsonl", tmp_path / "scores.jsonl"
    with open(pool_path, "w") as f, open(scores_path, "w") as g:
        for i in range(100_000):
            f.write(json.dumps({"idx": i // 8, "question": f"What is {i // 8} + 1?", "response": f"It is {i}.",
                                "correct": i % 3 != 0}) + "\n")
            s = rnd.random()
            g.write(json.dumps(score_record(pool_path, i + 1, s)) + "\n")
    script = tmp_path / "measure.py"
    script.write_text(_MEASURE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def growth(mode: str) -> int:
        done = subprocess.run([sys.executable, str(script), str(pool_path), str(scores_path),
                               str(tmp_path / "out.jsonl"), mode], capture_output=True, text=True, timeout=900,
                              env=env)
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip().splitlines()[-1])

    selecting, holding = growth("select"), growth("hold")
    assert holding > 50_000, holding  # the pool in memory: tens of megabytes (KB here)
    assert selecting < holding / 4, (selecting, holding)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 100


def test_missing_scores_file_is_named_by_its_option(tmp_path):
    """A missing --scores file is not called an input file; the message matches `fluxprm eval`'s."""
    inp = write_jsonl(tmp_path / "pool.jsonl", rows(2))
    res = fluxprm("select", str(inp), "--scores", "nonexist.jsonl", "--top-k", "1", "-o", str(tmp_path / "s.jsonl"))
    assert res.returncode == 2 and res.stderr.strip() == "error: --scores nonexist.jsonl: no such file"
    with pytest.raises(IsADirectoryError, match=r"^--scores .* is a directory; give the scores file$"):
        run_select([str(inp)], tmp_path / "s.jsonl", ScoreSource(scores=[str(tmp_path)]), SelectOptions(top_k=1))
