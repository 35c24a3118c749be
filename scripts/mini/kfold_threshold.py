"""The first-error threshold of fluxprm-mini, chosen out-of-fold on its training PRMBench file. Prints JSON.

A step-reward threshold turns step rewards into a first-error prediction (the first step below it). It must
be chosen on rows the heads never fitted: on fitted rows the rewards are too confident and the best
threshold is optimistic. ``evaluate.py --calibrate heldout`` uses the ~10 % of training PRMBench problems the
training run held out (457 samples for v2.4), and that choice is noisy: for v2.3 it gave 0.087–0.254 across
seeds 0–2, on a dev F1 curve that moves between 0.57 and 0.62 over that range (v2.4's shipped seed: 0.0818).
Here *every* training PRMBench row gets rewards from heads that never fitted it:

1. the training PRMBench problems are split into ``--folds`` folds by a hash of the problem text;
2. for each fold, the shipped recipe (same config, same seed, every other training file) is trained
   without that fold's PRMBench rows, and scores them (the modified process and the original one);
3. the threshold maximising first-error F1 over all out-of-fold samples (~5,600: each PRMBench row's
   modified process and its original) is the one the checkpoint records (``error_threshold`` in
   ``fluxprm_config.json``, with ``--record``), which ``fluxprm eval processbench`` and ``evaluate.py``
   apply by default.

Only training data is read for the choice (the rule: nothing outside ../shared/data, and no dev slice, for
threshold choice); the dev F1 at the chosen threshold is reported beside it. Resumable: each fold's model
and out-of-fold rewards are kept under ``--work``, so a rerun after an interruption reuses finished folds
(each fold folder is stamped with a hash of the config and training files; a folder another recipe left is
trained again, never reused).
A fold trains in ~3–4 min on 2 quiet cores from the feature cache that ``reproduce.sh`` fills (the original
processes of the training file are extracted on the first run).
Usage: ``python scripts/mini/kfold_threshold.py TRAIN_FILES... [-m build/fluxprm-mini] [--record]`` (see
``reproduce.sh``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import evaluate  # noqa: E402  (scripts/mini/evaluate.py: the cached-feature scoring every dev figure uses)

from fluxprm import metrics  # noqa: E402
from fluxprm.models.fluxprm_config import FluxPRMConfig  # noqa: E402
from fluxprm.steps import prepare  # noqa: E402
from fluxprm.traces import Trace, iter_traces  # noqa: E402


def fold_of(problem: str, folds: int) -> int:
    """A problem's fold: a hash of its text, salted so folds do not line up with the training hold-out."""
    return int(hashlib.sha256(f"kfold:{problem}".encode()).hexdigest()[:8], 16) % folds


def split_file(path: Path, folds: int, steps) -> list[int]:
    """The fold of every line of ``path`` (by the problem ``fluxprm train`` sees)."""
    traces = list(iter_traces([str(path)]))
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(traces) != len(lines) or not all(isinstance(t, Trace) for t in traces):
        raise SystemExit(f"{path}: every line must be a readable trace ({len(traces)} records, {len(lines)} lines)")
    return [fold_of(prepare(t, steps).problem, folds) for t in traces]


def recipe_key(config: Path, train: list[Path], folds: int) -> str:
    """What a fold's model depends on: the config, the training files' names, order and contents, the fold count.

    A work folder left by another recipe (relabelled training traces, say) must not be resumed: its folds would
    hand the new checkpoint a threshold chosen with the old heads."""
    digest = hashlib.sha256(f"folds={folds}".encode())
    for path in [config, *train]:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def clear_if_stale(work: Path, recipe: str) -> bool:
    """Remove a fold folder that another recipe left (or one from before folders were stamped); True if removed."""
    stamp = work / "recipe"
    if not work.exists() or (stamp.exists() and stamp.read_text(encoding="utf-8") == recipe):
        return False
    shutil.rmtree(work)
    return True


def run_fold(k: int, args: argparse.Namespace, fold_ids: list[int]) -> dict:
    """Train without fold ``k``'s PRMBench rows (unless already done) and score those rows with that model."""
    work = args.work / f"fold{k}"
    if clear_if_stale(work, args.recipe):
        print(f"fold {k}: {work} was left by another recipe (config, training files or folds); starting it afresh",
              file=sys.stderr, flush=True)
    oof_path = work / "oof.json"
    if oof_path.exists():
        return json.loads(oof_path.read_text())
    work.mkdir(parents=True, exist_ok=True)
    (work / "recipe").write_text(args.recipe, encoding="utf-8")
    lines = args.folded.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = work / args.folded.name
    kept.write_text("".join(line for line, f in zip(lines, fold_ids) if f != k), encoding="utf-8")
    model = work / "model"
    if not (model / "heads.safetensors").exists():
        files = [str(kept) if f == args.folded else str(f) for f in args.train]  # the order of the full run
        cmd = [sys.executable, "-m", "fluxprm", "train", *files, "--config", str(args.config), "-o", str(model)]
        print(f"fold {k}: training ({sum(f != k for f in fold_ids)} PRMBench rows)", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
    prm, cfg, fold_steps = evaluate.load_for_features(str(model))
    fold_problem = lambda t: fold_of(prepare(t, fold_steps).problem, args.folds) == k  # noqa: E731
    rewards, labels = evaluate.prmbench_samples(prm, args.folded, cfg, fold_steps, 0, fold_problem)
    out = {"fold": k, "rows": sum(f == k for f in fold_ids), "rewards": rewards, "labels": labels,
           "best_threshold": metrics.best_threshold(rewards, labels)}
    oof_path.write_text(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("train", type=Path, nargs="+",
                    help="the training files of the full run, in its order (reproduce.sh's TRAIN list)")
    ap.add_argument("--folded", type=Path, default=None,
                    help="the training file split into folds (default: the one named train_prmbench.jsonl)")
    ap.add_argument("--dev", type=Path, default=Path("build/mini/dev_prmbench_subset400.jsonl"),
                    help="dev PRMBench file: its F1 at the chosen threshold is reported, never used to choose")
    ap.add_argument("--config", type=Path, default=Path("src/fluxprm/configs/fluxprm-mini.yaml"))
    ap.add_argument("-m", "--model", default="build/fluxprm-mini",
                    help="the checkpoint trained on all folds: dev F1 at the chosen threshold; --record writes to it")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("build/kfold"), help="fold models and out-of-fold rewards")
    ap.add_argument("--record", action="store_true",
                    help="write the threshold into the checkpoint's fluxprm_config.json (error_threshold)")
    args = ap.parse_args()
    if args.folds < 2:
        ap.error("--folds must be >= 2")
    args.folded = args.folded or next((f for f in args.train if f.name == "train_prmbench.jsonl"), None)
    if args.folded not in args.train:
        ap.error("--folded must be one of the training files (no train_prmbench.jsonl among them)")
    args.recipe = recipe_key(args.config, args.train, args.folds)
    prm, cfg, steps = evaluate.load_for_features(args.model)
    fold_ids = split_file(args.folded, args.folds, steps)
    results = [run_fold(k, args, fold_ids) for k in range(args.folds)]
    rewards = [r for res in results for r in res["rewards"]]
    labels = [lab for res in results for lab in res["labels"]]
    threshold = metrics.best_threshold(rewards, labels)
    oof = metrics.threshold_f1(rewards, labels, threshold)
    dev = evaluate.prmbench_report(*evaluate.prmbench_samples(prm, args.dev, cfg, steps, 0), threshold)
    if args.record:
        folder = Path(args.model)
        config = FluxPRMConfig.load(folder)
        config.error_threshold = threshold
        config.save(folder)
    print(json.dumps({"model": args.model, "folds": args.folds, "error_threshold": round(threshold, 4),
                      "out_of_fold": {"samples": len(labels), "f1": evaluate._r(oof.f1),
                                      "acc_error": evaluate._r(oof.acc_erroneous),
                                      "acc_correct": evaluate._r(oof.acc_correct)},
                      "per_fold_best_threshold": [round(r["best_threshold"], 4) for r in results],
                      "per_fold_rows": [r["rows"] for r in results],
                      "prmbench_subset400_at_threshold": dev, "recorded": args.record}, indent=2))


if __name__ == "__main__":
    main()
