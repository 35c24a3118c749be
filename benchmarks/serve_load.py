"""Load on ``fluxprm serve``: requests/s and latency from concurrent clients, dynamic batching on vs off.

For each scenario (``short``: RL-style completions of ≈300 tokens, ``data/qwen25math_short_completions.jsonl``;
``long``: Sky-T1 thinking traces of ≈2,400 tokens, ``data/skythought_amc23_sample.jsonl``) and each mode
(``off`` = ``--no-dynamic-batching``, one request per scoring call, i.e. one per forward; ``on`` = dynamic
batching), the script starts ``fluxprm serve --port 0`` as a subprocess, waits for ``/health``, warms it up,
then drives it from ``--clients`` concurrent clients (asyncio + httpx, loopback, one trace per request, the
traces cycled) until ``--requests`` requests have been answered, and stops it with SIGTERM. Modes alternate
within each round (``--rounds``; the best round of each mode counts), so slow drift of a shared machine hits
both alike. Prints one JSON object::

    {"setup": {...}, "scenarios": {"short": {"off": {...}, "on": {...}, "ratio_on_off": x}, "long": {...}}}

with, per mode: ``requests_per_s``, ``p50_ms``, ``p99_ms``, ``errors`` (by status code or exception name),
``requests``, ``seconds``, the server's own counters (``batches``, ``max_batch_requests``) and what its
``/health`` says dynamic batching does with this model and device (``dynamic_batching``).

Usage: ``python benchmarks/serve_load.py [--requests-short 256] [--requests-long 48] [--clients 32]
[--model NAME_OR_FOLDER] [--threads N] [--endpoint score|get_reward|pooling] [--rounds 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
DATA = {"short": HERE / "data" / "qwen25math_short_completions.jsonl",
        "long": HERE / "data" / "skythought_amc23_sample.jsonl"}


def load_records(scenario: str) -> list[dict]:
    """Trace records of a scenario: ``problem`` and ``response`` (and ``gold`` where the file has it)."""
    out = []
    for line in DATA[scenario].read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        out.append({"id": str(r.get("id", len(out))), "problem": r.get("problem", r.get("question")),
                    "response": r["response"], "gold": r.get("gold", r.get("gt"))})
    return out


def body_for(endpoint: str, record: dict) -> dict:
    """One request carrying one trace, in the endpoint's protocol."""
    if endpoint == "score":
        return {"records": [{k: record[k] for k in ("id", "problem", "response")}]}
    if endpoint == "get_reward":
        prompt = f"<|im_start|>user\n{record['problem']}<|im_end|>\n<|im_start|>assistant\n"
        return {"query": [prompt + record["response"] + "<|im_end|>"], "prompts": [prompt],
                "labels": [str(record["gold"] or "")]}
    steps = [s for s in record["response"].split("\n\n") if s.strip()]
    return {"messages": [{"role": "user", "content": record["problem"]},
                         {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]}


class Server:
    """``fluxprm serve`` in a subprocess on a free loopback port."""

    def __init__(self, args: argparse.Namespace, dynamic: bool):
        cmd = [sys.executable, "-m", "fluxprm", "serve", "--port", "0", "--max-queue", "100000",
               "--max-request-traces", "100000", "--dynamic-batching" if dynamic else "--no-dynamic-batching"]
        if args.model:
            cmd += ["-m", args.model]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        cmd += args.server_args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")), daemon=True).start()
        deadline = time.monotonic() + 600
        while not any("listening on http://" in ln for ln in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fluxprm serve did not start:\n" + "".join(self.lines))
            time.sleep(0.05)
        self.url = next(ln for ln in self.lines if "listening on" in ln).split("listening on ")[1].split()[0]
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fluxprm serve never became ready:\n" + "".join(self.lines))
            time.sleep(0.1)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


async def drive(url: str, bodies: list[dict], path: str, count: int, clients: int) -> dict[str, Any]:
    """``count`` requests from ``clients`` concurrent clients; latency of each, errors by kind."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_index = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            start = time.perf_counter()
            try:
                r = await http.post(path, json=bodies[i % len(bodies)])
                ok = r.status_code == 200
                kind = str(r.status_code)
            except httpx.HTTPError as exc:
                ok, kind = False, type(exc).__name__
            latencies.append(time.perf_counter() - start)
            if not ok:
                errors[kind] = errors.get(kind, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        seconds = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

    return {"requests": count, "seconds": round(seconds, 2), "requests_per_s": round(count / seconds, 3),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": errors}


def run_mode(args: argparse.Namespace, scenario: str, dynamic: bool) -> dict[str, Any]:
    path = {"score": "/v1/score", "get_reward": "/get_reward", "pooling": "/pooling"}[args.endpoint]
    bodies = [body_for(args.endpoint, r) for r in load_records(scenario)]
    count = args.requests_short if scenario == "short" else args.requests_long
    server = Server(args, dynamic)
    try:
        asyncio.run(drive(server.url, bodies, path, min(args.clients, count), args.clients))  # warm-up
        health = server.health()
        before = health["queue"]
        result = asyncio.run(drive(server.url, bodies, path, count, args.clients))
        after = server.health()["queue"]
        result["dynamic_batching"] = health.get("dynamic_batching")
    finally:
        code = server.stop()
    result["batches"] = after["batches"] - before["batches"]
    result["max_batch_requests"] = after["max_batch_requests"]
    result["exit_code"] = code
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests-short", type=int, default=256, help="requests per mode, short scenario")
    parser.add_argument("--requests-long", type=int, default=48, help="requests per mode, long scenario")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--scenarios", default="short,long")
    parser.add_argument("--model", default=None, help="-m for fluxprm serve  [default: fluxprm-mini]")
    parser.add_argument("--threads", type=int, default=None, help="--threads for fluxprm serve")
    parser.add_argument("--endpoint", choices=("score", "get_reward", "pooling"), default="score")
    parser.add_argument("--rounds", type=int, default=1, help="alternating off/on rounds; the best of each counts")
    parser.add_argument("server_args", nargs="*", help="more fluxprm serve options, after --")
    args = parser.parse_args()
    import torch

    report: dict[str, Any] = {"setup": {
        "model": args.model or "fluxprm-mini", "clients": args.clients, "endpoint": args.endpoint,
        "rounds": args.rounds, "threads": args.threads or torch.get_num_threads(), "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cores", "python": platform.python_version(),
        "server_args": args.server_args, "load_before": os.getloadavg()[0]}, "scenarios": {}}
    for scenario in args.scenarios.split(","):
        best: dict[str, dict] = {}
        for _ in range(args.rounds):
            for mode, dynamic in (("off", False), ("on", True)):
                result = run_mode(args, scenario, dynamic)
                print(f"{scenario} {mode}: {result['requests_per_s']} requests/s, p50 {result['p50_ms']} ms, "
                      f"p99 {result['p99_ms']} ms, errors {result['errors'] or 0}", file=sys.stderr, flush=True)
                if mode not in best or result["requests_per_s"] > best[mode]["requests_per_s"]:
                    best[mode] = result
        best["ratio_on_off"] = round(best["on"]["requests_per_s"] / best["off"]["requests_per_s"], 3)
        report["scenarios"][scenario] = best
    report["setup"]["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
