"""Malformed input files for fluxprm's "nothing lost, never a traceback" promise, and the checks of a run over them.

Shared by ``tests/test_fuzz.py`` (hypothesis picks the plan and the seed) and ``benchmarks/fuzz_report.py``
(a seeded ``random.Random`` does), so the benchmark's 10,000 records and the tests exercise the same cases.

A *plan* is a list of ``(file_kind, [record_kind, ...])``; :func:`make_file` turns one entry into bytes on disk
plus the records fluxprm must account for, computed here from the documented reading rules
(docs/SCHEMAS.md, ``fluxprm.records``) and never by calling fluxprm's readers:

- JSONL: one record per line that is not blank (JSON whitespace only: space, tab, CR, LF), numbered by
  physical line, a UTF-8 BOM at the start of the file ignored;
- a JSON document: an array gives one record per element (numbered from 1), one object gives record 1; a
  broken array is one file-level error (line 0); any other ``.json`` content is read as JSONL;
- Parquet: one record per row; an unreadable footer is one file-level error (line 0);
- ``.gz`` of any of them counts as the content; a ``.gz`` name over plain bytes is one error (line 1).

Pool records (a response that is a list of candidates) expand to one output per candidate, so they live in
files of their own (``pool`` kind) and are checked candidate by candidate; every other file's records are
generated so that none is a pool and the count ``output lines + error lines == records in`` must hold.
"""

from __future__ import annotations

import gzip
import io
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

# The field names fluxprm looks for, taken from the source, so a field added there is fuzzed here too.
from fluxprm.traces import (CORRECT_FIELDS, GOLD_FIELDS, ID_FIELDS, PRMBENCH_STEP_FIELDS, PROBLEM_FIELDS,
                            RESPONSE_FIELDS, STEP_LABEL_FIELDS, THINKING_FIELDS)

__all__ = ["FuzzFile", "FILE_KINDS", "RECORD_KINDS", "GOOD_KINDS", "BAD_KINDS", "HEAVY_KINDS", "make_file",
           "make_pool_file", "random_plan", "write_batch", "check_run", "RunCheck", "jsonl_keys", "json_document_keys",
           "KNOWN_FIELDS"]

BOM = b"\xef\xbb\xbf"
JSON_WHITESPACE = b" \t\r\n"

# Keys that select a record shape (fluxprm.traces.detect_shape and the parsers).
SHAPE_FIELDS = ("steps", "completions", "label", "messages", "conversations", "thinking_trajectories", "attempt",
                "error_steps", "score", "thinking_steps", "modified_question", "original_question")
# The fields of a label record (docs/SCHEMAS.md) that `fluxprm train` reads.
LABEL_FIELDS = ("thinking_steps", "response_steps", "step_rewards", "step_labels", "trajectory_reward", "correct",
                "components")
KNOWN_FIELDS = tuple(dict.fromkeys(ID_FIELDS + PROBLEM_FIELDS + RESPONSE_FIELDS + THINKING_FIELDS + GOLD_FIELDS
                                   + CORRECT_FIELDS + STEP_LABEL_FIELDS + PRMBENCH_STEP_FIELDS + SHAPE_FIELDS
                                   + LABEL_FIELDS))

# ------------------------------------------------------------------------------------------------ text

_WORDS = ("compute", "the", "sum", "x", "=", "2", "+", "3", "so", "therefore", "we", "get", "\\frac{1}{2}", "√2",
          "∑", "数学", "مرحبا", "🙂", "e\u0301", "Wait,", "step", "is", "answer", "\\boxed{5}", "$a^2+b^2$",
          "−1")
# Text that means something to a parser or a tokenizer: thinking and chat-template markers, the qwen-prm step
# separator, Math-Shepherd's tag, NUL, bidi override, a BOM inside text, line breaks of every kind.
_SPECIAL = ("<think>", "</think>", "<|begin_of_thought|>", "<|end_of_thought|>", "<|begin_of_solution|>",
            "<|end_of_solution|>", "<extra_0>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", " ки", "Step 1:",
            "<｜User｜>", "<｜Assistant｜>", "[INST]", "[/INST]", "<start_of_turn>", "\u0000", "\u202e", "\ufeff",
            "\r\n", "\n\n", "\u2028", "\x0b", "\t")
_SURROGATES = ("\ud800", "\udfff", "\udc00\ud800", "\ud83d")  # lone or reversed halves: valid JSON escapes only


def text(rng: random.Random, lo: int = 3, hi: int = 14, special: float = 0.03) -> str:
    """A few words, sometimes with a marker or control character among them."""
    words = [rng.choice(_SPECIAL) if rng.random() < special else rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
    return " ".join(words)


def steps_text(rng: random.Random, lo: int = 1, hi: int = 6) -> list[str]:
    return [text(rng, 6, 16) for _ in range(rng.randint(lo, hi))]


def _id(rng: random.Random, i: int) -> dict[str, Any]:
    """An id of any of the shapes records use: missing, a string, a small or huge integer, another id field."""
    roll = rng.random()
    if roll < 0.15:
        return {}
    if roll < 0.25:
        return {"id": rng.randint(-5, 10**6)}
    if roll < 0.32:
        return {"id": rng.choice((1, -1)) * 10 ** rng.randint(19, 60) + rng.randint(0, 9)}  # beyond 64 bits
    if roll < 0.40:
        return {rng.choice(ID_FIELDS): f"k{i}"}
    if roll < 0.45:
        return {"id": "dup"}  # repeated ids must be reported, never merged
    return {"id": f"r{i}-{rng.randint(0, 999)}"}


# ------------------------------------------------------------------------------------------------ good records


def _good_plain(rng: random.Random, i: int) -> dict[str, Any]:
    return {**_id(rng, i), rng.choice(PROBLEM_FIELDS[:5]): text(rng), rng.choice(RESPONSE_FIELDS): text(rng, 5, 30)}


def _good_r1(rng: random.Random, i: int) -> dict[str, Any]:
    think = "\n\n".join(steps_text(rng, 1, 8))
    closed = rng.random() < 0.8  # otherwise a trace cut off mid-thought
    resp = f"<think>\n{think}\n</think>\n\n{text(rng)}" if closed else f"<think>\n{think}"
    return {**_id(rng, i), "problem": text(rng), "response": resp}


def _good_sky(rng: random.Random, i: int) -> dict[str, Any]:
    think = "\n\n".join(steps_text(rng))
    return {**_id(rng, i), "question": text(rng),
            "response": f"<|begin_of_thought|>\n\n{think}\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n"
                        f"{text(rng)}\n\n<|end_of_solution|>"}


def _good_messages(rng: random.Random, i: int) -> dict[str, Any]:
    reply: dict[str, Any] = {"role": "assistant", "content": text(rng, 4, 20)}
    if rng.random() < 0.5:
        reply["reasoning_content"] = "\n\n".join(steps_text(rng))
    return {**_id(rng, i), "messages": [{"role": "system", "content": text(rng)},
                                        {"role": "user", "content": text(rng)}, reply]}


def _good_steps(rng: random.Random, i: int) -> dict[str, Any]:
    steps = steps_text(rng, 1, 8)
    return {**_id(rng, i), "problem": text(rng), "steps": steps, "label": rng.randint(-1, len(steps) - 1)}


def _good_s1k(rng: random.Random, i: int) -> dict[str, Any]:
    return {**_id(rng, i), "question": text(rng), "thinking_trajectories": steps_text(rng, 1, 4),
            "attempt": text(rng, 4, 20), "solution": "5"}


def _good_prmbench(rng: random.Random, i: int) -> dict[str, Any]:
    steps = steps_text(rng, 2, 6)
    return {**_id(rng, i), "original_question": text(rng), "modified_question": text(rng),
            "modified_process": steps, "original_process": steps, "error_steps": [rng.randint(1, len(steps) + 2)]}


def _good_shepherd(rng: random.Random, i: int) -> dict[str, Any]:
    problem = text(rng, special=0.0)
    steps = [f"Step {k + 1}: {text(rng, special=0.0)}" for k in range(rng.randint(1, 4))]
    marks = [rng.choice("+-") for _ in steps]
    return {"input": problem + " " + "".join(f"{s} ки\n" for s in steps),
            "label": problem + " " + "".join(f"{s} {m}\n" for s, m in zip(steps, marks))}


def _good_chat_template(rng: random.Random, i: int) -> dict[str, Any]:
    think = "\n\n".join(steps_text(rng))
    prompt = f"<｜begin▁of▁sentence｜><｜User｜>{text(rng)}<｜Assistant｜>"
    return {**_id(rng, i), "response": f"{prompt}<think>\n{think}\n</think>\n\n{text(rng)}<｜end▁of▁sentence｜>"}


def _good_prm800k(rng: random.Random, i: int) -> dict[str, Any]:
    steps = [{"completions": [{"text": text(rng, 6, 14), "rating": rng.choice((-1, 0, 1))}], "chosen_completion": 0}
             for _ in range(rng.randint(1, 4))]
    return {"question": {"problem": text(rng), "ground_truth_answer": "5"}, "label": {"steps": steps}}


def _good_long(rng: random.Random, i: int) -> dict[str, Any]:
    """A long trace (many thousands of tokens): segmentation caps, long-trace policy, windows."""
    think = "\n\n".join(text(rng, 40, 120, special=0.0) for _ in range(rng.randint(40, 120)))
    return {**_id(rng, i), "problem": text(rng), "response": f"<think>{think}</think>{text(rng)}"}


def _good_label_record(rng: random.Random, i: int) -> dict[str, Any]:
    """A record as ``fluxprm label`` writes it: soft step targets for thinking steps, null for response steps."""
    thinking, response = steps_text(rng, 1, 5), steps_text(rng, 0, 2)
    return {**_id(rng, i), "problem": text(rng), "thinking_steps": thinking, "response_steps": response,
            "step_rewards": [round(rng.random(), 6) for _ in thinking] + [None] * len(response),
            "step_labels": None, "trajectory_reward": rng.choice((None, round(rng.random(), 3))),
            "correct": rng.choice((None, True, False)), "gold": "5", "notes": []}


GOOD: dict[str, Callable[[random.Random, int], dict[str, Any]]] = {
    "plain": _good_plain, "r1": _good_r1, "sky-t1": _good_sky, "messages": _good_messages, "steps": _good_steps,
    "s1k": _good_s1k, "prmbench": _good_prmbench, "math-shepherd": _good_shepherd,
    "chat-template": _good_chat_template, "prm800k": _good_prm800k, "label-record": _good_label_record,
}

# ------------------------------------------------------------------------------------------------ malformed records

# Wrong-typed values for a known field. No list of strings: under a response field that would be a Best-of-N
# pool (one output per candidate), which the count-based property keeps out (pools are checked on their own).
_WRONG_VALUES: tuple[Any, ...] = (None, True, False, 0, -1, 1, 2 ** 63, -(2 ** 63) - 1, 10 ** 30, 1.5, -0.0,
                                  float("nan"), float("inf"), float("-inf"), "", " ", "\n\n", [], [None], [1, 2],
                                  [[]], [{}], [{"role": "user"}], {}, {"a": 1}, {"text": 5}, {"problem": "p"})


def _dumps(record: Any) -> bytes:
    """JSON as Python writes it: NaN/Infinity allowed, lone surrogates as escapes (valid JSON text)."""
    return json.dumps(record, ensure_ascii=True).encode()


def _good_line(rng: random.Random, i: int) -> bytes:
    return _dumps(rng.choice(list(GOOD.values()))(rng, i))


def _bad_truncated(rng: random.Random, i: int) -> bytes:
    line = _good_line(rng, i)
    return line[: rng.randint(1, len(line) - 1)]


def _bad_random_bytes(rng: random.Random, i: int) -> bytes:
    n = rng.randint(1, 200)
    return rng.getrandbits(8 * n).to_bytes(n, "little").replace(b"\n", b"?")


def _bad_invalid_utf8(rng: random.Random, i: int) -> bytes:
    line = _good_line(rng, i)
    at = line.index(b'"', 1) + 1 if b'"' in line[1:] else 1
    junk = rng.choice((b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"))
    return line[:at] + junk + line[at:]


def _bad_bom(rng: random.Random, i: int) -> bytes:
    return BOM + _good_line(rng, i)  # a BOM anywhere but the file's start is not whitespace


def _bad_deep(rng: random.Random, i: int) -> bytes:
    depth = rng.choice((900, 1100, 3000, 100_000))
    where = rng.random()
    if where < 0.4:
        return b"[" * depth + b"]" * depth
    if where < 0.7:
        return b'{"a":' * depth + b"1" + b"}" * depth
    field_ = rng.choice(KNOWN_FIELDS).encode()
    return b'{"problem": "p", "response": "r", "' + field_ + b'": ' + b"[" * depth + b"]" * depth + b"}"


def _bad_long_line(rng: random.Random, i: int) -> bytes:
    roll = rng.random()
    if roll < 0.4:  # a valid trace carrying a megabyte of data nobody scores
        rec = GOOD["plain"](rng, i)
        rec["blob"] = "x" * rng.randint(200_000, 1_500_000)
        return _dumps(rec)
    if roll < 0.7:  # a megabyte that is not JSON
        return b"{" + b"a" * rng.randint(100_000, 1_000_000)
    rec = GOOD["plain"](rng, i)  # a very long problem: the long-trace policy has to cope
    rec["problem"] = ("word " * rng.randint(5_000, 40_000)).strip()
    return _dumps(rec)


def _bad_nan(rng: random.Random, i: int) -> bytes:
    rec = rng.choice(list(GOOD.values()))(rng, i)
    for _ in range(rng.randint(1, 3)):
        rec[rng.choice(KNOWN_FIELDS)] = rng.choice((float("nan"), float("inf"), float("-inf")))
    return _dumps(rec)


def _bad_surrogate(rng: random.Random, i: int) -> bytes:
    rec = rng.choice((_good_plain, _good_r1, _good_steps, _good_messages))(rng, i)
    target = rng.choice(("id", "problem", "response", "steps", "messages", "thinking"))
    s = rng.choice(_SURROGATES)
    if target == "steps" and "steps" in rec:
        rec["steps"][0] += s
    elif target == "messages" and "messages" in rec:
        rec["messages"][-1]["content"] += s
    elif target == "thinking":
        rec["thinking"] = text(rng) + s
    else:
        rec[target] = f"{rec.get(target, '')}{s}" if isinstance(rec.get(target, ""), str) else s
    return _dumps(rec)


def _bad_wrong_type(rng: random.Random, i: int) -> bytes:
    rec = rng.choice(list(GOOD.values()))(rng, i)
    for _ in range(rng.randint(1, 3)):
        rec[rng.choice(KNOWN_FIELDS)] = rng.choice(_WRONG_VALUES)
    return _dumps(rec)


def _bad_huge_int(rng: random.Random, i: int) -> bytes:
    digits = rng.choice((19, 20, 40, 400, 4299, 4301, 20_000))  # past 4300 digits Python refuses to parse
    number = rng.choice(("", "-")) + "9" * digits
    rec = GOOD["plain"](rng, i)
    return _dumps({k: v for k, v in rec.items() if k != "id"}).replace(b"{", b'{"id": ' + number.encode() + b", ", 1)


def _bad_not_object(rng: random.Random, i: int) -> bytes:
    return rng.choice((b"[]", b"[1, 2]", b"1", b"-0.5e3", b'"text"', b"null", b"true", b"NaN", b"Infinity",
                       b'["problem", "response"]'))


def _bad_odd_json(rng: random.Random, i: int) -> bytes:
    good = _good_line(rng, i)
    return rng.choice((b"{}", b'{"unknown": 1}', b'{"id": "a", "id": "b", "problem": "p", "response": "r"}',
                       good + b" trailing", good + good, b"{'problem': 'single quotes'}",
                       b'{"problem": "p", "response": "r",}', b"\x00" * 8, b"\x0c" + good, good[:-1] + b"\x00}"))


BAD: dict[str, Callable[[random.Random, int], bytes]] = {
    "truncated": _bad_truncated, "random-bytes": _bad_random_bytes, "invalid-utf8": _bad_invalid_utf8,
    "bom": _bad_bom, "deep": _bad_deep, "long-line": _bad_long_line, "nan": _bad_nan, "surrogate": _bad_surrogate,
    "wrong-type": _bad_wrong_type, "huge-int": _bad_huge_int, "not-object": _bad_not_object, "odd-json": _bad_odd_json,
}

GOOD_KINDS = tuple(GOOD)
BAD_KINDS = tuple(BAD)
RECORD_KINDS = GOOD_KINDS + BAD_KINDS + ("long",)


def record_line(kind: str, rng: random.Random, i: int) -> bytes:
    """One JSONL line (no newline) of ``kind``."""
    if kind == "long":
        return _dumps(_good_long(rng, i))
    if kind in GOOD:
        return _dumps(GOOD[kind](rng, i))
    return BAD[kind](rng, i)


def record_value(kind: str, rng: random.Random, i: int) -> Any:
    """A decoded value for JSON arrays and Parquet (malformed kinds become wrong-typed or non-object values)."""
    if kind in GOOD:
        return GOOD[kind](rng, i)
    if kind == "long":
        return _good_long(rng, i)
    if kind == "not-object":
        return rng.choice(([], [1, 2], 1, "text", None, True, 0.5))
    rec = GOOD["plain"](rng, i)
    if kind == "surrogate":
        rec[rng.choice(("id", "problem", "response"))] = text(rng) + rng.choice(_SURROGATES)
    elif kind == "nan":
        rec[rng.choice(KNOWN_FIELDS)] = float("nan")
    elif kind == "huge-int":
        rec["id"] = 10 ** rng.randint(19, 200)
    else:
        rec[rng.choice(KNOWN_FIELDS)] = rng.choice(_WRONG_VALUES)
    return rec


# ------------------------------------------------------------------------------------------------ expected records


def jsonl_keys(data: bytes) -> list[int]:
    """Line numbers of the records of JSONL bytes: every line that is not blank (a BOM opening the file ignored)."""
    keys = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if number == 1:
            raw = raw.removeprefix(BOM)
        if raw.strip(JSON_WHITESPACE):
            keys.append(number)
    return keys


def json_document_keys(data: bytes) -> list[int]:
    """Records of a ``.json`` file, by the documented rules (see the module docstring)."""
    body = data.removeprefix(BOM)
    first = next((ln.strip(JSON_WHITESPACE) for ln in body.split(b"\n") if ln.strip(JSON_WHITESPACE)), b"")
    if not first:
        return []
    if first.startswith(b"{") and _parses(first):
        return jsonl_keys(data)
    try:
        value = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return [0] if first.startswith(b"[") and not _parses(first) else jsonl_keys(data)
    return list(range(1, len(value) + 1)) if isinstance(value, list) else [1]


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw.decode("utf-8"))
        return True
    except (ValueError, RecursionError):
        return False


# ------------------------------------------------------------------------------------------------ files


@dataclass
class FuzzFile:
    """One generated input file and the records a run must account for."""

    name: str
    data: bytes
    kind: str
    keys: list[int]                                   # expected record numbers (0: one file-level error)
    pools: dict[int, int] = field(default_factory=dict)  # pool files: record number → candidates
    path: str = ""                                    # set by write_batch: the path given on the command line


FILE_KINDS = ("jsonl", "jsonl-crlf", "jsonl-bom", "jsonl-blank-lines", "jsonl-no-final-newline", "jsonl-gz",
              "ndjson", "sniffed-gz", "sniffed-jsonl", "empty", "whitespace-only", "empty-gz", "not-gzip",
              "json-array", "json-array-pretty", "json-array-gz", "json-array-broken", "json-object",
              "json-really-jsonl", "sniffed-json-array", "parquet", "parquet-gz", "parquet-broken-footer",
              "parquet-garbage")


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _jsonl(lines: list[bytes], sep: bytes = b"\n", final: bool = True) -> bytes:
    return sep.join(lines) + (sep if final and lines else b"")


def _parquet(values: list[Any], rng: random.Random) -> bytes:
    """Rows with mixed columns (strings, integers, floats with NaN, lists, structs, binary), several row groups.

    Values of a kind Parquet cannot hold in one column are stored as their JSON text, so every value lands in
    some row; columns absent from a row are null there (records read back with the key set to None).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [v if isinstance(v, dict) else {"value": json.dumps(v)} for v in values]
    names: list[str] = sorted({k for r in rows for k in r})
    columns = {}
    for name in names:
        col = [r.get(name) for r in rows]
        try:
            columns[name] = pa.array(col)
            pq.write_table(pa.table({name: columns[name]}), io.BytesIO())  # e.g. an empty struct cannot be written
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, ValueError):
            columns[name] = pa.array([None if v is None else json.dumps(v) for v in col], type=pa.string())
    if rows and rng.random() < 0.5:
        columns["blob"] = pa.array([rng.getrandbits(64).to_bytes(8, "little") for _ in rows], type=pa.binary())
        columns["score_f"] = pa.array([float("nan") if k % 3 == 0 else k / 7 for k in range(len(rows))])
    table = pa.table(columns) if columns else pa.table({"value": pa.array([], type=pa.string())})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=max(1, rng.randint(1, 4)))
    return sink.getvalue()


def make_file(file_kind: str, record_kinds: Sequence[str], rng: random.Random, name: str,
              first_index: int = 0) -> FuzzFile:
    """Build one input file of ``file_kind`` holding one record per entry of ``record_kinds``."""
    lines = [record_line(k, rng, first_index + n) for n, k in enumerate(record_kinds)]
    values = lambda: [record_value(k, rng, first_index + n) for n, k in enumerate(record_kinds)]  # noqa: E731
    if file_kind in ("jsonl", "ndjson", "jsonl-gz", "sniffed-gz", "sniffed-jsonl"):
        if file_kind == "sniffed-jsonl":
            lines = [b'{"problem": "p", "response": "r"}'] + lines  # the first byte decides: not '['
        data = _jsonl(lines)
        keys = jsonl_keys(data)
        ext = {"jsonl": ".jsonl", "ndjson": ".ndjson", "jsonl-gz": ".jsonl.gz", "sniffed-gz": "",
               "sniffed-jsonl": ".txt"}[file_kind]
        return FuzzFile(name + ext, _gz(data) if "gz" in file_kind else data, file_kind, keys)
    if file_kind == "jsonl-crlf":
        data = _jsonl(lines, b"\r\n")
        return FuzzFile(name + ".jsonl", data, file_kind, jsonl_keys(data))
    if file_kind == "jsonl-bom":
        data = BOM + _jsonl(lines)
        return FuzzFile(name + ".jsonl", data, file_kind, jsonl_keys(data))
    if file_kind == "jsonl-blank-lines":
        padded: list[bytes] = []
        for ln in lines:
            padded += [rng.choice((b"", b"  ", b"\t", b"\r", b" \r "))] * rng.randint(0, 2) + [ln]
        data = _jsonl(padded + [b""] * rng.randint(0, 3))
        return FuzzFile(name + ".jsonl", data, file_kind, jsonl_keys(data))
    if file_kind == "jsonl-no-final-newline":
        data = _jsonl(lines, final=False)
        return FuzzFile(name + ".jsonl", data, file_kind, jsonl_keys(data))
    if file_kind == "empty":
        return FuzzFile(name + ".jsonl", b"", file_kind, [])
    if file_kind == "whitespace-only":
        data = rng.choice((b"\n\n", b" \r\n\t\n", BOM + b"\n", b"   "))
        return FuzzFile(name + rng.choice((".jsonl", ".json")), data, file_kind, [])
    if file_kind == "empty-gz":
        return FuzzFile(name + ".jsonl.gz", _gz(b""), file_kind, [])
    if file_kind == "not-gzip":
        return FuzzFile(name + ".jsonl.gz", _jsonl(lines) or b"{}\n", file_kind, [1])
    if file_kind in ("json-array", "json-array-pretty", "json-array-gz", "sniffed-json-array"):
        data = json.dumps(values(), indent=2 if file_kind == "json-array-pretty" else None).encode()
        ext = {"json-array": ".json", "json-array-pretty": ".json", "json-array-gz": ".json.gz",
               "sniffed-json-array": ".dat"}[file_kind]
        return FuzzFile(name + ext, _gz(data) if file_kind == "json-array-gz" else data, file_kind,
                        json_document_keys(data))
    if file_kind == "json-array-broken":
        data = json.dumps(values() or [{}], indent=1).encode()
        data = data[: rng.randint(2, max(2, len(data) - 2))]
        return FuzzFile(name + ".json", data, file_kind, json_document_keys(data))
    if file_kind == "json-object":
        data = json.dumps(GOOD["r1"](rng, first_index), indent=2).encode()
        return FuzzFile(name + ".json", data, file_kind, json_document_keys(data))
    if file_kind == "json-really-jsonl":
        data = _jsonl([b'{"problem": "p", "response": "the answer is 4"}'] + lines)
        return FuzzFile(name + ".json", data, file_kind, json_document_keys(data))
    if file_kind in ("parquet", "parquet-gz"):
        vals = values()
        data = _parquet(vals, rng)
        return FuzzFile(name + (".parquet.gz" if file_kind == "parquet-gz" else ".parquet"),
                        _gz(data) if file_kind == "parquet-gz" else data, file_kind, list(range(1, len(vals) + 1)))
    if file_kind == "parquet-broken-footer":
        data = _parquet(values() or [{"problem": "p"}], rng)
        return FuzzFile(name + ".parquet", data[: len(data) - rng.randint(5, 40)], file_kind, [0])
    if file_kind == "parquet-garbage":
        n = rng.randint(0, 300)
        return FuzzFile(name + ".parquet", b"PAR1" + rng.getrandbits(8 * n + 8).to_bytes(n + 1, "little"),
                        file_kind, [0])
    raise ValueError(f"unknown file kind {file_kind!r}")


def make_pool_file(rng: random.Random, name: str, records: int) -> FuzzFile:
    """Best-of-N pool records: a list of candidates each, some unusable (empty, a lone surrogate, markers only)."""
    lines, pools = [], {}
    for r in range(records):
        candidates = [_pool_candidate(rng) for _ in range(rng.randint(1, 6))]
        rec: dict[str, Any] = {"id": f"pool{r}", "problem": text(rng), "response": candidates}
        if rng.random() < 0.5:
            rec["correct"] = [rng.random() < 0.5 for _ in candidates]
        lines.append(_dumps(rec))
        pools[r + 1] = len(candidates)
    return FuzzFile(name + ".jsonl", _jsonl(lines), "pool", sorted(pools), pools)


def _pool_candidate(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return ""
    if roll < 0.15:
        return "<think></think>"
    if roll < 0.25:
        return text(rng) + rng.choice(_SURROGATES)
    return "<think>" + "\n\n".join(steps_text(rng)) + "</think>" + text(rng)


# Kinds that cost megabytes or thousands of tokens each: drawn ten times less often by random_plan.
HEAVY_KINDS = ("long-line", "long", "deep")


def random_plan(rng: random.Random, files: int, records_per_file: tuple[int, int] = (0, 12),
                bad_share: float = 0.5, heavy_share: float = 0.1) -> list[tuple[str, list[str]]]:
    """A plan of ``files`` files of random kinds with random record kinds: about ``bad_share`` malformed, and
    the heavy kinds (:data:`HEAVY_KINDS`) at ``heavy_share`` of the others' frequency."""
    def pick(kinds: tuple[str, ...]) -> str:
        weights = [heavy_share if k in HEAVY_KINDS else 1.0 for k in kinds]
        return rng.choices(kinds, weights)[0]

    plan = []
    for _ in range(files):
        kinds = [pick(BAD_KINDS) if rng.random() < bad_share else pick(GOOD_KINDS + ("long",))
                 for _ in range(rng.randint(*records_per_file))]
        plan.append((rng.choice(FILE_KINDS), kinds))
    return plan


def write_batch(folder: Path, plan: Sequence[tuple[str, Sequence[str]]], seed: int,
                pool_records: int = 0) -> list[FuzzFile]:
    """Write a plan's files (plus one pool file when ``pool_records``) into ``folder``; returns them with paths."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[FuzzFile] = []
    index = 0
    for n, (file_kind, record_kinds) in enumerate(plan):
        f = make_file(file_kind, record_kinds, rng, f"f{n:03d}-{file_kind}", index)
        index += len(record_kinds)
        files.append(f)
    if pool_records:
        files.append(make_pool_file(rng, f"f{len(plan):03d}-pools", pool_records))
    for f in files:
        path = folder / f.name
        path.write_bytes(f.data)
        f.path = str(path)
    return files


# ------------------------------------------------------------------------------------------------ checking a run


@dataclass
class RunCheck:
    """What one run did with a batch, against what it had to do. Every list must be empty for a good run."""

    records_in: int = 0
    written: int = 0
    in_errors_file: int = 0
    lost: list[str] = field(default_factory=list)            # "file:line" of records found in neither file
    duplicated: list[str] = field(default_factory=list)      # records (or candidates) that came out twice
    unexpected: list[str] = field(default_factory=list)      # lines naming a record that does not exist
    malformed: list[str] = field(default_factory=list)       # output/errors lines that are not JSON or lack keys
    out_of_order: list[str] = field(default_factory=list)
    traceback: bool = False
    exit_code: int | None = None
    expected_exit: int | None = None

    def problems(self) -> dict[str, Any]:
        found = {k: v[:10] for k, v in (("lost", self.lost), ("duplicated", self.duplicated),
                                        ("unexpected", self.unexpected), ("malformed", self.malformed),
                                        ("out_of_order", self.out_of_order)) if v}
        if self.traceback:
            found["traceback"] = True
        if self.exit_code != self.expected_exit:
            found["exit_code"] = f"{self.exit_code}, expected {self.expected_exit}"
        return found


def _read_lines(path: Path, check: RunCheck, what: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            check.malformed.append(f"{what} line {n}: not JSON ({exc})")
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("source"), str) or \
                not isinstance(rec.get("line"), int) or isinstance(rec.get("line"), bool):
            check.malformed.append(f"{what} line {n}: no source/line: {raw[:200]!r}")
            continue
        if what == "errors" and not isinstance(rec.get("error"), str):
            check.malformed.append(f"errors line {n}: no error message: {raw[:200]!r}")
            continue
        out.append(rec)
    return out


def check_run(files: Sequence[FuzzFile], out: Path, errors: Path, returncode: int, stderr: str) -> RunCheck:
    """Compare a finished run's output and errors files with the records ``files`` hold."""
    check = RunCheck(exit_code=returncode, traceback="Traceback" in stderr)
    order = {f.path: n for n, f in enumerate(files)}
    by_path = {f.path: f for f in files}
    outs = _read_lines(out, check, "output")
    errs = _read_lines(errors, check, "errors")
    check.written, check.in_errors_file = len(outs), len(errs)
    check.records_in = sum(len(f.keys) for f in files)
    for what, recs in (("output", outs), ("errors", errs)):
        last = (-1, -1)
        for rec in recs:
            if rec["source"] not in order:
                check.unexpected.append(f"{what}: unknown source {rec['source']!r}")
                continue
            here = (order[rec["source"]], rec["line"])
            if here < last:
                check.out_of_order.append(f"{what}: {rec['source']}:{rec['line']} after line {last[1]}")
            last = here
    lines_per_record: dict[tuple[str, int], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for what, recs in (("output", outs), ("errors", errs)):
        for rec in recs:
            if rec["source"] in order:
                lines_per_record[(rec["source"], rec["line"])].append((what, rec))
    for f in files:
        for key in f.keys:
            got = lines_per_record.pop((f.path, key), [])
            where = f"{f.path}:{key}"
            if not got:
                check.lost.append(where)
            elif f.pools:
                _check_pool(check, where, f.pools[key], got)
            elif len(got) > 1:
                check.duplicated.append(f"{where} ×{len(got)}")
    check.unexpected += [f"{s}:{ln} ({by_path[s].kind}, expected {by_path[s].keys[:20]})"
                         for s, ln in lines_per_record]
    check.expected_exit = 1 if check.records_in and not outs else 0
    return check


def _check_pool(check: RunCheck, where: str, n: int, got: list[tuple[str, dict[str, Any]]]) -> None:
    """A pool record: each candidate exactly once (output ``candidate`` k, or an error with id ``…#k``),
    or the whole record as one error."""
    if len(got) == 1 and got[0][0] == "errors" and not str(got[0][1].get("id") or "").rpartition("#")[2].isdigit():
        return
    seen: Counter[int] = Counter()
    for what, rec in got:
        k = rec.get("candidate") if what == "output" else None
        if k is None:
            tail = str(rec.get("id") or "").rpartition("#")[2]
            k = int(tail) if tail.isdigit() else -1
        seen[k] += 1
    if set(seen) != set(range(n)):
        check.lost.append(f"{where}: candidates {sorted(seen)} of {n}")
    check.duplicated += [f"{where} candidate {k} ×{c}" for k, c in seen.items() if c > 1]
