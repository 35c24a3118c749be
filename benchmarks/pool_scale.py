"""How ``fluxprm score`` scales with the size of a pool, in one process and on a 2-actor Ray pool.

A distillation pool of 59K–1M traces is scored in one streaming job, so two things must hold: the cost per
record must not grow with the number of records (no quadratic bookkeeping, no per-record state kept until
the end) and memory must not grow with it either. And a pool on a Ray cluster should go as fast as its
actors allow. This script checks all three on synthetic pools of 1K, 10K and 100K short traces (≈100 tokens
each, written deterministically into a temporary folder) with the tiny random-weight Qwen PRM of the tests:

- ``single``: ``fluxprm score POOL -m TINY --threads 1`` — one process, one torch thread;
- ``ray``: the same plus ``--ray --address ADDR --workers 2 --cpus-per-worker 1`` — a driver and two actors
  with one torch thread each, on a local 2-CPU Ray cluster this script starts (``ray.init``) and stops.

Every run is a ``fluxprm`` subprocess. Per run: ``records_per_s`` and ``tokens_per_s`` of the scoring job (the
job's own time, from the ``tokens`` and ``tokens/s`` it prints: model loading and cluster start-up are a fixed
cost paid once, reported apart as ``wall_s``), ``wall_records_per_s`` (records over the whole subprocess), the
driver's peak RSS (``ru_maxrss`` of the process, from ``wait4``) and CPU time per record, and, for Ray, each
actor's peak RSS (sampled with psutil every 0.2 s: the actors are children of this script's raylet, not of
the driver). The Ray run's scores file is compared byte for byte with the single-process one. Then the ratios
the floors are about (``large`` is the largest size, ``small`` the smallest):

- ``single_records_per_s_large_vs_small``: ≥ 0.9 means cost linear in the number of records;
- ``single_driver_rss_large_vs_small`` (and the Ray driver's and actors'): ≤ 1.2 means memory flat;
- ``ray_vs_single_records_per_s_at_large``: ≥ 1.6 for 2 actors against one 1-thread process;
- ``pair_vs_single_records_per_s_at_large``: what this machine allows two 1-thread workers at all — two
  independent ``single`` processes run at the same time, each on half of the largest pool, no Ray (their
  records/s added up) — and ``ray_vs_pair_records_per_s_at_large``, the share of that ceiling Ray reaches.

The load average before and after each run is in the output: on a machine shared with other work the
ratios mean little. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pool_scale.py [--sizes 1000 10000 100000] [--chunk-size 1024] [--no-ray]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny checkpoint builders the tests use

from builders import build_qwen_prm  # noqa: E402

WORDS = ("we add the two numbers and carry the one so the partial sum is now larger than before then check it "
         "again by subtracting the second term from the total which gives back the first term as expected").split()
ACTOR_MARKERS = ("_PoolActor", "MapWorker")  # how Ray titles a Ray Data map_batches actor process


def write_pool(path: Path, n: int, seed: int = 0) -> None:
    """``n`` R1-style traces of 1–4 steps, ≈50–150 tokens each, the same for the same ``n`` and ``seed``."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = rng.randint(1, 999), rng.randint(1, 999)
            steps = []
            for k in range(rng.randint(1, 4)):
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24)))
                steps.append(f"Step {k + 1}: {words}.")
            response = "<think>" + "\n\n".join(steps) + f"</think>The answer is {a + b}."
            fh.write(json.dumps({"id": f"t{i}", "problem": f"What is {a} + {b}?", "response": response}) + "\n")


def _summary_number(stderr: str, name: str) -> float:
    """A number from the summary table ``fluxprm score`` prints: a row of column names (``records``,
    ``tokens``, ``tokens/s``, ...) over a row of values, wrapped to the terminal's width."""
    lines = stderr.splitlines()
    for header, values in zip(lines, lines[1:]):
        names, cells = header.split(), values.split()
        if name in names and len(names) == len(cells):
            return float(cells[names.index(name)].replace(",", ""))
    raise RuntimeError(f"no {name!r} in fluxprm's output:\n{stderr[-2000:]}")


class ActorRss:
    """Peak RSS of each Ray Data actor process among this process's descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self._psutil, self.interval = psutil, interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ActorRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = self._psutil.Process()
        while not self._stop.is_set():
            for proc in me.children(recursive=True):
                try:
                    title = " ".join(proc.cmdline()) or proc.name()
                    if any(marker in title for marker in ACTOR_MARKERS):
                        rss = proc.memory_info().rss
                        self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), rss)
                except (self._psutil.NoSuchProcess, self._psutil.AccessDenied, self._psutil.ZombieProcess):
                    continue
            self._stop.wait(self.interval)


def run_score(args: list[str], out: Path, env: dict[str, str], watch_actors: bool) -> dict[str, object]:
    """One ``fluxprm score`` subprocess: its job throughput, wall time and peak RSS (driver, actors)."""
    log = out.with_suffix(".log")
    load_before = os.getloadavg()
    with open(log, "w") as err:
        monitor = ActorRss() if watch_actors else None
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "fluxprm", "score", *args, "-o", str(out)],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
        if monitor:
            monitor.__enter__()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if monitor:
                monitor.__exit__()
        wall = time.perf_counter() - start
    stderr = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"fluxprm score failed ({proc.returncode}):\n{stderr[-3000:]}")
    records = _summary_number(stderr, "records")
    tokens = _summary_number(stderr, "tokens")
    tokens_per_s = _summary_number(stderr, "tokens/s")
    job_s = tokens / tokens_per_s if tokens_per_s else float("nan")
    result: dict[str, object] = {
        "records": int(records), "tokens": int(tokens), "tokens_per_record": round(tokens / records, 1),
        "job_s": round(job_s, 2), "wall_s": round(wall, 2),
        "records_per_s": round(records / job_s, 1), "tokens_per_s": round(tokens_per_s),
        "wall_records_per_s": round(records / wall, 1),
        "driver_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        # CPU the driver spent (start-up included): with Ray it reads, ships and writes but never runs the model,
        # so its CPU per extra record (in "ratios") bounds how many records/s one driver can feed a cluster
        "driver_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "load_before": round(load_before[0], 2), "load_after": round(os.getloadavg()[0], 2),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    if monitor is not None:
        result["actor_peak_rss_mb"] = sorted(round(v / 2**20, 1) for v in monitor.peaks.values())
    return result


def run_pair(pool: Path, folder: Path, common: list[str], env: dict[str, str]) -> dict[str, object]:
    """Two independent 1-thread ``fluxprm score`` processes at once, each on one half of ``pool``: the
    throughput two workers can have on this machine with no coordination at all (the ceiling for Ray)."""
    lines = pool.read_bytes().splitlines(keepends=True)
    halves = [folder / "pair-a.jsonl", folder / "pair-b.jsonl"]
    halves[0].write_bytes(b"".join(lines[: len(lines) // 2]))
    halves[1].write_bytes(b"".join(lines[len(lines) // 2 :]))
    results: list[dict[str, object]] = [{}, {}]

    def one(k: int) -> None:
        results[k] = run_score([str(halves[k]), *common, "--threads", "1"], folder / f"pair-out-{k}.jsonl", env,
                               False)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not all(results):
        raise RuntimeError("a pair run failed")
    return {"records": sum(r["records"] for r in results),
            # both jobs run over the same span (their start-up is the same), so their rates add up
            "records_per_s": round(sum(r["records_per_s"] for r in results), 1),
            "tokens_per_s": sum(r["tokens_per_s"] for r in results),
            "job_s": [r["job_s"] for r in results], "wall_s": [r["wall_s"] for r in results],
            "load_before": results[0]["load_before"], "load_after": results[0]["load_after"]}


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--no-ray", action="store_true", help="only the single-process runs")
    parser.add_argument("--chunk-size", type=int, default=1024)
    cli = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    folder = Path(tempfile.mkdtemp(prefix="fluxprm-pool-scale-"))
    model = build_qwen_prm(None)
    common = ["-m", str(model), "--dtype", "float32", "--device", "cpu", "--batching", "padded",
              "--chunk-size", str(cli.chunk_size)]
    report: dict[str, object] = {"model": "tiny random-weight Qwen2 PRM (tests/builders.py build_qwen_prm)",
                                 "cpus": os.cpu_count(), "load_at_start": os.getloadavg(), "chunk_size": cli.chunk_size, "runs": {}}
    runs: dict[str, dict[int, dict[str, object]]] = {"single": {}, "ray": {}, "pair": {}}
    ray = None
    try:
        pools = {}
        for n in cli.sizes:
            pools[n] = folder / f"pool-{n}.jsonl"
            write_pool(pools[n], n)
        address = None
        if not cli.no_ray:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            address = ray.get_runtime_context().gcs_address
            # ray.init set the cluster's auth mode in this process's environment; the drivers need it too
            env.update({k: v for k, v in os.environ.items() if k.startswith("RAY_") and k != "RAY_ADDRESS"})
        for n in cli.sizes:
            single = run_score([str(pools[n]), *common, "--threads", "1"], folder / f"single-{n}.jsonl", env, False)
            runs["single"][n] = single
            print(f"single {n}: {json.dumps(single)}", file=sys.stderr, flush=True)
            (folder / f"single-{n}.jsonl").unlink()
            if address:
                on_ray = run_score([str(pools[n]), *common, "--ray", "--address", address, "--workers", "2",
                                    "--cpus-per-worker", "1"], folder / f"ray-{n}.jsonl", env, True)
                on_ray["identical_to_single"] = on_ray["sha256"] == single["sha256"]
                runs["ray"][n] = on_ray
                print(f"ray {n}: {json.dumps(on_ray)}", file=sys.stderr, flush=True)
                (folder / f"ray-{n}.jsonl").unlink()
        if address:
            ray.shutdown()  # the pair runs without Ray: nothing else may hold a CPU
            ray = None
        large_n = max(cli.sizes)
        runs["pair"][large_n] = run_pair(pools[large_n], folder, common, env)
        print(f"pair {large_n}: {json.dumps(runs['pair'][large_n])}", file=sys.stderr, flush=True)
    finally:
        if ray is not None:
            ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)

    report["runs"] = {kind: {str(n): r for n, r in by_size.items()} for kind, by_size in runs.items() if by_size}
    small, large = min(cli.sizes), max(cli.sizes)
    ratios: dict[str, object] = {"sizes": [small, large]}
    for kind, by_size in runs.items():
        if kind != "pair" and small in by_size and large in by_size and small != large:
            ratios[f"{kind}_records_per_s_large_vs_small"] = _ratio(by_size[large]["records_per_s"],
                                                                    by_size[small]["records_per_s"])
            ratios[f"{kind}_driver_rss_large_vs_small"] = _ratio(by_size[large]["driver_peak_rss_mb"],
                                                                 by_size[small]["driver_peak_rss_mb"])
            ratios[f"{kind}_driver_cpu_ms_per_extra_record"] = round(
                1000 * (by_size[large]["driver_cpu_s"] - by_size[small]["driver_cpu_s"]) / (large - small), 3)
            if kind == "ray":
                ratios["ray_actor_rss_large_vs_small"] = _ratio(max(by_size[large]["actor_peak_rss_mb"] or [0]),
                                                                max(by_size[small]["actor_peak_rss_mb"] or [0]))
    if large in runs["ray"]:
        ratios["ray_vs_single_records_per_s_at_large"] = _ratio(runs["ray"][large]["records_per_s"],
                                                                runs["single"][large]["records_per_s"])
        ratios["ray_vs_single_wall_at_large"] = _ratio(runs["single"][large]["wall_s"], runs["ray"][large]["wall_s"])
    if large in runs["pair"]:
        ratios["pair_vs_single_records_per_s_at_large"] = _ratio(runs["pair"][large]["records_per_s"],
                                                                 runs["single"][large]["records_per_s"])
        if large in runs["ray"]:
            ratios["ray_vs_pair_records_per_s_at_large"] = _ratio(runs["ray"][large]["records_per_s"],
                                                                   runs["pair"][large]["records_per_s"])
    report["ratios"] = ratios
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
