"""fluxprm bon: every rule against hand-computed values, both pool layouts, the exact Qwen2.5-Math reproduction,
bad input, and --generate against a real llama.cpp server."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fluxprm.bon import BonOptions, format_table, group_problems, n_values, run_bon
from fluxprm.cli import app
from fluxprm.grading import Grader
from test_llm import API_KEY, MODEL, llama_server  # noqa: F401  (the fixture)

FIXTURES = Path(__file__).parent / "fixtures" / "bon"
COMPACT_POOL = FIXTURES / "qwen25math_math_cot_100_x8_compact.jsonl"
SHARED_POOLS = Path(__file__).resolve().parents[2] / "shared" / "data" / "bon_pools"
SHARED_POOL = SHARED_POOLS / "qwen25math_math_cot_100_x8.jsonl"


@pytest.fixture(scope="module")
def grader():
    g = Grader(max_workers=2)
    yield g
    g.shutdown()


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def metric(rows: list[dict], n: int, rule: str) -> dict:
    [row] = [r for r in rows if r["n"] == n and r["rule"] == rule]
    return row


# Three problems x three candidates, worked out by hand in the comments of test_rules_by_hand.
# (problem, gold, [(score, answer, correct), ...]); problem "c" shares idx 0 with "a" in another dataset.
PROBLEMS = [
    ("d", 0, "What is 2 + 2?", "4", [(0.9, "4", True), (0.2, "5", False), (0.3, "5", False)]),
    ("d", 1, "What is 3 - 2?", "1", [(0.1, "1", True), (0.8, "2", False), (0.2, "1.0", True)]),
    ("e", 0, "What is 7 * 1?", "7", [(0.5, "7", True), (0.5, "8", False), (0.4, "8", False)]),
]


def rows_layout(path: Path) -> Path:
    """One record per candidate, Sky-T1 style: idx + dataset name the problem; rows interleaved."""
    records = []
    for k in range(3):
        for dataset, idx, problem, gold, cands in PROBLEMS:
            score, answer, correct = cands[k]
            records.append({"dataset": dataset, "idx": idx, "question": problem, "gt": gold, "rs": score,
                            "pred": answer, "correct": correct, "response": f"So the answer is \\boxed{{{answer}}}."})
    return write_jsonl(path, records)


def list_layout(path: Path) -> Path:
    """One record per problem with a list of responses (Qwen2.5-Math pools)."""
    return write_jsonl(path, [{"id": f"{dataset}-{idx}", "problem": problem, "gold": gold,
                               "response": [f"So the answer is \\boxed{{{a}}}." for _, a, _ in cands],
                               "pred": [a for _, a, _ in cands], "correct": [c for _, _, c in cands],
                               "rs": [s for s, _, _ in cands]}
                              for dataset, idx, problem, gold, cands in PROBLEMS])


def test_import_loads_no_torch() -> None:
    code = ("import sys, fluxprm.bon, fluxprm.cli.bon\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_n_values() -> None:
    assert n_values(8) == [1, 2, 4, 8]
    assert n_values(15) == [1, 2, 4, 8, 15]
    assert n_values(5) == [1, 2, 4, 5]
    assert n_values(1) == [1]


@pytest.mark.parametrize("layout", [rows_layout, list_layout])
def test_rules_by_hand(layout, tmp_path, grader) -> None:
    pool = layout(tmp_path / "pool.jsonl")
    result = run_bon([pool], tmp_path / "out", BonOptions(score_field="rs"), grader=grader)
    rows = result.rows
    assert (result.problems, result.candidates, result.evaluated) == (3, 9, 3)
    assert {r["rule"] for r in rows} == {"pass@1", "argmax", "majority", "weighted_vote", "oracle"}
    assert sorted({r["n"] for r in rows}) == [1, 2, 3] and all(r["exact"] for r in rows)
    acc = {(r["n"], r["rule"]): r["accuracy"] for r in rows}
    # pass@1: mean correctness 1/3, 2/3, 1/3 -> 4/9 at every N; its std over single draws sqrt(Σ p(1-p)) / 3
    for n in (1, 2, 3):
        assert acc[n, "pass@1"] == round(4 / 9, 6)
        assert metric(rows, n, "pass@1")["std"] == round(math.sqrt(3 * 2 / 9) / 3, 6)
    # N=1: every rule is the one candidate shown
    assert all(acc[1, rule] == round(4 / 9, 6) for rule in ("argmax", "majority", "weighted_vote", "oracle"))
    # N=3 (all): argmax a: 0.9 right; b: 0.8 wrong; c: 0.5/0.5 tie right/wrong -> 1/2. (1 + 0 + .5) / 3
    assert acc[3, "argmax"] == 0.5
    # majority a: "5" x2 wrong; b: "1" and "1.0" are one answer (math-verify) x2 right; c: "8" x2 wrong
    assert acc[3, "majority"] == round(1 / 3, 6)
    # weighted a: "4" .9 > "5" .5 right; b: "2" .8 > "1" .3 wrong; c: "8" .9 > "7" .5 wrong
    assert acc[3, "weighted_vote"] == round(1 / 3, 6)
    assert acc[3, "oracle"] == 1.0 and metric(rows, 3, "argmax")["std"] == 0.0
    # N=2, all three pairs per problem:
    # argmax a: {.9,.2} 1 {.9,.3} 1 {.2,.3} 0 -> 2/3; b: {.1,.8} 0 {.1,.2} 1 {.8,.2} 0 -> 1/3;
    #        c: {.5r,.5w} 1/2 {.5r,.4} 1 {.5w,.4} 0 -> 1/2; mean 1/2
    assert acc[2, "argmax"] == 0.5
    # majority a: tie 1/2, tie 1/2, "5" 0 -> 1/3; b: tie 1/2, "1" 1, tie 1/2 -> 2/3; c: 1/2, 1/2, 0 -> 1/3
    assert acc[2, "majority"] == round(4 / 9, 6)
    # weighted a: 1, 1, 0 -> 2/3; b: 0, 1, 0 -> 1/3; c: .5 vs .5 tie 1/2, .5 > .4 1, "8" 0 -> 1/2
    assert acc[2, "weighted_vote"] == 0.5
    # oracle a: 2/3; b: every pair has a right one -> 1; c: 2/3
    assert acc[2, "oracle"] == round(7 / 9, 6)
    # argmax std at N=2: per problem the variance of its credits over the three pairs
    variances = [2 / 9, 2 / 9, (0 + 0.25 + 0.25) / 3]
    assert metric(rows, 2, "argmax")["std"] == round(math.sqrt(sum(variances)) / 3, 6)

    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == rows and set(saved[0]) == {"n", "rule", "accuracy", "std", "exact"}
    assert (tmp_path / "out" / "accuracy_vs_n.png").stat().st_size > 10_000
    assert not (tmp_path / "out" / "errors.jsonl").exists()
    picks = [json.loads(x) for x in (tmp_path / "out" / "picks.jsonl").read_text().splitlines()]
    assert [p["answer"] for p in picks] == ["4", "2", "7"]   # c: the 0.5 tie goes to the earliest candidate
    assert [p["problem"] for p in picks] == [p[2] for p in PROBLEMS]
    assert picks[0]["response"] == "So the answer is \\boxed{4}." and picks[0]["correct"] is True
    assert [p["majority_answer"] for p in picks] == ["5", "1", "8"]
    assert [p["weighted_vote_answer"] for p in picks] == ["4", "2", "8"]
    assert [p["problem_id"] for p in picks] == (["d/0", "d/1", "e/0"] if layout is rows_layout
                                                 else ["d-0", "d-1", "e-0"])
    table = format_table(rows)
    assert "argmax" in table and "N=3" in table and "0.500 ±0.000" in table


def test_step_reward_rules_from_a_scores_file(tmp_path, grader) -> None:
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"id": "p", "problem": "Compute 6 * 7.", "gold": "42",
                                                  "response": ["\\boxed{41}", "\\boxed{42}", "\\boxed{40}"]}])
    # min: .5 / .4 / .2 -> c0 (wrong); last: .5 / .4 / .9 -> c2 (wrong); mean .5 / .675 / .65 -> c1 (right);
    # prod .25 / .38 / .36 -> c1 (right); score (the model's) favours c0 (wrong)
    steps = [[0.5, 0.5], [0.95, 0.4], [0.4, 0.9]]
    scores = write_jsonl(tmp_path / "scores.jsonl", [
        {"id": f"p#{k}", "score": [0.9, 0.1, 0.2][k], "step_rewards": s, "source": str(pool), "line": 1,
         "candidate": k} for k, s in enumerate(steps)])
    result = run_bon([pool], tmp_path / "out", BonOptions(scores=[str(scores)]), grader=grader)
    acc = {r["rule"]: r["accuracy"] for r in result.rows if r["n"] == 3}
    assert acc == {"pass@1": round(1 / 3, 6), "argmax": 0.0, "min": 0.0, "last": 0.0, "mean": 1.0, "prod": 1.0,
                   "majority": round(1 / 3, 6), "weighted_vote": 0.0, "oracle": 1.0}
    # correctness came from grading the extracted answers (the pool has no flags)
    assert result.summary["correctness"]["from_grading"] == 3 and result.summary["correctness"]["compared"] == 0


def test_constant_scores_are_exactly_pass_at_1(tmp_path, grader) -> None:
    pool = write_jsonl(tmp_path / "pool.jsonl", [
        {"id": i, "problem": f"Problem {i}", "gold": "1", "response": ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}",
                                                                     "\\boxed{1}"], "s": [0.5] * 4}
        for i in range(3)])
    rows = run_bon([pool], tmp_path / "out", BonOptions(score_field="s"), grader=grader).rows
    for n in (1, 2, 4):
        assert metric(rows, n, "argmax")["accuracy"] == metric(rows, n, "pass@1")["accuracy"] == 0.5


def test_qwen25math_pool_exact_reproduction(grader, tmp_path) -> None:
    """The issue's model-free check on the whole pool (responses shortened, see fixtures/bon/NOTICE.md)."""
    result = run_bon([COMPACT_POOL], tmp_path / "out", BonOptions(score_field="pred_score"), grader=grader)
    assert (result.problems, result.candidates) == (100, 800)
    assert metric(result.rows, 8, "argmax")["accuracy"] == 0.94
    assert metric(result.rows, 8, "pass@1")["accuracy"] == 0.91
    assert metric(result.rows, 8, "oracle")["accuracy"] == 0.96
    assert all(r["exact"] for r in result.rows)   # C(8, n) <= 1000 subsets: every value is exact
    grading = result.summary["correctness"]
    assert (grading["compared"], grading["disagreements"]) == (800, 1)   # math-verify vs Qwen's grader
    assert grading["examples"][0]["answer"] == "10000" and grading["examples"][0]["gold"] == "10{,}000"
    assert result.summary["vote_weight"] == "sigmoid"   # Qwen2.5-Math-RM rewards are logits, some negative
    graded = run_bon([COMPACT_POOL], tmp_path / "graded", BonOptions(score_field="pred_score", grade=True),
                     grader=grader)
    assert metric(graded.rows, 8, "argmax")["accuracy"] == 0.95   # that one candidate moves argmax@8


@pytest.mark.skipif(not SHARED_POOL.exists(), reason=f"{SHARED_POOL} is not on this machine")
def test_qwen25math_pool_exact_reproduction_on_the_original_file(tmp_path) -> None:
    compact = [json.loads(x) for x in COMPACT_POOL.read_text().splitlines()]
    original = [json.loads(x) for x in SHARED_POOL.read_text().splitlines()]
    keep = ("idx", "question", "gt", "pred", "score", "pred_score")
    assert compact == [{**{k: r[k] for k in keep}, "response": [t[-160:] for t in r["response"]]} for r in original]
    done = CliRunner().invoke(app, ["bon", str(SHARED_POOL), "--score-field", "pred_score", "-o", str(tmp_path)])
    assert done.exit_code == 0, done.output
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert metric(rows, 8, "argmax")["accuracy"] == 0.94 and metric(rows, 8, "pass@1")["accuracy"] == 0.91
    assert "disagree on 1 of 800 candidates" in done.output


def test_full_agreement_with_the_pools_flags_is_no_warning(tmp_path) -> None:
    """`eval bon` printed "warning: math-verify and the pool's correctness flags disagree on 0 of 160 candidates" for
    a new user's first run: agreement is now a plain line of `fluxprm bon`, not a note (eval shows notes as
    warnings), and summary.json records the check either way."""
    pool = write_jsonl(tmp_path / "pool.jsonl", [
        {"id": i, "problem": f"Problem {i}", "gold": "1", "response": ["\\boxed{1}", "\\boxed{2}"],
         "correct": [True, False], "s": [0.9, 0.1]} for i in range(3)])
    done = CliRunner().invoke(app, ["bon", str(pool), "--score-field", "s", "-o", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert "math-verify agrees with the pool's correctness flags on all 6 candidates" in done.output
    assert "disagree" not in done.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["correctness"]
    assert (summary["compared"], summary["disagreements"]) == (6, 0)

    from fluxprm.eval import run_eval
    from fluxprm.eval.sources import sources_from

    notes = run_eval("bon", [str(pool)], sources_from(None, None, "s"), tmp_path / "eval").output.metrics["notes"]
    assert not any("math-verify" in n for n in notes), notes


def test_a_pool_without_gold_picks_and_says_so(tmp_path, grader) -> None:
    pool = write_jsonl(tmp_path / "pool.jsonl", [
        {"id": "q", "problem": "Name a prime.", "response": ["\\boxed{4}", "\\boxed{7}", "\\boxed{7.0}"],
         "s": [0.2, 0.9, 0.1]}])
    result = run_bon([pool], tmp_path / "out", BonOptions(score_field="s"), grader=grader)
    assert result.rows == [] and result.evaluated == 0
    assert any("nothing evaluated" in note for note in result.notes)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == []
    assert not (tmp_path / "out" / "accuracy_vs_n.png").exists()
    [pick] = [json.loads(x) for x in (tmp_path / "out" / "picks.jsonl").read_text().splitlines()]
    assert pick["candidate"] == 1 and pick["answer"] == "7" and pick["correct"] is None
    assert pick["majority_answer"] == "7"   # "7" and "7.0": one answer
    done = CliRunner().invoke(app, ["bon", str(pool), "--score-field", "s", "-o", str(tmp_path / "cli")])
    assert done.exit_code == 0 and "nothing evaluated" in done.output


def test_bad_records_go_to_the_errors_file_with_file_and_line(tmp_path, grader) -> None:
    pool = write_jsonl(tmp_path / "pool.jsonl", [
        {"id": "ok", "problem": "What is 1 + 1?", "gold": "2", "response": ["\\boxed{2}", "\\boxed{3}"],
         "s": [0.9, 0.1]},
        {"id": "bad", "problem": "What is 2 + 2?", "gold": "4", "response": ["\\boxed{4}", 4], "s": [0.9, 0.1]},
        {"id": "worse", "problem": "What is 3 + 3?", "gold": "6", "response": {"text": "6"}},
    ])
    result = run_bon([pool], tmp_path / "out", BonOptions(score_field="s"), grader=grader)
    assert result.problems == 1 and metric(result.rows, 2, "argmax")["accuracy"] == 1.0
    errors = [json.loads(x) for x in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [(e["source"], e["line"], e["id"]) for e in errors] == [(str(pool), 2, "bad"), (str(pool), 3, "worse")]
    assert "list of strings" in errors[0]["error"] and "index 1" in errors[0]["error"]
    done = CliRunner().invoke(app, ["bon", str(pool), "--score-field", "s", "-o", str(tmp_path / "cli")])
    assert done.exit_code == 0 and "rejected: 2 records" in done.output and f"{pool}:2" in done.output


def test_rejected_candidates_stay_in_their_pool_unscored(tmp_path, grader) -> None:
    """An empty response (a base model's) is a wrong candidate: dropping it would flatter pass@1."""
    rows = [{"dataset": "t", "idx": 0, "question": "What is 5 - 3?", "gt": "2", "pred": p, "correct": c, "rs": s,
             "response": r} for p, c, s, r in [("2", True, 0.3, "\\boxed{2}"), ("3", False, 0.9, "\\boxed{3}"),
                                               ("", False, 0.99, "")]]
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    result = run_bon([pool], tmp_path / "out", BonOptions(score_field="rs"), grader=grader)
    assert (result.problems, result.candidates, len(result.rejected)) == (1, 3, 1)
    assert metric(result.rows, 3, "pass@1")["accuracy"] == round(1 / 3, 6)
    assert metric(result.rows, 3, "argmax")["accuracy"] == 0.0   # 0.9 wrong; the empty one is never picked
    assert any("stays in its problem's pool" in note for note in result.notes)


def test_unique_row_ids_fall_back_to_the_problem_text(tmp_path, grader) -> None:
    pool = write_jsonl(tmp_path / "pool.jsonl", [
        {"id": f"r{i}", "problem": p, "gold": "1", "response": "\\boxed{1}", "s": 0.5}
        for i, p in enumerate(["A problem.", "A  problem.", "Another problem."])])
    result = run_bon([pool], tmp_path / "out", BonOptions(score_field="s"), grader=grader)
    assert result.problems == 2 and result.summary["grouping"].startswith("problem text")
    problems, _ = group_problems([], "auto")
    assert problems == []


def test_vote_weight_rules(tmp_path, grader) -> None:
    pool = list_layout(tmp_path / "pool.jsonl")
    negative = write_jsonl(tmp_path / "neg.jsonl", [
        {**json.loads(line), "rs": [s - 1 for s in json.loads(line)["rs"]]}
        for line in pool.read_text().splitlines()])
    plain = run_bon([pool], tmp_path / "a", BonOptions(score_field="rs"), grader=grader)
    assert plain.summary["vote_weight"] == "score"
    result = run_bon([negative], tmp_path / "b", BonOptions(score_field="rs"), grader=grader)
    assert result.summary["vote_weight"] == "sigmoid"
    with pytest.raises(ValueError, match="needs scores >= 0"):
        run_bon([negative], tmp_path / "c", BonOptions(score_field="rs", vote_weight="score"), grader=grader)


def test_cli_usage_errors(tmp_path) -> None:
    pool = list_layout(tmp_path / "pool.jsonl")
    runner = CliRunner()
    cases = [
        (["--generate"], "--generate needs --policy"),
        (["-m", "fluxprm-mini", "--scores", str(pool)], "give one source of scores"),
        (["--score-field", "rs", "--group-by", "idx"], "idx"),
        (["--score-field", "rs", "--samples", "0"], "must be >= 1"),
        (["--dtype", "float64"], "unknown dtype 'float64'"),  # --dtype reaches the model that scores
    ]
    for extra, message in cases:
        done = runner.invoke(app, ["bon", str(pool), "-o", str(tmp_path / "o"), *extra])
        assert done.exit_code == 2 and message in done.output, (extra, done.output)
    missing = runner.invoke(app, ["bon", str(tmp_path / "nope.jsonl"), "--score-field", "rs",
                                  "-o", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "nope.jsonl" in missing.output
    as_file = runner.invoke(app, ["bon", str(pool), "--score-field", "rs", "-o", str(pool)])
    assert as_file.exit_code == 2 and "is a file" in as_file.output
    unscored = runner.invoke(app, ["bon", str(pool), "--score-field", "nothing", "-o", str(tmp_path / "o")])
    assert unscored.exit_code == 1 and "no record has a number in field 'nothing'" in unscored.output
    garbage = write_jsonl(tmp_path / "garbage.jsonl", [{"id": 1, "problem": "x", "response": 5}])
    nothing = runner.invoke(app, ["bon", str(garbage), "--score-field", "rs", "-o", str(tmp_path / "g")])
    assert nothing.exit_code == 1 and "no candidate could be read" in nothing.output


def test_generate_against_a_real_llama_cpp_server(llama_server, tmp_path, monkeypatch) -> None:  # noqa: F811
    """Candidates sampled (seeded) from SmolLM2 behind llama.cpp's OpenAI-compatible server, scored by
    fluxprm-mini, evaluated against the gold answers."""
    monkeypatch.setenv("FLUXPRM_LLM_API_KEY", API_KEY)
    problems = write_jsonl(tmp_path / "problems.jsonl", [
        {"id": "add", "problem": "What is 2 + 3?", "answer": "5"},
        {"id": "mul", "problem": "What is 4 times 2?", "answer": "8"},
        {"id": "add-again", "problem": "What is  2 + 3?", "answer": "5"},   # the same problem: asked once
    ])
    options = BonOptions(generate=True, policy=f"{llama_server}#{MODEL}", n=2, max_tokens=24, temperature=1.0,
                         threads=1, cache=str(tmp_path / "llm.sqlite"))
    result = run_bon([problems], tmp_path / "out", options)
    pool = [json.loads(x) for x in (tmp_path / "out" / "candidates.jsonl").read_text().splitlines()]
    assert [(p["id"], p["gold"], len(p["response"])) for p in pool] == [("add", "5", 2), ("mul", "8", 2)]
    assert pool[0]["policy"] == MODEL and pool[0]["seed"] == 0
    assert len(set(pool[0]["response"])) == 2   # seeds 0 and 1: two different samples
    assert result.problems == 2 and result.candidates == 4
    scores = [json.loads(x) for x in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert len(scores) + len(result.rejected) == 4 and all(s["model"] == "fluxprm-mini" for s in scores)
    assert {r["rule"] for r in result.rows} >= {"argmax", "mean", "min", "weighted_vote", "majority", "oracle"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in result.rows) and sorted({r["n"] for r in result.rows}) == [1, 2]
    picks = [json.loads(x) for x in (tmp_path / "out" / "picks.jsonl").read_text().splitlines()]
    assert [p["problem_id"] for p in picks] == ["add", "mul"] and all(p["response"] is not None for p in picks)
    # a rerun is answered by the LLM cache: the same candidates, byte for byte
    again = run_bon([problems], tmp_path / "again", options)
    sampled = (tmp_path / "out" / "candidates.jsonl").read_bytes()
    assert (tmp_path / "again" / "candidates.jsonl").read_bytes() == sampled
    assert again.rows == result.rows


def test_help_at_80_columns_shows_every_option_whole() -> None:
    from fluxprm.cli.common import FIELD_OVERRIDES
    from fluxprm.cli.options import Expand, option_names
    from fluxprm.traces import FieldMap
    from test_cli_help import appears_whole, assert_readable, command_flags, help_text

    text = help_text("bon")
    assert_readable(text)
    generated = option_names(BonOptions, Expand(exclude=("model",))) + option_names(FieldMap, FIELD_OVERRIDES)
    flags = command_flags("bon")
    assert set(generated) <= set(flags) and "--model" in flags and "--score-field" in flags
    assert [f for f in flags if not appears_whole(f, text)] == []


def test_missing_scores_file_is_named_by_its_option(tmp_path) -> None:
    """One line naming --scores, worded as `fluxprm eval` words it, not a raw ``[Errno 2]``."""
    inp = rows_layout(tmp_path / "pool.jsonl")
    missing = tmp_path / "nonexist.jsonl"
    res = CliRunner().invoke(app, ["bon", str(inp), "--scores", str(missing), "-o", str(tmp_path / "b")])
    assert res.exit_code == 2 and res.output.strip() == f"error: --scores {missing}: no such file"
    res = CliRunner().invoke(app, ["bon", str(inp), "--scores", str(tmp_path), "-o", str(tmp_path / "b")])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: --scores {tmp_path} is a directory; give the scores file"


def test_a_correctness_field_that_is_no_flag_is_named_in_a_note(tmp_path: Path) -> None:
    """A pool whose ``correct`` held "maybe" evaluated nothing and said only "no gold answers or correctness flags"."""
    rows = [{"id": "a", "problem": "What is 1+1?", "response": "It is 2. \\boxed{2}", "correct": "maybe", "s": 0.5},
            {"id": "b", "problem": "What is 1+1?", "response": "It is 3. \\boxed{3}", "correct": "No", "s": 0.4}]
    src = tmp_path / "pool.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_bon([str(src)], tmp_path / "out", BonOptions(score_field="s"))
    assert any(n.startswith("1 candidate has a correctness field that is not true/false, 1/0 or yes/no "
                            "(e.g. 'maybe')") for n in result.notes), result.notes
