"""The statistics behind fluxprm-mini's model card: bootstrap intervals over problems and one dev slice's report."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

from fluxprm import metrics

EVALUATE = Path(__file__).resolve().parents[1] / "scripts" / "mini" / "evaluate.py"


def _evaluate_module():
    spec = importlib.util.spec_from_file_location("mini_evaluate", EVALUATE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def _mean(groups):
    flat = [x for g in groups for x in g]
    return sum(flat) / len(flat)


def test_bootstrap_interval_covers_the_estimate_and_shrinks_with_more_problems():
    rng = random.Random(1)
    small = [[rng.random() for _ in range(4)] for _ in range(10)]
    large = [[rng.random() for _ in range(4)] for _ in range(400)]
    lo, hi = metrics.bootstrap_ci(small, _mean)
    assert lo <= _mean(small) <= hi
    lo2, hi2 = metrics.bootstrap_ci(large, _mean)
    assert lo2 <= _mean(large) <= hi2
    assert hi2 - lo2 < (hi - lo) / 3  # ~sqrt(40) narrower
    assert metrics.bootstrap_ci(small, _mean) == (lo, hi)  # seeded
    assert metrics.bootstrap_ci(small, _mean, seed=2) != (lo, hi)


def test_bootstrap_resamples_whole_problems():
    """Two problems whose responses all agree: resampling responses would give a narrow interval around 0.5;
    resampling problems gives the honest one, reaching 0 and 1 (both problems drawn the same)."""
    groups = [[0.0] * 50, [1.0] * 50]
    lo, hi = metrics.bootstrap_ci(groups, _mean)
    assert (lo, hi) == (0.0, 1.0)


def test_bootstrap_skips_undefined_resamples_and_refuses_bad_arguments():
    one_class = [[(0.9, True)], [(0.1, True)], [(0.5, False)]]

    def auc(groups):
        flat = [x for g in groups for x in g]
        return metrics.auroc([s for s, _ in flat], [c for _, c in flat])

    ci = metrics.bootstrap_ci(one_class, auc)  # some resamples hold one class only: skipped, not counted as 0
    assert ci is not None and 0.0 <= ci[0] <= ci[1] <= 1.0
    assert metrics.bootstrap_ci([[(0.9, True)]], auc) is None  # never defined
    assert metrics.bootstrap_ci([], _mean) is None
    with pytest.raises(ValueError):
        metrics.bootstrap_ci(one_class, auc, level=1.5)


def test_slice_report_on_a_synthetic_pool():
    evaluate = _evaluate_module()
    cand = evaluate.Candidate
    rng = random.Random(0)
    pool = []
    for p in range(30):  # the PRM scores correct answers higher; the right answer is "a"
        for k in range(4):
            correct = rng.random() < 0.5
            pool.append(cand(f"p{p}", (0.7 if correct else 0.3) + rng.uniform(-0.25, 0.25), correct,
                             "a" if correct else f"wrong{k}"))
    report = evaluate.slice_report(pool)
    assert report["n"] == 120 and report["problems"] == 30
    assert report["auroc"] == pytest.approx(metrics.auroc([c.score for c in pool], [c.correct for c in pool]),
                                            abs=1e-4)
    lo, hi = report["auroc_ci"]
    assert lo <= report["auroc"] <= hi and report["auroc"] > 0.8
    assert report["bon_prm"] > report["bon_random"]
    lo, hi = report["prm_minus_random_ci"]
    assert lo <= report["bon_prm"] - report["bon_random"] <= hi
    assert evaluate.slice_report([])["auroc"] is None


def test_spearman_matches_hand_values():
    spearman = metrics.spearman
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)  # ties get average ranks
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert metrics.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992, abs=1e-6)


def _kfold_module():
    spec = importlib.util.spec_from_file_location("mini_kfold", EVALUATE.parent / "kfold_threshold.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kfold_folds_are_by_problem_balanced_and_apart_from_the_training_hold_out():
    from fluxprm.train.loop import heldout_bucket

    fold_of = _kfold_module().fold_of
    problems = [f"problem {k}" for k in range(2000)]
    folds = [fold_of(p, 5) for p in problems]
    assert folds == [fold_of(p, 5) for p in problems]  # a problem's fold is fixed: its rows never straddle folds
    counts = [folds.count(k) for k in range(5)]
    assert min(counts) > 340 and max(counts) < 460, counts
    held = [f for p, f in zip(problems, folds) if heldout_bucket(p) < 0.1]  # the training run's own hold-out
    assert len(set(held)) == 5  # spread over every fold, not one fold = the hold-out


def test_kfold_never_resumes_a_fold_another_recipe_left(tmp_path):
    """Relabelled training traces change the recipe: their folds are retrained, not reused with old heads."""
    kfold = _kfold_module()
    config, labels = tmp_path / "mini.yaml", tmp_path / "labels.jsonl"
    config.write_text("seed: 1\n")
    labels.write_text('{"step_rewards": [0.6]}\n')
    recipe = kfold.recipe_key(config, [labels], 5)
    assert recipe == kfold.recipe_key(config, [labels], 5)
    assert recipe != kfold.recipe_key(config, [labels], 4)
    labels.write_text('{"step_rewards": [0.3]}\n')  # the same file relabelled
    relabelled = kfold.recipe_key(config, [labels], 5)
    assert relabelled != recipe

    fold = tmp_path / "work" / "fold0"
    assert not kfold.clear_if_stale(fold, relabelled)  # nothing there yet
    fold.mkdir(parents=True)
    (fold / "oof.json").write_text("{}")
    (fold / "recipe").write_text(relabelled)
    assert not kfold.clear_if_stale(fold, relabelled) and (fold / "oof.json").exists()  # same recipe: resumed
    (fold / "recipe").write_text(recipe)
    assert kfold.clear_if_stale(fold, relabelled) and not fold.exists()  # another recipe's fold: gone
    fold.mkdir()
    (fold / "oof.json").write_text("{}")  # a folder from before folders were stamped
    assert kfold.clear_if_stale(fold, relabelled) and not fold.exists()


def test_the_shipped_model_records_its_out_of_fold_threshold():
    """The card's F1 figure, the checkpoint's recorded threshold and the k-fold run that chose it agree."""
    import json

    from fluxprm.models.bundled import bundled_model_dir
    from fluxprm.models.fluxprm_config import recorded_error_threshold

    folder = bundled_model_dir("fluxprm-mini")
    kfold = json.loads((folder / "kfold_threshold.json").read_text())
    dev = json.loads((folder / "dev_metrics.json").read_text())
    recorded = recorded_error_threshold("fluxprm-mini")
    assert recorded == pytest.approx(kfold["error_threshold"], abs=5e-5)
    assert dev["threshold_chosen_on"]["rows"] == "recorded"
    assert dev["prmbench_subset400"]["threshold"] == pytest.approx(recorded, abs=5e-5)
    assert dev["prmbench_subset400"] == kfold["prmbench_subset400_at_threshold"]
    assert kfold["out_of_fold"]["samples"] > 5000 and kfold["folds"] == 5
