"""Dev-set quality of a fluxprm checkpoint (default: the embedded fluxprm-mini). Prints JSON.

Dev slices are problem-disjoint from everything fluxprm-mini trains on (``scripts/mini/build_data.py``):

- ``pools``: per Best-of-N pool — Sky-T1 AMC23, Qwen2.5-Math MATH, and the SkyThought MATH500 /
  OlympiadBench / Minerva pool split by dataset — plus ``long_thinking`` (every long Sky-T1 thinking trace
  of the dev slices): AUROC of ``score`` separating correct from incorrect responses, and Best-of-N
  accuracy — PRM argmax vs random pick (exact expectation) vs majority vote vs PRM-weighted vote over the
  pools' extracted answers (``pred``) vs the oracle. ``pooled_auroc`` is over every dev response once.
- ``prmbench``: ProcessBench-style first-error F1 on PRMBench subset400: every item yields an
  erroneous sample (modified process; target = first error step) and a correct one (original
  process; target = "no error"); the prediction is the first step whose reward is below a threshold
  chosen on the *training* PRMBench file, on rows the heads never fitted (on fitted rows the best threshold
  is optimistic): by default the one the checkpoint records (``--calibrate recorded``: ``fluxprm train``'s
  choice on its held-out rows, replaced for fluxprm-mini by ``kfold_threshold.py --record``'s out-of-fold one),
  else on the PRMBench rows of the problems the training run held out (``--calibrate heldout``, 457 samples for
  fluxprm-mini v2.4: a noisy choice);
  F1 = harmonic mean of the two accuracies.

Every figure has a 95 % percentile bootstrap interval (``*_ci``) resampling whole problems (PRMBench: items),
1,000 resamples, seed 0 (:func:`fluxprm.metrics.bootstrap_ci`); Best-of-N comparisons also carry the
interval of the *difference* (weighted vote − majority, argmax − random) over the same resamples.

Every metric comes from :mod:`fluxprm.metrics` and every trace score from
:func:`fluxprm.scores.combine` with the model's own ``aggregate`` and ``alpha``, so these numbers are
the ones ``fluxprm bon`` / ``fluxprm eval`` would report. Backbone features come from the same cache
``fluxprm train`` and ``scripts/mini/features.py`` fill, so re-evaluating new heads costs seconds;
``--check`` re-scores a few traces through ``fluxprm.score`` to prove the shortcut gives identical rewards.
Usage: ``python scripts/mini/evaluate.py [-m CKPT] [--data build/mini] [--limit N]``.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable

import torch

import fluxprm
from fluxprm import metrics
from fluxprm.models import load_prm
from fluxprm.models.resolve import resolve_model
from fluxprm.scores import combine
from fluxprm.steps import StepConfig, prepare, step_config_for
from fluxprm.train import TrainConfig, extract_features
from fluxprm.train.loop import heldout_bucket
from fluxprm.train.data import Example
from fluxprm.traces import FieldMap, Trace, iter_traces

Rewards = tuple[list[float], "float | None"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One scored response of a Best-of-N pool."""

    problem: str
    score: float
    correct: bool
    answer: Hashable | None
    dataset: str = ""
    long_cot: bool = False
    chars: int = 0  # thinking + response length: a score that mostly tracks it is not reading the reasoning


def traces_of(path: Path, fields: FieldMap | None = None, limit: int = 0) -> list[Trace]:
    traces = [t for t in iter_traces([str(path)], fields) if isinstance(t, Trace)]
    return traces[:limit] if limit else traces


def rewards(prm, traces: list[Trace], cfg: TrainConfig, steps: StepConfig) -> list[Rewards | None]:
    """(step rewards, trajectory reward) per trace through cached backbone features + the heads;
    None for a trace `fluxprm score` would reject as too long."""
    examples, signals = [], []
    for t in traces:
        inp = prepare(t, steps)
        examples.append(Example(t.id, inp.problem, inp.thinking_steps, inp.response_steps, [], [], None, None))
        signals.append(prm.trace_signals(inp))
    out: list[Rewards | None] = []
    with torch.inference_mode():
        for f, sig in zip(extract_features(prm, examples, cfg), signals):
            if f is None:
                out.append(None)
                continue
            traj = prm.trajectory(f.last.float()[None], None if sig is None else torch.tensor([sig]))
            out.append((prm.head(f.steps.float()).tolist(), float(traj[0]) if traj is not None else None))
    return out


def prmbench_samples(prm, path: Path, cfg: TrainConfig, steps: StepConfig, limit: int,
                     keep: Callable[[Trace], bool] | None = None) -> tuple[list[list[float]], list[int]]:
    """Step rewards and first-error labels (-1 = no error) of the modified and original processes (those of
    the rows ``keep`` accepts)."""
    rewards_out: list[list[float]] = []
    labels: list[int] = []
    for fields, is_modified in ((None, True), (FieldMap(steps="original_process"), False)):
        traces = [t for t in traces_of(path, fields, limit) if keep is None or keep(t)]
        for t, r in zip(traces, rewards(prm, traces, cfg, steps)):
            if r is None:
                continue
            label = -1
            if is_modified:
                bad = [i for i, lab in enumerate(t.step_labels or []) if lab == 0.0]
                if not bad:
                    continue
                label = bad[0]
            rewards_out.append(r[0])
            labels.append(label)
    return rewards_out, labels


def pool_candidates(prm, path: Path, cfg: TrainConfig, steps: StepConfig, problem_of: Callable[[Trace], str],
                    limit: int) -> tuple[list[Candidate], list[Trace]]:
    """The scored responses of one pool file, and the traces skipped as too long for the context."""
    traces = [t for t in traces_of(path, None, limit) if t.correct is not None]
    candidates, skipped = [], []
    for t, r in zip(traces, rewards(prm, traces, cfg, steps)):
        if r is None:
            skipped.append(t)
            continue
        pred = t.meta.get("pred")
        candidates.append(Candidate(problem_of(t), combine(r[0], r[1], prm.aggregate, prm.alpha) or 0.0,
                                    bool(t.correct), None if pred is None else str(pred),
                                    str(t.meta.get("dataset", "")), bool(t.meta.get("long_cot")),
                                    len(t.thinking or "") + len(t.response or "")))
    return candidates, skipped


def _auroc(groups: list[list[Candidate]]) -> float | None:
    flat = [c for g in groups for c in g]
    return metrics.auroc([c.score for c in flat], [c.correct for c in flat])


def _bon(groups: list[list[Candidate]]) -> dict:
    return metrics.best_of_n(groups, score=lambda c: c.score, correct=lambda c: c.correct, answer=lambda c: c.answer)


def _ci(groups: list[list[Candidate]], stat: Callable[[list[list[Candidate]]], float | None]) -> list | None:
    ci = metrics.bootstrap_ci(groups, stat)
    return None if ci is None else [_r(ci[0]), _r(ci[1])]


def slice_report(candidates: list[Candidate], skipped: int = 0) -> dict:
    """AUROC and Best-of-N of one dev slice, each with its bootstrap interval over problems."""
    groups = list(metrics.group(candidates, lambda c: c.problem).values())
    bon = _bon(groups)
    return {"n": len(candidates), "too_long_skipped": skipped, "problems": len(groups),
            "correct_rate": _r(sum(c.correct for c in candidates) / len(candidates)) if candidates else None,
            "auroc": _r(_auroc(groups)), "auroc_ci": _ci(groups, _auroc),
            "score_length_spearman": _r(metrics.spearman([c.score for c in candidates],
                                                         [c.chars for c in candidates])),
            "bon_prm": _r(bon["prm"]), "bon_random": _r(bon["random"]), "bon_majority": _r(bon["majority"]),
            "bon_weighted_majority": _r(bon["weighted_majority"]), "bon_oracle": _r(bon["oracle"]),
            "prm_minus_random_ci": _ci(groups, lambda g: _diff(_bon(g), "prm", "random")),
            "weighted_minus_majority_ci": _ci(groups, lambda g: _diff(_bon(g), "weighted_majority", "majority"))}


def _diff(bon: dict, a: str, b: str) -> float | None:
    return None if bon[a] is None or bon[b] is None else bon[a] - bon[b]


def load_for_features(model: str) -> tuple:
    """``(prm, cfg, steps)``: the checkpoint on CPU, the feature-extraction config its cached features are keyed
    by, and the segmentation `fluxprm score` uses for it — what :func:`rewards` needs."""
    prm = load_prm(model, device="cpu")
    cfg = TrainConfig(base=prm.config.base, feature_layers=prm.config.feature_layers, max_length=prm.max_length)
    return prm, cfg, step_config_for(prm.trained_steps)


def trained_val_fraction(model: str) -> float:
    """The held-out share the checkpoint was trained with (its ``train_config.yaml``)."""
    import yaml

    folder, _ = resolve_model(model)
    return float(yaml.safe_load((folder / "train_config.yaml").read_text())["val_fraction"])


def prmbench_report(rewards_: list[list[float]], labels: list[int], threshold: float) -> dict:
    """First-error F1 at ``threshold`` with a bootstrap interval over items (each item is one question)."""
    out = metrics.threshold_f1(rewards_, labels, threshold).as_dict()
    items = [[(r, lab)] for r, lab in zip(rewards_, labels)]

    def f1(groups: list) -> float | None:
        rows = [x for g in groups for x in g]
        return metrics.threshold_f1([r for r, _ in rows], [lab for _, lab in rows], threshold).f1

    ci = metrics.bootstrap_ci(items, f1)
    out["f1_ci"] = None if ci is None else [_r(ci[0]), _r(ci[1])]
    return out


def _r(x: float | int | None) -> float | None:
    return None if x is None else round(float(x), 4)


def shortcut_check(prm, traces: list[Trace], cfg: TrainConfig, steps: StepConfig) -> float | None:
    """Largest |difference| between the cached-feature rewards and ``fluxprm.score``'s on the same traces."""
    diffs = []
    fast = rewards(prm, traces, cfg, steps)
    real = fluxprm.score(prm, traces, steps=steps)
    for shortcut, scored in zip(fast, real):
        if shortcut is None:
            continue
        step, traj = shortcut
        diffs += [abs(a - b) for a, b in zip(step, scored.step_rewards)]
        if traj is not None and scored.trajectory_reward is not None:
            diffs.append(abs(traj - scored.trajectory_reward))
    return max(diffs) if diffs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default="fluxprm-mini")
    ap.add_argument("--data", type=Path, default=Path("build/mini"), help="folder written by build_data.py")
    ap.add_argument("--check", type=int, default=3, help="traces re-scored through fluxprm.score as a cross-check")
    ap.add_argument("--calibrate", choices=("recorded", "heldout", "all"), default=None,
                    help="the first-error threshold: the one the checkpoint records (fluxprm train's held-out "
                         "choice, or kfold_threshold.py --record's out-of-fold one; the default when there is one), "
                         "or chosen "
                         "here on the PRMBench training rows of the problems the training run held out (never "
                         "fitted; the default otherwise), or on all of them (fitted: an optimistic threshold)")
    ap.add_argument("--limit", type=int, default=0,
                    help="read only the first N traces of each file (a quick smoke run; 0 = all)")
    args = ap.parse_args()
    prm, cfg, steps = load_for_features(args.model)

    sky, sky_skipped = pool_candidates(prm, args.data / "dev_skythought.jsonl", cfg, steps,
                                       lambda t: f"amc23-{t.meta.get('idx')}", args.limit)
    qwen, qwen_skipped = pool_candidates(prm, args.data / "dev_qwen_pool.jsonl", cfg, steps,
                                         lambda t: f"qwen-{t.meta.get('group')}", args.limit)
    pool3, pool3_skipped = pool_candidates(prm, args.data / "dev_pool3.jsonl", cfg, steps,
                                           lambda t: str(t.meta.get("group")), args.limit)
    pools = {"skythought_amc23": slice_report(sky, len(sky_skipped)),
             "qwen25math_math": slice_report(qwen, len(qwen_skipped))}
    for dataset in ("math500", "olympiadbench", "minerva_math"):
        pools[dataset] = slice_report([c for c in pool3 if c.dataset == dataset],
                                      sum(t.meta.get("dataset") == dataset for t in pool3_skipped))
    pools["long_thinking"] = slice_report([c for c in sky + pool3 if c.long_cot],
                                          sum(bool(t.meta.get("long_cot")) for t in sky_skipped + pool3_skipped))
    everything = list(metrics.group(sky + qwen + pool3, lambda c: c.problem).values())
    calibrate = args.calibrate or ("recorded" if prm.config.error_threshold is not None else "heldout")
    if calibrate == "recorded":
        if prm.config.error_threshold is None:
            ap.error(f"{args.model} records no error_threshold (scripts/mini/kfold_threshold.py --record writes one)")
        threshold, train_f1, samples = prm.config.error_threshold, None, None
    else:
        keep = None
        if calibrate == "heldout":  # the rows of the training file the heads never fitted
            val_fraction = trained_val_fraction(args.model)
            keep = lambda t: heldout_bucket(prepare(t, steps).problem) < val_fraction  # noqa: E731
        train_rewards, train_labels = prmbench_samples(prm, args.data / "train_prmbench.jsonl", cfg, steps,
                                                       args.limit, keep)
        threshold = metrics.best_threshold(train_rewards, train_labels)
        train_f1 = metrics.threshold_f1(train_rewards, train_labels, threshold).f1
        samples = len(train_labels)
    dev = prmbench_report(*prmbench_samples(prm, args.data / "dev_prmbench_subset400.jsonl", cfg, steps, args.limit),
                          threshold)

    check = None
    if args.check:
        pool = traces_of(args.data / "dev_skythought.jsonl", None, args.limit)
        check = shortcut_check(prm, random.Random(0).sample(pool, min(args.check, len(pool))), cfg, steps)
    print(json.dumps({"model": args.model, "pooled_auroc": _r(_auroc(everything)),
                      "pooled_auroc_ci": _ci(everything, _auroc), "pools": pools,
                      "prmbench_subset400": dev, "prmbench_train_f1_at_threshold": _r(train_f1),
                      "threshold_chosen_on": {"rows": calibrate, "samples": samples},
                      "shortcut_max_abs_diff": check}, indent=2))


if __name__ == "__main__":
    main()
