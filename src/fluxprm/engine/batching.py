"""Batching chosen by measurement: one trace per forward, or length-sorted padded batches.

On a GPU padded batches always win. On a CPU padding is often pure waste and one trace per forward is
faster, so with ``auto`` both are measured once per (model, device, dtype, threads) on synthetic
sequences and the verdict is cached on disk: every run — and every resumed run — of the same set-up
batches the same way and so writes the same bytes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from fluxprm.embedded import cache_dir
from fluxprm.models.base import Encoded, ItemOutput, TransformerPRM
from fluxprm.steps import PRMInput

__all__ = ["Batcher", "measure_batching", "resolve_batching"]


def _time_forward(prm: TransformerPRM, batches: list[list[Encoded]]) -> float:
    start = time.perf_counter()
    for batch in batches:
        prm.forward(batch)
    return time.perf_counter() - start


def measure_batching(prm: TransformerPRM, length: int = 384, n: int = 4) -> dict[str, float]:
    """Tokens/s of one-trace-per-forward vs one padded batch, on synthetic sequences of mixed length.

    Lengths ``length·(1, 3/4, 1/2, 1/4)`` mimic a length-sorted bucket; the ids are arbitrary text
    tokens (the cost of a forward does not depend on which tokens they are).
    """
    length = max(8, min(length, prm.max_length))
    gen = torch.Generator().manual_seed(0)
    vocab = min(int(getattr(prm.tokenizer, "vocab_size", 1000) or 1000), 30000)
    encs = []
    signals = prm.trace_signals(PRMInput("x", [], ["x"]))  # a model whose trajectory head reads signals needs some
    for k in range(n):
        size = max(4, length * (n - k) // n)
        ids = torch.randint(100, vocab, (size,), generator=gen).tolist()
        encs.append(Encoded(ids, [size - 1], num_thinking=0, signals=signals))
    _time_forward(prm, [encs[-1:]])  # warm-up
    tokens = sum(len(e.input_ids) for e in encs)
    single = tokens / _time_forward(prm, [[e] for e in encs])
    padded = tokens / _time_forward(prm, [encs])
    return {"single": single, "padded": padded}


def resolve_batching(prm: TransformerPRM, requested: str) -> tuple[str, str]:
    """The batching to use and how it was chosen ("given", "device", "measured", "measured, cached").

    ``auto`` on a GPU is padded batches (always faster there). On a CPU the engine measures both on
    synthetic sequences once per (model, device, dtype, threads) and caches the verdict, so every run
    — and every resumed run — of the same set-up batches the same way and writes the same bytes.
    """
    if requested in ("single", "padded"):
        return requested, "given"
    if prm.device.type == "cuda":
        return "padded", "device"
    key = f"{prm.name}|{prm.format}|{prm.device}|{prm.dtype}|{torch.get_num_threads()}"
    path = cache_dir() / "batching.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key], "measured, cached"
    speeds = measure_batching(prm)
    mode = max(speeds, key=speeds.get)
    known[key] = mode
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"batching.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a re-measurement next time
    return mode, "measured"


class Batcher:
    """Groups a chunk's encodings into forward batches: one per trace, or length-sorted padded batches."""

    def __init__(self, prm: TransformerPRM, mode: str, batch_tokens: int):
        self.prm, self.batch_tokens = prm, batch_tokens
        self.mode, self.how = resolve_batching(prm, mode)

    def batches(self, encs: list[tuple[Any, Encoded]]) -> list[list[tuple[Any, Encoded]]]:
        encs = sorted(encs, key=lambda x: len(x[1].input_ids))
        if self.mode == "single":
            return [[e] for e in encs]
        out: list[list[tuple[Any, Encoded]]] = []
        cur: list[tuple[Any, Encoded]] = []
        for e in encs:
            width = len(e[1].input_ids)  # sorted ascending: the newest is the widest
            if cur and width * (len(cur) + 1) > self.batch_tokens:
                out.append(cur)
                cur = []
            cur.append(e)
        if cur:
            out.append(cur)
        return out

    def run(self, encs: list[tuple[Any, Encoded]],
            on_forward: Callable[[int, int], None] | None = None) -> dict[Any, ItemOutput]:
        """Every encoding's output, by key. ``on_forward(tokens_done, tokens_total)`` is called before the first
        forward and after each one (tokens, not traces: the batches run shortest first, so a count of traces
        would run ahead of the time)."""
        results: dict[Any, ItemOutput] = {}
        total = sum(len(e.input_ids) for _, e in encs) if on_forward is not None else 0
        done = 0
        if on_forward is not None:
            on_forward(0, total)
        for batch in self.batches(encs):
            for (key, _), out in zip(batch, self.prm.forward([e for _, e in batch])):
                results[key] = out
            if on_forward is not None:
                done += sum(len(e.input_ids) for _, e in batch)
                on_forward(done, total)
        return results
