"""Long traces: what `--long windows` buys over truncation, and how much preceding context a window needs.

Prints one JSON object (figures in docs/LONG_TRACES.md). Two parts, both with fluxprm-mini by default:

``correlation``: traces that *fit* the model's 2,048-token context are scored once in full (the reference)
and again with an artificially small context (``--window-length``) in windows, for each ``--context-tokens``
value of the sweep, and with ``truncate`` at that small context. Pearson and Spearman correlation with the
full-context scores, of step rewards (pooled over every step of the traces that needed windows) and of
trace scores (``score``: mean step reward + α·trajectory; and the mean step reward alone). Float32, so the
figures do not depend on whether a CPU has bfloat16.

``long``: the Sky-T1 long thinking traces (``long_cot`` true) of ``skythought_amc23.jsonl``, scored with the
model's own context under ``truncate``, ``windows`` and ``auto``: AUROC of ``score`` for correct vs incorrect,
tokens scored, forward seconds, windows per trace. Forwards are cached by input, so ``auto`` (which reuses
``truncate``'s or ``windows``' layout trace by trace) costs no extra forward; its seconds are the sum of the
forwards it uses. A paired bootstrap (resampling traces) gives the AUROC difference's 95% interval.

``fixture``: the windows-vs-full correlation on ``tests/fixtures/long_traces/skythought_amc23_short_sample.jsonl`` at the
settings ``tests/test_long_traces.py`` asserts.

Run from the repository root, on a machine you state next to the figures (2 shared cores here)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/long_traces.py --parts fixture,correlation,long
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch

import fluxprm
from fluxprm.engine.fit import Fitted, fit_trace
from fluxprm.metrics import auroc, pearson, spearman
from fluxprm.models.base import Encoded, ItemOutput, TraceTooLong, TransformerPRM
from fluxprm.scores import combine
from fluxprm.steps import PRMInput, prepare, step_config_for
from fluxprm.traces import TraceError, parse_record

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "bon_pools" / "skythought_amc23.jsonl"
FIXTURE = ROOT / "tests" / "fixtures" / "long_traces" / "skythought_amc23_short_sample.jsonl"
# The settings tests/test_long_traces.py asserts (kept here once so the docs, the test and this script agree).
FIXTURE_WINDOW_LENGTH = 512
FIXTURE_CONTEXT_TOKENS = 128


# ---------------------------------------------------------------------------------------------- statistics
def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# ---------------------------------------------------------------------------------------------- scoring
class CachedScorer:
    """Fits traces with fit_trace and runs one forward per encoding (the CPU batching verdict), cached by input."""

    def __init__(self, prm: TransformerPRM):
        self.prm = prm
        self.cache: dict[bytes, tuple[ItemOutput, float]] = {}

    def _forward(self, enc: Encoded) -> tuple[ItemOutput, float]:
        key = hashlib.sha1(json.dumps([enc.input_ids, enc.read_positions]).encode()).digest()
        if key not in self.cache:
            t0 = time.perf_counter()
            [out] = self.prm.forward([enc])
            self.cache[key] = (out, time.perf_counter() - t0)
        return self.cache[key]

    def score(self, item: PRMInput, policy: str, context_tokens: int) -> dict[str, Any]:
        fitted: Fitted = fit_trace(self.prm, item, policy, context_tokens)
        outs = [self._forward(p) for p in fitted.parts]
        steps = [r for o, _ in outs for r in o.step_rewards]
        traj = outs[-1][0].trajectory_reward
        dropped = fitted.parts[0].dropped_thinking if len(fitted.parts) == 1 else 0
        return {"steps": steps, "first_step": dropped, "traj": traj,
                "score": combine(steps, traj, self.prm.aggregate, self.prm.alpha),
                "mean_step": statistics.fmean(steps) if steps else float("nan"),
                "windows": len(fitted.parts), "tokens": fitted.tokens, "seconds": sum(s for _, s in outs),
                "context": [w.context_tokens for w in fitted.windows[1:]]}


def load_items(path: Path, prm: TransformerPRM, keep) -> list[tuple[dict, PRMInput]]:
    """(record, PRMInput) of every record ``keep(record)`` accepts, cut the way the model was trained."""
    config = step_config_for(prm.trained_steps)
    items = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if not keep(rec):
            continue
        try:
            [trace] = parse_record(rec, source=path.name, line=0)
        except TraceError:
            continue  # empty or unusable responses (a few Llama-3.1-8B ones)
        items.append((rec, prepare(trace, config)))
    return items


def full_length(prm: TransformerPRM, item: PRMInput) -> int:
    return len(prm.encode_ids(item.problem, item.thinking_steps + item.response_steps)[0])


# ---------------------------------------------------------------------------------------------- parts
def correlation(full: CachedScorer, small: CachedScorer, items: list[PRMInput], contexts: Iterable[int]) -> dict:
    """Windows at a small context (and truncate) vs the full-context reference, per context_tokens value."""
    windowed = [it for it in items if full_length(small.prm, it) > small.prm.max_length]
    ref = [full.score(it, "truncate", 0) for it in windowed]
    assert all(r["windows"] == 1 and r["first_step"] == 0 for r in ref), "reference traces must fit the full context"
    rows = []
    settings = [("windows", c) for c in contexts] + [("truncate", 0)]
    for policy, c in settings:
        t0 = time.perf_counter()
        pairs = []
        for r, it in zip(ref, windowed):
            try:
                pairs.append((r, small.score(it, policy, c)))
            except TraceTooLong:  # truncate: the problem and response alone exceed the small context
                continue
        ref_kept, got = [r for r, _ in pairs], [g for _, g in pairs]
        if not pairs:
            rows.append({"policy": policy, "context_tokens": c if policy == "windows" else None, "traces": 0})
            continue
        step_ref = [x for r, g in pairs for x in r["steps"][g["first_step"]:]]
        step_got = [x for g in got for x in g["steps"]]
        contexts_seen = [t for g in got for t in g["context"]]
        rows.append({
            "policy": policy, "context_tokens": c if policy == "windows" else None, "traces": len(pairs),
            "step_pearson": _r(pearson(step_ref, step_got)), "step_spearman": _r(spearman(step_ref, step_got)),
            "steps_compared": len(step_got),
            "score_pearson": _r(pearson([r["score"] for r in ref_kept], [g["score"] for g in got])),
            "score_spearman": _r(spearman([r["score"] for r in ref_kept], [g["score"] for g in got])),
            "mean_step_pearson": _r(pearson([r["mean_step"] for r in ref_kept], [g["mean_step"] for g in got])),
            "mean_step_spearman": _r(spearman([r["mean_step"] for r in ref_kept], [g["mean_step"] for g in got])),
            "windows_mean": _r(statistics.fmean(g["windows"] for g in got)),
            "context_tokens_mean": _r(statistics.fmean(contexts_seen)) if contexts_seen else None,
            "context_tokens_min": min(contexts_seen) if contexts_seen else None,
            "tokens_ratio_vs_full": _r(sum(g["tokens"] for g in got) / sum(r["tokens"] for r in ref_kept)),
            "wall_seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # a long run shows its rows as they come
    return {"window_length": small.prm.max_length, "traces_windowed": len(windowed),
            "trace_tokens_median": statistics.median(full_length(full.prm, it) for it in windowed), "rows": rows}


def paired_bootstrap(labels: list[bool], a: list[float], b: list[float], reps: int = 2000, seed: int = 0) -> dict:
    """95% interval of AUROC(a) − AUROC(b), resampling traces with replacement (both modes on the same draw)."""
    rng = random.Random(seed)
    n, diffs = len(labels), []
    for _ in range(reps):
        idx = [rng.randrange(n) for _ in range(n)]
        lab = [labels[i] for i in idx]
        ua, ub = auroc([a[i] for i in idx], lab), auroc([b[i] for i in idx], lab)
        if ua is not None and ub is not None:
            diffs.append(ua - ub)
    diffs.sort()
    return {"diff_low": _r(diffs[int(0.025 * len(diffs))]), "diff_high": _r(diffs[int(0.975 * len(diffs)) - 1]),
            "reps": len(diffs)}


def long_traces(scorer: CachedScorer, pairs: list[tuple[dict, PRMInput]], context_tokens: int) -> dict:
    labels = [bool(rec["correct"]) for rec, _ in pairs]
    by_mode: dict[str, list[dict]] = {}
    for mode in ("truncate", "windows", "auto"):  # auto last: it reuses cached forwards of the other two
        t0 = time.perf_counter()
        by_mode[mode] = [scorer.score(item, mode, context_tokens) for _, item in pairs]
        print(f"  {mode}: {time.perf_counter() - t0:.0f} s wall", file=sys.stderr, flush=True)
    lengths = [full_length(scorer.prm, item) for _, item in pairs]
    out: dict[str, Any] = {
        "traces": len(pairs), "correct": sum(labels), "over_context": sum(n > scorer.prm.max_length for n in lengths),
        "trace_tokens": {"median": statistics.median(lengths), "mean": round(statistics.fmean(lengths)),
                         "max": max(lengths)},
        "auroc_of_minus_length": _r(auroc([-n for n in lengths], labels)),
        "context_tokens": context_tokens, "modes": {}}
    for mode, rows in by_mode.items():
        windows = [r["windows"] for r in rows]
        out["modes"][mode] = {
            "auroc": _r(auroc([r["score"] for r in rows], labels)),
            "auroc_mean_step": _r(auroc([r["mean_step"] for r in rows], labels)),
            "auroc_trajectory": _r(auroc([r["traj"] for r in rows], labels)) if rows[0]["traj"] is not None else None,
            "steps_scored": sum(len(r["steps"]) for r in rows), "tokens_scored": sum(r["tokens"] for r in rows),
            "forward_seconds": round(sum(r["seconds"] for r in rows), 1),
            "windowed_traces": sum(w > 1 for w in windows), "windows_mean": _r(statistics.fmean(windows)),
            "windows_median": statistics.median(windows), "windows_max": max(windows)}
    steps_total = sum(it.num_steps for _, it in pairs)
    out["steps_total"] = steps_total
    base = out["modes"]["truncate"]
    for mode in ("windows", "auto"):
        m = out["modes"][mode]
        m["tokens_ratio_vs_truncate"] = _r(m["tokens_scored"] / base["tokens_scored"])
        m["seconds_ratio_vs_truncate"] = _r(m["forward_seconds"] / base["forward_seconds"])
        m["auroc_diff_vs_truncate"] = paired_bootstrap(labels, [r["score"] for r in by_mode[mode]],
                                                       [r["score"] for r in by_mode["truncate"]])
    return out


def fixture_figure(prm_full: CachedScorer, prm_small: CachedScorer) -> dict:
    """The correlation tests/test_long_traces.py asserts, on its fixture."""
    items = [it for _, it in load_items(FIXTURE, prm_full.prm, lambda r: True)]
    return correlation(prm_full, prm_small, items, [FIXTURE_CONTEXT_TOKENS])


# ---------------------------------------------------------------------------------------------- main
def _sample(pairs: list[tuple[dict, PRMInput]], every: int) -> list[tuple[dict, PRMInput]]:
    """Every ``every``-th record in the order of a hash of (problem idx, model): deterministic, not by length."""
    key = lambda p: hashlib.sha1(f"{p[0]['idx']}|{p[0]['model']}".encode()).hexdigest()  # noqa: E731
    return sorted(pairs, key=key)[::every]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", default="fluxprm-mini")
    ap.add_argument("--parts", default="fixture,correlation,long")
    ap.add_argument("--problems", choices=("dev", "all"), default="dev",
                    help="dev: AMC23 problems idx %% 4 == 3, the ones fluxprm-mini was not trained on")
    ap.add_argument("--window-length", type=int, default=512, help="the artificially small context of part 1")
    ap.add_argument("--contexts", default="0,64,128,256", help="context_tokens values of the sweep")
    ap.add_argument("--corr-long-cot", action="store_true", help="part 1 on long thinking traces (that fit) only")
    ap.add_argument("--corr-every", type=int, default=1, help="part 1: keep every k-th trace (deterministic)")
    ap.add_argument("--context-tokens", type=int, default=None, help="part 2 (default: ScoreOptions' default)")
    ap.add_argument("--max-trace-tokens", type=int, default=8192,
                    help="part 2: only traces up to this many tokens (0: all); windows cost grows with length")
    ap.add_argument("--every", type=int, default=1, help="part 2: keep every k-th long trace (deterministic)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    parts = set(args.parts.split(","))
    keep_problem = (lambda r: r["idx"] % 4 == 3) if args.problems == "dev" else (lambda r: True)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_before": os.getloadavg()},
        "model": args.model, "data": args.data.name, "problems": args.problems}
    if parts & {"fixture", "correlation"}:
        full = CachedScorer(fluxprm.load_prm(args.model, dtype="float32"))
        if "fixture" in parts:
            small = CachedScorer(fluxprm.load_prm(args.model, dtype="float32", max_length=FIXTURE_WINDOW_LENGTH))
            result["fixture"] = fixture_figure(full, small)
            print(json.dumps(result["fixture"]), file=sys.stderr, flush=True)
        if "correlation" in parts:
            small = CachedScorer(fluxprm.load_prm(args.model, dtype="float32", max_length=args.window_length))
            keep = (lambda r: keep_problem(r) and r["long_cot"]) if args.corr_long_cot else keep_problem
            pairs = [p for p in load_items(args.data, full.prm, keep) if full_length(full.prm, p[1]) <= full.prm.max_length]
            items = [it for _, it in _sample(pairs, args.corr_every)]
            result["correlation"] = correlation(full, small, items, [int(c) for c in args.contexts.split(",")])
            result["correlation"].update(long_cot_only=args.corr_long_cot, every=args.corr_every)
            print(json.dumps(result["correlation"]), file=sys.stderr, flush=True)
    if "long" in parts:
        from fluxprm.engine.options import DEFAULT_CONTEXT_TOKENS

        scorer = CachedScorer(fluxprm.load_prm(args.model))
        pairs = load_items(args.data, scorer.prm, lambda r: bool(r["long_cot"]) and keep_problem(r))
        population = {"traces": len(pairs), "correct": sum(bool(r["correct"]) for r, _ in pairs),
                      "auroc_of_minus_length": _r(auroc([-full_length(scorer.prm, it) for _, it in pairs],
                                                        [bool(r["correct"]) for r, _ in pairs]))}
        if args.max_trace_tokens:
            pairs = [p for p in pairs if full_length(scorer.prm, p[1]) <= args.max_trace_tokens]
        pairs = _sample(pairs, args.every)
        result["long"] = long_traces(scorer, pairs, DEFAULT_CONTEXT_TOKENS if args.context_tokens is None
                                     else args.context_tokens)
        result["long"].update(dtype=str(scorer.prm.dtype).removeprefix("torch."), every=args.every,
                              max_trace_tokens=args.max_trace_tokens, population_before_length_cap=population)
    result["machine"]["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
