"""Dev-set quality of a fluxprm checkpoint (default: the embedded fluxprm-mini). Prints JSON.

- ``pool_auroc``: AUROC of ``score`` separating correct from incorrect responses on the problem-
  disjoint dev slices of the Best-of-N pools (Sky-T1 AMC23 and Qwen2.5-Math MATH), per pool and pooled.
- ``bon``: Best-of-N accuracy on those dev problems — PRM pick vs random pick (expected) vs
  majority vote over the extracted answers.
- ``prmbench``: ProcessBench-style first-error F1 on PRMBench subset400: every item yields an
  erroneous sample (modified process; target = first error step) and a correct one (original
  process; target = "no error"); the prediction is the first step whose reward is below a threshold
  chosen on the *training* PRMBench file; F1 = harmonic mean of the two accuracies.

Backbone features come from the same cache ``fluxprm train`` fills, so re-evaluating new heads
costs seconds; ``--check`` re-scores a few traces through ``prm.score`` to prove the shortcut gives
identical rewards. Usage: ``python scripts/mini/evaluate.py [-m CKPT] [--data build/mini]``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import torch

from fluxprm.engine import prepare
from fluxprm.models import load_prm
from fluxprm.steps import StepConfig
from fluxprm.train import TrainConfig, extract_features
from fluxprm.train_data import Example
from fluxprm.traces import FieldMap, Trace, iter_traces


def auroc(scores: list[float], labels: list[bool]) -> float | None:
    """Probability that a random positive outranks a random negative (ties count half)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def traces_of(path: Path, fields: FieldMap | None = None) -> list[Trace]:
    return [t for t in iter_traces([str(path)], fields) if isinstance(t, Trace)]


def rewards(prm, traces: list[Trace], cfg: TrainConfig) -> list[tuple[list[float], float | None] | None]:
    """(step rewards, trajectory reward) per trace through cached backbone features + the heads;
    None for a trace `fluxprm score` would reject as too long."""
    steps = StepConfig()
    examples = []
    for t in traces:
        inp = prepare(t, steps)
        examples.append(Example(t.id, inp.problem, inp.thinking_steps, inp.response_steps, [], [], None, None))
    feats = extract_features(prm, examples, cfg)
    out = []
    with torch.inference_mode():
        for f in feats:
            if f is None:
                out.append(None)
                continue
            step = prm.head(f.steps.float()).tolist()
            traj = prm.trajectory(f.last.float()[None])
            out.append((step, float(traj[0]) if traj is not None else None))
    return out


def trace_score(prm, step: list[float], traj: float | None) -> float:
    s = sum(step) / len(step) if step else 0.0
    return s + (prm.alpha * traj if traj is not None else 0.0)


def first_error(step: list[float], threshold: float) -> int:
    for i, r in enumerate(step):
        if r < threshold:
            return i
    return -1


def prmbench_samples(prm, path: Path, cfg: TrainConfig) -> list[tuple[list[float], int]]:
    """(step rewards, target first error or -1) for modified and original processes of each item."""
    modified = traces_of(path)
    original = traces_of(path, FieldMap(steps="original_process"))
    out = []
    for traces, is_modified in ((modified, True), (original, False)):
        for t, r in zip(traces, rewards(prm, traces, cfg)):
            if r is None:
                continue
            step = r[0]
            if is_modified:
                bad = [i for i, lab in enumerate(t.step_labels or []) if lab == 0.0]
                if not bad:
                    continue
                out.append((step, bad[0]))
            else:
                out.append((step, -1))
    return out


def f1_at(samples: list[tuple[list[float], int]], threshold: float) -> dict[str, float]:
    err = [first_error(s, threshold) == y for s, y in samples if y >= 0]
    ok = [first_error(s, threshold) == y for s, y in samples if y < 0]
    acc_err = sum(err) / max(len(err), 1)
    acc_ok = sum(ok) / max(len(ok), 1)
    f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err + acc_ok else 0.0
    return {"f1": round(f1, 4), "acc_erroneous": round(acc_err, 4), "acc_correct": round(acc_ok, 4),
            "threshold": round(threshold, 4), "n_erroneous": len(err), "n_correct": len(ok)}


def best_threshold(samples: list[tuple[list[float], int]]) -> float:
    grid = sorted({round(r, 3) for s, _ in samples for r in s})
    grid = grid[:: max(1, len(grid) // 200)] + [1.01]
    return max(grid, key=lambda th: f1_at(samples, th)["f1"])


def pool_eval(prm, path: Path, cfg: TrainConfig, group_key) -> dict:
    traces = [t for t in traces_of(path) if t.correct is not None]
    rs = rewards(prm, traces, cfg)
    skipped = sum(r is None for r in rs)
    traces = [t for t, r in zip(traces, rs) if r is not None]
    rs = [r for r in rs if r is not None]
    scores = [trace_score(prm, s, tr) for s, tr in rs]
    labels = [bool(t.correct) for t in traces]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(traces):
        groups[group_key(t)].append(i)
    pick, rand, major = [], [], []
    for idx in groups.values():
        best = max(idx, key=lambda i: scores[i])
        pick.append(labels[best])
        rand.append(sum(labels[i] for i in idx) / len(idx))
        preds = [str(traces[i].meta.get("pred")) for i in idx]
        top = Counter(preds).most_common(1)[0][0]
        major.append(any(labels[i] for i in idx if str(traces[i].meta.get("pred")) == top))
    return {"n": len(traces), "too_long_skipped": skipped, "problems": len(groups), "auroc": _r(auroc(scores, labels)),
            "bon_prm": _r(sum(pick) / len(pick)), "bon_random": _r(sum(rand) / len(rand)),
            "bon_majority": _r(sum(major) / len(major)), "_scores": scores, "_labels": labels}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default="fluxprm-mini")
    ap.add_argument("--data", type=Path, default=Path("build/mini"))
    ap.add_argument("--check", type=int, default=3, help="traces re-scored through prm.score as a cross-check")
    args = ap.parse_args()
    prm = load_prm(args.model, device="cpu")
    cfg = TrainConfig(base=prm.config.base, feature_layers=prm.config.feature_layers, max_length=prm.max_length)

    sky = pool_eval(prm, args.data / "dev_skythought.jsonl", cfg, lambda t: str(t.meta.get("idx")))
    qwen = pool_eval(prm, args.data / "dev_qwen_pool.jsonl", cfg, lambda t: str(t.meta.get("group")))
    pooled = auroc(sky["_scores"] + qwen["_scores"], sky["_labels"] + qwen["_labels"])
    train_samples = prmbench_samples(prm, args.data / "train_prmbench.jsonl", cfg)
    threshold = best_threshold(train_samples)
    dev = f1_at(prmbench_samples(prm, args.data / "dev_prmbench_subset400.jsonl", cfg), threshold)

    check = []
    if args.check:
        sample = random.Random(0).sample(traces_of(args.data / "dev_skythought.jsonl"), args.check)
        fast = rewards(prm, sample, cfg)
        for t, (step, traj), real in zip(sample, fast, prm.score(sample)):
            check.append(max(abs(a - b) for a, b in zip(step + [traj], real.step_rewards + [real.trajectory_reward])))
    for d in (sky, qwen):
        d.pop("_scores"), d.pop("_labels")
    print(json.dumps({"model": args.model, "pool_auroc": _r(pooled), "skythought_dev": sky, "qwen_pool_dev": qwen,
                      "prmbench_subset400": dev, "prmbench_train_f1_at_threshold": f1_at(train_samples, threshold)["f1"],
                      "shortcut_max_abs_diff": max(check) if check else None}, indent=2))


if __name__ == "__main__":
    main()
