"""Fuzz report: at least 10,000 fuzzed records through ``fluxprm score``, and an account of every one.

The records come from ``tests/fuzz_corpus.py`` driven by a seeded ``random.Random`` (the same generator the
hypothesis suite uses): about half malformed (truncated JSON, random bytes, invalid UTF-8, BOMs, deep nesting,
megabyte lines, NaN/Infinity, lone surrogates, wrong-typed fields, huge integer ids, non-objects), the rest
traces of every record shape, spread over every file kind (JSONL with LF/CRLF/BOM/blank lines, gzip, JSON
arrays, broken arrays, Parquet with mixed columns, damaged Parquet, empty files) plus Best-of-N pool files.
They are scored in a few real ``python -m fluxprm score`` subprocesses with the tiny random-weight Qwen PRM
of ``tests/builders.py`` (needs the ``dev`` extra), and each run is checked against the records its files
hold, computed from the documented reading rules, never by fluxprm itself.

Prints one JSON object::

    {"records_in", "pool_candidates", "scored", "in_errors_file", "lost", "duplicated", "unexpected",
     "malformed_lines", "out_of_order", "tracebacks", "exit_codes", "wrong_exit_codes", "files", "file_kinds",
     "seconds", "seed", "examples"}

``lost`` (records or pool candidates in neither file) and ``tracebacks`` must be 0; the script exits 1 if any
count of a broken promise (lost, duplicated, unexpected, malformed, out of order, traceback, wrong exit code) is
not 0. Usage: ``python benchmarks/fuzz_report.py [--records 10000] [--calls 4] [--seed 0] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from builders import build_qwen_prm  # noqa: E402
from fuzz_corpus import check_run, random_plan, write_batch  # noqa: E402


def run_call(model: Path, folder: Path, records: int, seed: int) -> tuple[dict, float]:
    """Generate files holding about ``records`` records, score them in one subprocess, check the outcome."""
    rng = random.Random(seed)
    plan: list[tuple[str, list[str]]] = []
    while True:  # empty and broken files hold fewer records than planned: add files until the count is reached
        plan += random_plan(rng, 10, records_per_file=(10, 80))
        if sum(len(kinds) for _, kinds in plan) < records:
            continue
        shutil.rmtree(folder / "in", ignore_errors=True)
        files = write_batch(folder / "in", plan, seed, pool_records=25)
        if sum(len(f.keys) for f in files) >= records:
            break
    out = folder / "scores.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "fluxprm", "score", *[f.path for f in files], "-m", str(model),
                          "-o", str(out), "--threads", "1", "--dtype", "float32", "--batching", "single"],
                         capture_output=True, text=True, env=env, timeout=3600)
    seconds = time.perf_counter() - started
    check = check_run(files, out, folder / "scores.errors.jsonl", res.returncode, res.stderr)
    pools = [f for f in files if f.pools]
    return {"check": check, "files": files, "pool_candidates": sum(sum(f.pools.values()) for f in pools),
            "stderr_tail": res.stderr[-2000:] if check.problems() else ""}, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000, help="input records in all (at least)")
    ap.add_argument("--calls", type=int, default=4, help="fluxprm score subprocesses (model loads)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="keep the generated files and outputs in this folder")
    args = ap.parse_args()

    model = build_qwen_prm(None)
    work = args.keep or Path(tempfile.mkdtemp(prefix="fluxprm-fuzz-"))
    totals: Counter[str] = Counter()
    exit_codes: Counter[str] = Counter()
    file_kinds: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    seconds = 0.0
    try:
        for call in range(args.calls):
            result, took = run_call(model, work / f"call{call}", -(-args.records // args.calls),
                                    args.seed * 1000 + call)
            seconds += took
            check = result["check"]
            exit_codes[str(check.exit_code)] += 1
            file_kinds.update(f.kind for f in result["files"])
            totals.update(records_in=check.records_in, scored=check.written, in_errors_file=check.in_errors_file,
                          pool_candidates=result["pool_candidates"], files=len(result["files"]),
                          lost=len(check.lost), duplicated=len(check.duplicated), unexpected=len(check.unexpected),
                          malformed_lines=len(check.malformed), out_of_order=len(check.out_of_order),
                          tracebacks=int(check.traceback),
                          wrong_exit_codes=int(check.exit_code != check.expected_exit))
            for name, found in check.problems().items():
                examples.setdefault(name, []).append(str(found)[:500])
            if result["stderr_tail"]:
                examples.setdefault("stderr", []).append(result["stderr_tail"])
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    keys = ("records_in", "pool_candidates", "scored", "in_errors_file", "lost", "duplicated", "unexpected",
            "malformed_lines", "out_of_order", "tracebacks")
    report = {k: totals[k] for k in keys}
    report.update(exit_codes=dict(exit_codes), wrong_exit_codes=totals["wrong_exit_codes"], files=totals["files"],
                  file_kinds=dict(sorted(file_kinds.items())), seconds=round(seconds, 1), seed=args.seed,
                  examples=examples)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    broken = ("lost", "duplicated", "unexpected", "malformed_lines", "out_of_order", "tracebacks", "wrong_exit_codes")
    return 1 if any(totals[k] for k in broken) else 0


if __name__ == "__main__":
    sys.exit(main())
