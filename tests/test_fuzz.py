"""Property-based fuzzing of fluxprm's reliability promise (README "Reliability: what is guaranteed"):
every input record ends in the output or in the errors file, in input order, and no input ever ends in a
traceback.

Inputs come from ``fuzz_corpus`` (truncated JSON, random bytes, invalid UTF-8, BOMs, CRLF, deep nesting,
megabyte lines, NaN/Infinity, lone surrogate escapes, wrong-typed values for every known field, huge
integer ids, empty files, gzip of those, JSON arrays, Parquet with mixed columns, Best-of-N pools), with
the records a run must account for computed from the documented reading rules, never by fluxprm itself.

Cheap properties (readers, parsers, the scorer in process) run many hypothesis examples; the command-line
properties run a few examples, each a real ``python -m fluxprm`` subprocess over a batch of 20-40 generated
files, so model loads stay few. Every ``@settings`` is derandomized: the same examples run every time.
Subprocess examples skip shrinking (each shrink step would be a model load); a failure message lists the
batch's files and what went wrong instead.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from builders import build_qwen_prm
from fuzz_corpus import (BAD_KINDS, FILE_KINDS, GOOD_KINDS, KNOWN_FIELDS, RECORD_KINDS, FuzzFile, check_run,
                         jsonl_keys, write_batch)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

# In-process properties: many examples, shrinking on (a failure shrinks to a small input).
FAST = settings(derandomize=True, database=None, deadline=None, max_examples=80,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
# Command-line properties: each example is one subprocess over a whole batch of files; no shrinking.
CLI = settings(FAST, max_examples=1, phases=(Phase.explicit, Phase.generate))


def fluxprm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fluxprm", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(build_qwen_prm(None))


def _describe(files: list[FuzzFile]) -> str:
    return "; ".join(f"{Path(f.path).name} ({len(f.keys)} records)" for f in files)


# ------------------------------------------------------------------------------------------------ strategies

_LINE_SEPARATORS = st.sampled_from([b"\n", b"\r\n"])
_json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10 ** 19, max_value=10 ** 60)
                 | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
                 | st.sampled_from(["\ud800", "<think>a</think>b", "", " ", "\u0000", "Step 1: a ки"]))
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(st.sampled_from(KNOWN_FIELDS) | st.text(max_size=6), inner,
                                              max_size=4), max_leaves=12)
_records = st.dictionaries(st.sampled_from(KNOWN_FIELDS), _json_values, max_size=7)


def _json_line(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()


_lines = st.one_of(
    _records.map(_json_line),
    _json_values.map(_json_line),
    st.binary(max_size=120).map(lambda b: b.replace(b"\n", b" ")),
    st.tuples(_records.map(_json_line), st.integers(1, 200)).map(lambda t: t[0][: max(1, min(t[1], len(t[0]) - 1))]),
    st.sampled_from([b"", b"   ", b"\r", b"\t \r", b"\xef\xbb\xbf", b"[" * 5000, b'{"a":' * 2000, b"\x00"]),
)

# Plans for whole batches: a list of (file kind, record kinds) — see fuzz_corpus.make_file.
_plans = st.lists(st.tuples(st.sampled_from(FILE_KINDS), st.lists(st.sampled_from(RECORD_KINDS), max_size=10)),
                  min_size=20, max_size=32)
_seeds = st.integers(0, 2 ** 32 - 1)


def _every_kind_plan(record_kinds: tuple[str, ...] = RECORD_KINDS) -> list[tuple[str, list[str]]]:
    """One file of every kind; every record kind inside a plain JSONL file and spread over the others."""
    kinds = list(record_kinds)
    plan = [("jsonl", kinds)]
    for n, file_kind in enumerate(FILE_KINDS):
        plan.append((file_kind, [kinds[(n * 3 + k) % len(kinds)] for k in range(4)]))
    return plan


# ------------------------------------------------------------------------------------------------ readers, in process


@FAST
@given(lines=st.lists(_lines, max_size=14), sep=_LINE_SEPARATORS, bom=st.booleans(), gz=st.booleans(),
       final_newline=st.booleans())
def test_jsonl_reader_reports_every_nonblank_line_in_order(tmp_path, lines, sep, bom, gz, final_newline):
    """Whatever the bytes, every non-blank line comes out as a trace or a BadRecord naming it, in order."""
    from fluxprm.traces import iter_traces

    data = (b"\xef\xbb\xbf" if bom else b"") + sep.join(lines) + (sep if final_newline and lines else b"")
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        path = Path(folder) / ("in.jsonl.gz" if gz else "in.jsonl")
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        seen = [(item.source, item.line) for item in iter_traces([str(path)])]
    assert {line for _, line in seen} == set(jsonl_keys(data))
    assert all(source == str(path) for source, _ in seen)
    assert [line for _, line in seen] == sorted(line for _, line in seen)


@FAST
@given(plan=st.lists(st.tuples(st.sampled_from(FILE_KINDS), st.lists(st.sampled_from(RECORD_KINDS), max_size=8)),
                     min_size=1, max_size=6), seed=_seeds)
@example(plan=_every_kind_plan(), seed=0)
def test_every_file_kind_yields_exactly_its_records(tmp_path, plan, seed):
    """The readers and record parsers, over every file kind: the (source, line) of every item is a record of
    that file, and every record of every file appears, in order (a pool may give several items per record)."""
    from fluxprm.traces import iter_traces

    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        files = write_batch(Path(folder), plan, seed, pool_records=2)
        seen = [(item.source, item.line) for item in iter_traces([f.path for f in files])]
    order = {f.path: n for n, f in enumerate(files)}
    assert [(order[s], ln) for s, ln in seen] == sorted((order[s], ln) for s, ln in seen)
    for f in files:
        assert sorted({ln for s, ln in seen if s == f.path}) == f.keys, (f.kind, f.name)


# ------------------------------------------------------------------------------------------------ library promises

_PRM800K_TEXT_RATING = {"question": {"problem": "What is 2+2?"},
                        "label": {"steps": [{"completions": [{"text": "2+2 is 4.", "rating": "good"}],
                                             "chosen_completion": 0}]}}
_PRM800K_BARE_COMPLETION = {"question": {"problem": "What is 2+2?"},
                            "label": {"steps": [{"completions": ["2+2 is 4."], "chosen_completion": 0}]}}
_prm800k_like = st.fixed_dictionaries({
    "question": st.dictionaries(st.sampled_from(["problem", "ground_truth_answer"]), _json_values, max_size=2),
    "label": st.fixed_dictionaries({"steps": st.lists(st.fixed_dictionaries({
        "completions": st.lists(st.dictionaries(st.sampled_from(["text", "rating"]), _json_values, max_size=2)
                                | _json_values, max_size=2),
        "chosen_completion": _json_values}), max_size=3)})})


@FAST
@given(record=st.one_of(_records, _prm800k_like))
@example(record=_PRM800K_TEXT_RATING)
def test_parse_record_raises_only_trace_error(record):
    from fluxprm.traces import TraceError, parse_record

    try:
        parse_record(record, source="x.jsonl", line=1)
    except TraceError:
        pass


@pytest.fixture(scope="module")
def tiny_prms(model_dir) -> dict[int, Any]:
    """The tiny checkpoint with several context sizes, so short generated traces reach every long-trace path."""
    import copy

    from fluxprm import load_prm

    prm = load_prm(model_dir, dtype="float32", device="cpu")
    sized = {n: copy.copy(prm) for n in (48, 160, 4096)}  # one set of weights; only the context budget differs
    for n, p in sized.items():
        p.max_length = n
    return sized


@FAST
@given(records=st.lists(st.one_of(_records, _prm800k_like), min_size=1, max_size=4))
@example(records=[{"problem": "What is 1+1?", "response": "It is 2."}, _PRM800K_TEXT_RATING, _PRM800K_BARE_COMPLETION])
def test_score_batch_never_raises_for_a_bad_record_dict(tiny_prms, records):
    from fluxprm import Scorer
    from fluxprm.engine.options import ScoreOptions

    results = Scorer(tiny_prms[4096], ScoreOptions(batching="single", on_error="skip")).score_batch(records)
    assert len(results) >= len(records)


# Plain text without chat-template or thinking markers ('<', '[' and '|' start all of them), so any rejection
# would be about length; words of any script, combining marks, emoji, control characters.
_words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="<[|"), min_size=1,
                 max_size=12).filter(str.strip)
_paragraphs = st.lists(_words, min_size=1, max_size=50).map(" ".join)
_traces = st.fixed_dictionaries({"problem": _paragraphs, "thinking": st.lists(_paragraphs, max_size=12),
                                 "response": st.lists(_paragraphs, max_size=5)}).filter(
    lambda t: t["thinking"] or t["response"])


@FAST
@given(traces=st.lists(_traces, min_size=1, max_size=4), context=st.sampled_from([48, 160, 4096]),
       long=st.sampled_from(["auto", "windows", "truncate"]))
def test_valid_traces_of_any_length_are_scored_consistently(tiny_prms, traces, context, long):
    """SCHEMAS.md "Long traces": under auto and windows no trace is rejected for length, whatever the context;
    truncate rejects only a trace whose problem and response alone do not fit. Every score record is JSON,
    its step rewards are probabilities and its part lists partition them; an unclipped record has one reward
    per step, a truncated one ``num_steps - dropped_steps``."""
    from fluxprm import Scorer
    from fluxprm.engine.options import ScoreOptions
    from fluxprm.records import BadRecord

    records = [{"id": str(i), "problem": t["problem"],
                "response": ("<think>" + "\n\n".join(t["thinking"]) + "</think>" if t["thinking"] else "")
                            + "\n\n".join(t["response"])} for i, t in enumerate(traces)]
    scorer = Scorer(tiny_prms[context], ScoreOptions(long=long, batching="single", on_error="skip"))
    results = scorer.score_batch(records)
    assert len(results) == len(records)
    for result in results:
        if isinstance(result, BadRecord):
            assert long == "truncate" and "problem and response alone" in result.error, result.error
            continue
        rec = orjson.loads(orjson.dumps(result.to_json()))
        rewards = rec["step_rewards"]
        if long == "truncate" and not rewards:
            continue  # a known defect with its own test: test_truncate_never_writes_a_record_with_nothing_scored
        assert rewards and all(0.0 <= r <= 1.0 and math.isfinite(r) for r in rewards)
        assert rec["thinking_step_rewards"] + rec["response_step_rewards"] == rewards
        if not rec["truncated"]:
            assert len(rewards) == rec["num_steps"]
        elif "windows" not in rec and "clipped" not in rec:
            assert rec["dropped_steps"] > 0 and len(rewards) == rec["num_steps"] - rec["dropped_steps"]


def test_truncate_never_writes_a_record_with_nothing_scored(tiny_prms):
    """A trace is either scored (one reward or more) or rejected with a message: a record with ``score: null``
    and no step reward looks scored to every consumer (and is counted as scored) but carries nothing."""
    from fluxprm import Scorer
    from fluxprm.engine.options import ScoreOptions
    from fluxprm.records import BadRecord

    cut_off = {"id": "a", "problem": " ".join(["word"] * 20), "response": "<think>" + " ".join(["thought"] * 200)}
    [result] = Scorer(tiny_prms[160], ScoreOptions(long="truncate", batching="single")).score_batch([cut_off])
    assert isinstance(result, BadRecord) or result.step_rewards, result


# ------------------------------------------------------------------------------------------------ fluxprm score


@CLI
@given(plan=_plans, seed=_seeds)
@example(plan=_every_kind_plan(), seed=1)
def test_score_cli_accounts_for_every_record_without_a_traceback(model_dir, tmp_path, plan, seed):
    """A batch of 20-40 malformed and good files in one ``fluxprm score`` call: exit code as documented, no
    traceback, ``output + errors == records in`` (pools: each candidate once), errors naming source and line,
    both files in input order, and nothing on stdout."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        files = write_batch(Path(folder) / "in", plan, seed, pool_records=4)
        out = Path(folder) / "scores.jsonl"
        res = fluxprm("score", *[f.path for f in files], "-m", model_dir, "-o", str(out), "--threads", "1",
                      "--dtype", "float32", "--chunk-size", "16")
        check = check_run(files, out, Path(folder) / "scores.errors.jsonl", res.returncode, res.stderr)
        assert check.problems() == {}, (check.problems(), res.stderr[-3000:], _describe(files))
        assert res.stdout == ""
        assert check.records_in > 0 and check.written > 0 and check.in_errors_file > 0  # the batch exercised both


def test_score_cli_on_error_fail_keeps_everything_before_the_bad_record(model_dir, tmp_path):
    """``--on-error fail``: exit 1 at the first bad record, one line naming file:line, every earlier record
    written, the bad one in the errors file, nothing after it."""
    good = [json.dumps({"id": f"g{i}", "problem": f"What is {i}+1?", "response": f"<think>Add one to {i}.</think>"
                        f"It is {i + 1}."}) for i in range(9)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(good[:5] + ['{"id": "cut", "problem": "What'] + good[5:]) + "\n")
    out = tmp_path / "o.jsonl"
    res = fluxprm("score", str(src), "-m", model_dir, "-o", str(out), "--on-error", "fail", "--threads", "1",
                  "--dtype", "float32", "--chunk-size", "4")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    [error_line] = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert f"{src}:6" in error_line
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [f"g{i}" for i in range(5)]
    [bad] = [json.loads(x) for x in (tmp_path / "o.errors.jsonl").read_text().splitlines()]
    assert bad["source"] == str(src) and bad["line"] == 6


# ------------------------------------------------------------------------------------------------ fluxprm label

_LABEL_KINDS = tuple(k for k in RECORD_KINDS if k != "long")


# One subprocess: every file kind and every record kind (minus the slow "long" traces), plus a hypothesis-chosen
# batch of further files.
_label_plans = st.lists(st.tuples(st.sampled_from(FILE_KINDS), st.lists(st.sampled_from(_LABEL_KINDS), max_size=6)),
                        min_size=4, max_size=10).map(lambda extra: _every_kind_plan(_LABEL_KINDS) + extra)


@settings(CLI, max_examples=1, phases=(Phase.generate,))
@given(plan=_label_plans, seed=_seeds)
def test_label_cli_accounts_for_every_record(model_dir, tmp_path, plan, seed):
    """``fluxprm label --no-judge --no-coherence`` (the bundled MiniLM encoder, alignment on) over malformed files:
    no traceback, exit code as documented, every record in the labels or the errors file, in order."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        files = write_batch(Path(folder) / "in", plan, seed)
        out = Path(folder) / "labels.jsonl"
        res = fluxprm("label", *[f.path for f in files], "-o", str(out), "--no-judge", "--no-coherence",
                      "--device", "cpu", "--cache", str(Path(folder) / "llm.sqlite"), "--chunk-size", "8")
        check = check_run(files, out, Path(folder) / "labels.errors.jsonl", res.returncode, res.stderr)
        assert check.problems() == {}, (check.problems(), res.stderr[-3000:], _describe(files))
        assert check.written > 0 and check.in_errors_file > 0


def test_label_cli_lone_surrogate_costs_only_its_record(tmp_path):
    lines = [json.dumps({"id": f"t{i}", "problem": f"What is {i}+1?",
                         "response": f"<think>I add one to {i} and check the sum twice.</think>It is {i + 1}."})
             for i in range(4)]
    lines[1] = json.dumps({"id": "bad", "problem": "What is 1+1?\ud800",
                           "response": "<think>I add one to one and get two.</think>It is 2."})
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "labels.jsonl"
    res = fluxprm("label", str(src), "-o", str(out), "--no-judge", "--no-coherence", "--device", "cpu",
                  "--cache", str(tmp_path / "llm.sqlite"))
    assert "Traceback" not in res.stderr and res.returncode == 0, res.stderr[-2000:]
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["t0", "t2", "t3"]
    [bad] = [json.loads(x) for x in (tmp_path / "labels.errors.jsonl").read_text().splitlines()]
    assert bad["line"] == 2


# ------------------------------------------------------------------------------------------------ fluxprm train

# Label records (with soft targets) and labelled traces, mixed with every malformed kind; no pools (a pool is one
# example per candidate, so the count below would not hold).
_TRAIN_KINDS = ("label-record",) * 4 + ("steps", "prmbench", "math-shepherd", "prm800k") + BAD_KINDS


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    """One ``fluxprm train`` run (2 steps) over label and trace files full of bad records."""
    import random

    folder = tmp_path_factory.mktemp("train_fuzz")
    rng = random.Random(3)
    plan = [(rng.choice(("jsonl", "jsonl-crlf", "jsonl-gz", "json-array", "parquet", "jsonl-blank-lines")),
             [rng.choice(_TRAIN_KINDS) for _ in range(rng.randint(3, 10))]) for _ in range(8)]
    plan += [("empty", []), ("json-array-broken", ["label-record"] * 3), ("parquet-garbage", [])]
    files = write_batch(folder / "in", plan, seed=3)
    ckpt = folder / "ckpt"
    res = fluxprm("train", *[f.path for f in files], "-o", str(ckpt), "--set", "max_steps=2", "--set", "batch_size=2",
                  "--set", "val_fraction=0", "--set", "max_length=512", "--set", f"feature_cache={folder / 'feats'}")
    return files, ckpt, res


def test_train_cli_survives_bad_records(train_run):
    _, _, res = train_run
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode in (0, 1, 2), res.stderr[-3000:]


def test_train_cli_accounts_for_every_record(train_run):
    """Stronger: the run trains, and every record is either trained on or in ``rejected.jsonl`` with its source
    and line (``train + val + rejected == records in``)."""
    files, ckpt, res = train_run
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((ckpt / "train_summary.json").read_text())
    rejected = [json.loads(x) for x in (ckpt / "rejected.jsonl").read_text().splitlines()]
    records_in = sum(len(f.keys) for f in files)
    assert summary["train"] + summary["val"] + len(rejected) == records_in, summary
    assert summary["rejected"] == len(rejected)
    keys = {(f.path, k) for f in files for k in f.keys}
    assert all((r["source"], r["line"]) in keys and isinstance(r["error"], str) for r in rejected)
    assert len({(r["source"], r["line"]) for r in rejected}) == len(rejected)
