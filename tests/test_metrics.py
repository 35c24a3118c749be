"""fluxprm.metrics on small cases worked out by hand, plus brute-force cross-checks of the clever parts."""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys

import pytest

from fluxprm import metrics
from fluxprm.metrics import FirstErrorF1


def brute_auroc(scores: list[float], labels: list[bool]) -> float:
    """Count every (positive, negative) pair: a win is 1, a tie 1/2."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


# ---- AUROC -------------------------------------------------------------------------------------------

def test_auroc_hand_cases() -> None:
    assert metrics.auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert metrics.auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    # pairs (pos, neg): (0.8, 0.5) win, (0.8, 0.9) loss, (0.3, 0.5) loss, (0.3, 0.9) loss -> 1/4
    assert metrics.auroc([0.8, 0.3, 0.5, 0.9], [True, True, False, False]) == 0.25


def test_auroc_ties_count_half() -> None:
    assert metrics.auroc([0.5, 0.5], [True, False]) == 0.5
    assert metrics.auroc([0.5] * 5, [True, False, True, False, False]) == 0.5
    # pos {0.7, 0.5}, neg {0.5, 0.2}: (0.7,0.5) 1, (0.7,0.2) 1, (0.5,0.5) 1/2, (0.5,0.2) 1 -> 3.5/4
    assert metrics.auroc([0.7, 0.5, 0.5, 0.2], [True, True, False, False]) == 0.875


def test_auroc_undefined_when_a_class_is_empty() -> None:
    assert metrics.auroc([0.1, 0.9], [True, True]) is None
    assert metrics.auroc([0.1, 0.9], [False, False]) is None
    assert metrics.auroc([], []) is None


def test_auroc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 scores but 1 labels"):
        metrics.auroc([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc([math.nan, 0.2], [True, False])


def test_auroc_matches_pairwise_count_and_sklearn() -> None:
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(2, 30)
        scores = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) if rng.random() < 0.5 else rng.random() for _ in range(n)]
        labels = [rng.random() < 0.4 for _ in range(n)]
        if all(labels) or not any(labels):
            continue
        assert metrics.auroc(scores, labels) == pytest.approx(brute_auroc(scores, labels), abs=1e-12)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores = [round(rng.random(), 1) for _ in range(300)]  # rounding makes many ties
    labels = [rng.random() < 0.5 for _ in range(300)]
    assert metrics.auroc(scores, labels) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_roc_points_are_sklearns_curve_and_their_area_is_the_auroc() -> None:
    """eval outcome draws these points as the ROC curve beside the AUROC in its table: with ties entering
    together, the trapezoids under them must add up to the same number."""
    rng = random.Random(1)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    for _ in range(100):
        n = rng.randint(2, 40)
        scores = [round(rng.random(), 1) if rng.random() < 0.5 else rng.random() for _ in range(n)]
        labels = [rng.random() < 0.5 for _ in range(n)]
        points = metrics.roc_points(scores, labels)
        if all(labels) or not any(labels):
            assert points == []
            continue
        assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)
        area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:]))
        assert area == pytest.approx(metrics.auroc(scores, labels), abs=1e-12)
        fpr, tpr, _ = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=False)
        assert [c for point in points for c in point] == pytest.approx(
            [float(c) for point in zip(fpr, tpr) for c in point], abs=1e-12)
    with pytest.raises(ValueError, match="2 scores but 1 labels"):
        metrics.roc_points([0.1, 0.2], [True])


# ---- grouping and picking -----------------------------------------------------------------------------

def test_group_keeps_first_seen_order_and_candidate_order() -> None:
    items = [("b", 1), ("a", 2), ("b", 3), ("a", 4), ("c", 5)]
    groups = metrics.group(items, lambda x: x[0])
    assert list(groups) == ["b", "a", "c"]
    assert groups["b"] == [("b", 1), ("b", 3)]
    assert metrics.group([], lambda x: x) == {}


def score_of(c: dict) -> float | None:
    return c["s"]


def correct_of(c: dict) -> bool:
    return c["ok"]


def answer_of(c: dict) -> str | None:
    return c["a"]


def cand(s: float | None, ok: bool, a: str | None = None) -> dict:
    return {"s": s, "ok": ok, "a": a}


def test_pick_best_skips_unscored_and_breaks_ties_by_order() -> None:
    a, b, c, d = cand(0.2, False), cand(None, True), cand(0.9, True), cand(0.9, False)
    assert metrics.pick_best([a, b, c, d], score_of) is c
    assert metrics.top_candidates([a, b, c, d], score_of) == [c, d]
    assert metrics.pick_best([cand(math.nan, True), a], score_of) is a
    assert metrics.pick_best([b], score_of) is None
    assert metrics.pick_best([], score_of) is None


def test_votes() -> None:
    answers = ["4", "5", "5", None, None, None, "4"]
    assert metrics.vote_winners(answers) == ["4", "5"]           # None never votes, ties keep first-seen order
    assert metrics.majority_vote(answers) == "4"
    assert metrics.majority_vote(["3", "5", "5"]) == "5"
    assert metrics.majority_vote([None, None]) is None
    assert metrics.majority_vote([]) is None
    # weighted: "4" gets 0.1 + 0.2 = 0.3, "5" gets 0.9 -> the single confident answer wins
    assert metrics.weighted_vote(["4", "5", "4"], [0.1, 0.9, 0.2]) == "5"
    # an unscored candidate weighs 0
    assert metrics.weighted_vote(["4", "5"], [None, 0.1]) == "5"
    with pytest.raises(ValueError, match="non-negative"):
        metrics.weighted_vote(["4", "5"], [-0.5, 0.1])
    with pytest.raises(ValueError, match="2 answers but 1 weights"):
        metrics.weighted_vote(["4", "5"], [0.1])


def test_votes_with_an_equivalence() -> None:
    same_number = lambda a, b: float(a) == float(b)  # noqa: E731
    answers = ["27", "28", "27.0", "28"]
    assert metrics.vote_winners(answers) == ["28"]
    assert metrics.vote_winners(answers, equivalent=same_number) == ["27", "28"]  # representative = first spelling
    assert metrics.weighted_vote(answers, [0.5, 0.1, 0.5, 0.1], equivalent=same_number) == "27"


# ---- Best-of-N accuracies ---------------------------------------------------------------------------------

POOL = [
    # problem 1: the PRM picks the correct one; majority ("7") is wrong; 1 of 3 correct
    [cand(0.9, True, "6"), cand(0.2, False, "7"), cand(0.3, False, "7")],
    # problem 2: the PRM picks a wrong one; majority right; 2 of 4 correct
    [cand(0.1, True, "1"), cand(0.8, False, "2"), cand(0.2, True, "1"), cand(0.3, False, "3")],
]


def test_pick_random_oracle_accuracy_by_hand() -> None:
    assert metrics.pick_accuracy(POOL, score_of, correct_of) == 0.5
    assert metrics.random_pick_accuracy(POOL, correct_of) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert metrics.oracle_accuracy(POOL, correct_of) == 1.0
    assert metrics.vote_accuracy(POOL, answer_of, correct_of) == 0.5
    # weighted: p1 "6" 0.9 vs "7" 0.5 -> right; p2 "1" 0.3, "2" 0.8, "3" 0.3 -> wrong
    assert metrics.vote_accuracy(POOL, answer_of, correct_of, weight=score_of) == 0.5


def test_ties_are_credited_in_expectation() -> None:
    flat = [[cand(0.5, True, "1"), cand(0.5, False, "2"), cand(0.5, False, "3"), cand(0.5, True, "1")]]
    # a constant-score PRM is exactly the random baseline, not "the first candidate"
    assert metrics.pick_accuracy(flat, score_of, correct_of) == metrics.random_pick_accuracy(flat, correct_of) == 0.5
    # vote: "1" has two votes and wins outright
    assert metrics.vote_accuracy(flat, answer_of, correct_of) == 1.0
    tie = [[cand(0.5, True, "1"), cand(0.5, False, "2")]]
    assert metrics.vote_accuracy(tie, answer_of, correct_of) == 0.5


def test_empty_groups_and_all_correct_pools() -> None:
    assert metrics.pick_accuracy([], score_of, correct_of) is None
    assert metrics.random_pick_accuracy([], correct_of) is None
    assert metrics.oracle_accuracy([], correct_of) is None
    assert metrics.vote_accuracy([], answer_of, correct_of) is None
    # an empty group (or one with nothing scored / no answers) is a missed problem
    groups = [[], [cand(0.4, True, "1")]]
    assert metrics.pick_accuracy(groups, score_of, correct_of) == 0.5
    assert metrics.random_pick_accuracy(groups, correct_of) == 0.5
    assert metrics.oracle_accuracy(groups, correct_of) == 0.5
    assert metrics.pick_accuracy([[cand(None, True)]], score_of, correct_of) == 0.0
    assert metrics.vote_accuracy([[cand(0.4, True, None)]], answer_of, correct_of) == 0.0
    # every candidate correct: every rule scores 1
    right = [[cand(0.1, True, "a"), cand(0.7, True, "b")], [cand(0.3, True, "c")]]
    assert metrics.best_of_n(right, score=score_of, correct=correct_of, answer=answer_of) == {
        "problems": 2, "prm": 1.0, "random": 1.0, "oracle": 1.0, "majority": 1.0, "weighted_majority": 1.0}


def test_best_of_n_and_accuracy_at_n() -> None:
    assert metrics.best_of_n(POOL, score=score_of, correct=correct_of) == {
        "problems": 2, "prm": 0.5, "random": pytest.approx(5 / 12), "oracle": 1.0}
    curve = metrics.accuracy_at_n(POOL, [1, 2, 10], score=score_of, correct=correct_of, answer=answer_of)
    assert list(curve) == [1, 2, 10]
    # n=1: only the first candidate of each problem: right, right
    assert curve[1] == {"problems": 2, "prm": 1.0, "random": 1.0, "oracle": 1.0, "majority": 1.0,
                        "weighted_majority": 1.0}
    # n=2: p1 {0.9 right "6", 0.2 wrong "7"}, p2 {0.1 right "1", 0.8 wrong "2"}
    assert curve[2]["prm"] == 0.5 and curve[2]["random"] == 0.5 and curve[2]["oracle"] == 1.0
    assert curve[2]["majority"] == 0.5  # both problems tie 1-1: expectation 1/2 each
    assert curve[2]["weighted_majority"] == 0.5
    assert curve[10] == metrics.best_of_n(POOL, score=score_of, correct=correct_of, answer=answer_of)
    with pytest.raises(ValueError, match="n must be >= 1"):
        metrics.accuracy_at_n(POOL, [0], score=score_of, correct=correct_of)


def test_groups_may_be_a_generator_or_dict_values() -> None:
    items = [("p1", cand(0.9, True)), ("p1", cand(0.1, False)), ("p2", cand(0.5, False))]
    groups = metrics.group(items, lambda x: x[0])
    lists = ([c for _, c in g] for g in groups.values())
    assert metrics.best_of_n(lists, score=score_of, correct=correct_of)["prm"] == 0.5


# ---- Best-of-N over random subsets of N candidates --------------------------------------------------------

def test_per_problem_values_by_hand() -> None:
    p1, p2 = POOL
    assert metrics.pick_value(p1, score_of, correct_of) == 1.0
    assert metrics.pick_value(p2, score_of, correct_of) == 0.0
    assert metrics.pick_value([cand(0.5, True), cand(0.5, False)], score_of, correct_of) == 0.5  # tie: expectation
    assert metrics.pick_value([cand(None, True)], score_of, correct_of) == 0.0  # nothing scored: missed
    assert metrics.vote_value(p1, answer_of, correct_of) == 0.0   # "7" x2 wins
    assert metrics.vote_value(p2, answer_of, correct_of) == 1.0   # "1" x2 wins
    assert metrics.vote_value(p2, answer_of, correct_of, score_of) == 0.0   # "2" 0.8 > "1" 0.3
    assert metrics.vote_value([cand(0.4, True, None)], answer_of, correct_of) == 0.0
    assert metrics.oracle_value(p1, correct_of) == 1.0 and metrics.oracle_value([cand(1, False)], correct_of) == 0.0
    assert metrics.oracle_value([], correct_of) == 0.0


def test_subsets_enumerate_when_cheap_and_sample_otherwise() -> None:
    rng = random.Random(0)
    every, exact = metrics.subsets(5, 2, 10, rng)
    assert exact and every == list(itertools.combinations(range(5), 2))  # C(5, 2) = 10 <= 10
    drawn, exact = metrics.subsets(5, 2, 9, rng)
    assert not exact and len(drawn) == 9
    assert all(len(set(s)) == 2 and list(s) == sorted(s) and set(s) <= set(range(5)) for s in drawn)
    assert metrics.subsets(3, 3, 1, rng) == ([(0, 1, 2)], True)   # the whole group
    assert metrics.subsets(3, 8, 1, rng) == ([(0, 1, 2)], True)   # fewer candidates than N: all of them
    with pytest.raises(ValueError, match="n must be >= 1"):
        metrics.subsets(3, 0, 10, rng)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        metrics.subsets(3, 1, 0, rng)


def test_subset_accuracy_by_hand() -> None:
    rules = {"prm": lambda s: metrics.pick_value(s, score_of, correct_of),
             "oracle": lambda s: metrics.oracle_value(s, correct_of)}
    # n=2, every pair enumerated. p1 pairs: (r.9,w.2) 1, (r.9,w.3) 1, (w.2,w.3) 0 -> 2/3.
    # p2 (r.1, w.8, r.2, w.3): (0,1) 0, (0,2) 1, (0,3) 0, (1,2) 0, (1,3) 0, (2,3) 0 -> 1/6.
    result = metrics.subset_accuracy(POOL, 2, rules, samples=100)
    assert result["prm"].exact and result["prm"].accuracy == pytest.approx((2 / 3 + 1 / 6) / 2)
    var1, var2 = 2 / 3 * 1 / 3, 1 / 6 * 5 / 6  # a 0/1 credit's variance over the subsets: p(1-p)
    assert result["prm"].std == pytest.approx(math.sqrt(var1 + var2) / 2)
    # oracle at n=2: p1 2/3 (the pair of wrong ones misses); p2 every pair but (1,3) has a right one: 5/6
    assert result["oracle"].accuracy == pytest.approx((2 / 3 + 5 / 6) / 2)
    # n=1 of any rule that always picks the one shown = mean correctness, p(1-p) variance
    one = metrics.subset_accuracy(POOL, 1, rules)["oracle"]
    assert one.accuracy == pytest.approx(metrics.random_pick_accuracy(POOL, correct_of))
    assert one.std == pytest.approx(math.sqrt(1 / 3 * 2 / 3 + 1 / 2 * 1 / 2) / 2)
    # n = pool size: one subset, the whole-pool accuracy, no spread
    full = metrics.subset_accuracy(POOL, 4, rules)
    assert full["prm"].accuracy == metrics.pick_accuracy(POOL, score_of, correct_of) and full["prm"].std == 0.0
    assert metrics.subset_accuracy([], 2, rules)["prm"] == metrics.SubsetAccuracy(None, None, True)


def test_subset_accuracy_matches_brute_force_and_samples_converge() -> None:
    rng = random.Random(3)
    groups = [[cand(rng.choice([0.1, 0.5, 0.9, None]), rng.random() < 0.5, rng.choice("abc")) for _ in range(6)]
              for _ in range(5)]
    rules = {"prm": lambda s: metrics.pick_value(s, score_of, correct_of),
             "vote": lambda s: metrics.vote_value(s, answer_of, correct_of, score_of)}
    for n in (1, 2, 3, 6):
        exact = metrics.subset_accuracy(groups, n, rules, samples=10_000)
        for name, rule in rules.items():
            per_group = [[rule([g[i] for i in c]) for c in itertools.combinations(range(6), n)] for g in groups]
            means = [sum(v) / len(v) for v in per_group]
            assert exact[name].exact
            assert exact[name].accuracy == pytest.approx(sum(means) / len(groups))
            var = sum(sum((x - m) ** 2 for x in v) / len(v) for v, m in zip(per_group, means))
            assert exact[name].std == pytest.approx(math.sqrt(var) / len(groups))
    every = metrics.subset_accuracy(groups, 3, rules, samples=20)              # C(6, 3) = 20: enumerated
    estimate = metrics.subset_accuracy(groups, 3, rules, samples=19, seed=1)   # one fewer: 19 drawn at random
    assert every["prm"].exact and not estimate["prm"].exact
    assert estimate == metrics.subset_accuracy(groups, 3, rules, samples=19, seed=1)   # seeded: reproducible
    assert estimate != metrics.subset_accuracy(groups, 3, rules, samples=19, seed=2)
    for name in rules:   # 19 draws per problem: within about 3 standard errors of the exact value
        assert abs(estimate[name].accuracy - every[name].accuracy) < 0.15


# ---- first-error F1 -----------------------------------------------------------------------------------

def test_first_error_index_boundaries() -> None:
    assert metrics.first_error_index([0.9, 0.4, 0.2], 0.5) == 1
    assert metrics.first_error_index([0.9, 0.5, 0.2], 0.5) == 2   # strictly below: 0.5 is not an error
    assert metrics.first_error_index([0.9, 0.8], 0.5) == -1
    assert metrics.first_error_index([], 0.5) == -1
    assert metrics.first_error_index([0.0, 1.0], 0.0) == -1       # threshold at the minimum: nothing flagged
    assert metrics.first_error_index([0.3, 1.0], math.nextafter(1.0, 2)) == 0  # above the maximum: all flagged


def test_first_error_f1_by_hand() -> None:
    # erroneous: labels 2, 0, 1 -> predictions 2 (hit), 1 (miss), 1 (hit): acc1 = 2/3
    # correct: labels -1, -1 -> predictions -1 (hit), 3 (miss): acc2 = 1/2
    r = metrics.first_error_f1([2, 1, 1, -1, 3], [2, 0, 1, -1, -1])
    assert (r.n_erroneous, r.n_correct) == (3, 2)
    assert r.acc_erroneous == pytest.approx(2 / 3) and r.acc_correct == 0.5
    assert r.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))  # = 4/7
    assert r.f1 == pytest.approx(4 / 7)
    # always "no error": acc1 = 0 -> F1 0 however many correct samples there are
    assert metrics.first_error_f1([-1, -1, -1], [1, -1, -1]).f1 == 0.0
    # both accuracies 0: harmonic mean's limit 0.0 (ProcessBench's numpy gives NaN)
    assert metrics.first_error_f1([0, 0], [1, -1]).f1 == 0.0
    # an empty class: undefined
    only_errors = metrics.first_error_f1([1], [1])
    assert only_errors.acc_erroneous == 1.0 and only_errors.acc_correct is None and only_errors.f1 is None
    assert metrics.first_error_f1([], []) == FirstErrorF1(None, None, None, 0, 0, None)
    with pytest.raises(ValueError):
        metrics.first_error_f1([1, 2], [1])


def test_threshold_f1_and_as_dict() -> None:
    rewards = [[0.9, 0.3, 0.8], [0.2, 0.9], [0.9, 0.9], [0.7, 0.45]]
    labels = [1, 0, -1, -1]
    r = metrics.threshold_f1(rewards, labels, 0.5)   # predictions 1, 0, -1, 1
    assert (r.acc_erroneous, r.acc_correct, r.f1, r.threshold) == (1.0, 0.5, pytest.approx(2 / 3), 0.5)
    assert r.as_dict() == {"f1": 0.6667, "acc_erroneous": 1.0, "acc_correct": 0.5, "threshold": 0.5,
                           "n_erroneous": 2, "n_correct": 2}
    assert r.as_dict(None)["f1"] == r.f1
    # thresholds at the boundaries: at the smallest reward nothing is flagged, above the largest everything
    assert metrics.threshold_f1(rewards, labels, 0.2).acc_correct == 1.0
    top = metrics.threshold_f1(rewards, labels, 0.95)   # predictions all 0: only the label-0 sample hits
    assert (top.acc_erroneous, top.acc_correct, top.f1) == (0.5, 0.0, 0.0)
    with pytest.raises(ValueError, match="< -1"):
        metrics.threshold_f1([[0.5]], [-2], 0.5)


def test_best_threshold_by_hand() -> None:
    # erroneous sample (first error at step 1) matches for 0.3 < t <= 0.9; correct sample for t <= 0.6
    rewards = [[0.9, 0.3, 0.8], [0.6, 0.7]]
    labels = [1, -1]
    t = metrics.best_threshold(rewards, labels)
    assert 0.3 < t <= 0.6
    assert t == pytest.approx(0.45)  # the midpoint of the piece (0.3, 0.6], not its edge
    assert metrics.threshold_f1(rewards, labels, t).f1 == 1.0
    with pytest.raises(ValueError, match="both erroneous"):
        metrics.best_threshold([[0.5]], [-1])
    with pytest.raises(ValueError, match="both erroneous"):
        metrics.best_threshold([[0.5]], [0])


def test_best_threshold_edges_of_the_range() -> None:
    # errors at step 0 match for t > 0.2 and t > 0.3; the correct sample for t <= 0.4: best piece (0.3, 0.4]
    rewards = [[0.2], [0.3], [0.4, 0.9]]
    labels = [0, 0, -1]
    assert metrics.best_threshold(rewards, labels) == pytest.approx(0.35)
    # a correct sample with no steps matches at any t, so the best piece is the top one: just above 0.3
    rewards = [[0.2], [0.3], []]
    t = metrics.best_threshold(rewards, labels)
    assert t == math.nextafter(0.3, 1.0)
    assert metrics.threshold_f1(rewards, labels, t).f1 == 1.0
    # an error label past the last step never matches; nothing depends on t: 0.5 by convention
    assert metrics.best_threshold([[], [0.4]], [-1, 3]) == 0.5


def test_best_threshold_matches_brute_force_search() -> None:
    rng = random.Random(1)
    for _ in range(100):
        rewards, labels = [], []
        for _ in range(rng.randint(2, 12)):
            steps = [rng.choice([0.1, 0.3, 0.5, 0.7, 0.9]) if rng.random() < 0.5 else rng.random()
                     for _ in range(rng.randint(0, 5))]
            rewards.append(steps)
            labels.append(-1 if rng.random() < 0.5 or not steps else rng.randrange(len(steps) + 1))
        if all(y == -1 for y in labels) or all(y != -1 for y in labels):
            continue
        values = sorted({x for r in rewards for x in r} | {0.0, 1.0})
        grid = values + [(a + b) / 2 for a, b in itertools.pairwise(values)] + [-1.0, 2.0]
        brute = max(metrics.threshold_f1(rewards, labels, x).f1 or 0.0 for x in grid)
        t = metrics.best_threshold(rewards, labels)
        assert metrics.threshold_f1(rewards, labels, t).f1 == pytest.approx(brute)


# ---- no torch --------------------------------------------------------------------------------------------

def test_import_does_not_load_torch() -> None:
    code = "import sys, fluxprm.metrics; assert 'torch' not in sys.modules, 'torch imported'; " \
           "assert 'numpy' not in sys.modules, 'numpy imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---- PRMBench PRMScore, AUPRC, calibration (fluxprm eval) ------------------------------------------------

def test_prmbench_step_counts_by_hand() -> None:
    # errors at 1-based step 3; reward 0.5 is *not* valid (PRMBench: valid iff reward > threshold)
    counts = metrics.prmbench_step_counts([3], [0.9, 0.6, 0.4, 0.5], 0.5)
    assert counts == metrics.StepCounts(tp=2, fp=0, tn=1, fn=1)
    # an erroneous step predicted valid is a false positive (upstream's naming: positive = correct step)
    assert metrics.prmbench_step_counts([2, 3], [0.7, 0.8, 0.2]) == metrics.StepCounts(tp=1, fp=1, tn=1, fn=0)
    # steps the model gave no reward are not counted (upstream loops over the predictions)
    assert metrics.prmbench_step_counts([4], [0.9, 0.9]) == metrics.StepCounts(tp=2)


def test_prmscore_by_hand_and_undefined_parts() -> None:
    total = metrics.StepCounts(2, 0, 1, 1) + metrics.StepCounts(1, 1, 1, 0)
    score = metrics.prmscore(total, 2)
    assert score.f1_correct == pytest.approx(0.75)
    assert score.f1_error == pytest.approx(2 / 3)
    assert score.prmscore == pytest.approx(0.5 * 0.75 + 0.5 * 2 / 3)
    only_correct = metrics.prmscore(metrics.StepCounts(tp=3, fn=1))  # the "correct" class: no error step
    assert only_correct.f1_error is None and only_correct.prmscore is None
    assert only_correct.f1_correct == pytest.approx(2 * 1 * 0.75 / 1.75)


def test_prmscore_equals_sklearn_f1_both_ways() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(7)
    total = metrics.StepCounts()
    truth: list[int] = []
    pred: list[int] = []
    for _ in range(60):
        n = rng.randint(1, 9)
        rewards = [round(rng.random(), 1) for _ in range(n)]
        errors = sorted(rng.sample(range(1, n + 1), rng.randint(0, n)))
        total = total + metrics.prmbench_step_counts(errors, rewards, 0.5)
        truth += [0 if i + 1 in errors else 1 for i in range(n)]
        pred += [1 if r > 0.5 else 0 for r in rewards]
    score = metrics.prmscore(total)
    assert score.f1_correct == pytest.approx(sklearn_metrics.f1_score(truth, pred, pos_label=1), abs=1e-12)
    assert score.f1_error == pytest.approx(sklearn_metrics.f1_score(truth, pred, pos_label=0), abs=1e-12)


def test_auprc_by_hand_and_against_sklearn() -> None:
    # ranks: 0.9(+) 0.8(-) 0.7(+) → AP = 1/2·1 + 1/2·2/3
    assert metrics.auprc([0.9, 0.8, 0.7], [True, False, True]) == pytest.approx(0.5 + 1 / 3)
    assert metrics.auprc([0.1, 0.2], [False, False]) is None
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(3)
    for _ in range(50):
        n = rng.randint(2, 80)
        scores = [round(rng.random(), 1) for _ in range(n)]  # many ties
        labels = [rng.random() < 0.3 for _ in range(n)]
        if not any(labels):
            continue
        assert metrics.auprc(scores, labels) == pytest.approx(
            sklearn_metrics.average_precision_score(labels, scores), abs=1e-12)


def test_reliability_bins_and_ece_against_sklearn_calibration_curve() -> None:
    bins = metrics.reliability_bins([0.05, 0.1, 0.15, 0.95], [False, True, False, True], bins=10)
    assert [b.count for b in bins][:2] == [2, 1]  # 0.1 sits on an inner edge: lower bin, as sklearn
    assert metrics.ece([0.2, 0.2, 0.8, 0.8], [False, False, True, True], bins=5) == pytest.approx(0.2)
    calibration = pytest.importorskip("sklearn.calibration")
    rng = random.Random(5)
    scores = [round(rng.random(), 2) for _ in range(400)]
    labels = [rng.random() < s for s in scores]
    prob_true, prob_pred = calibration.calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    used = [b for b in metrics.reliability_bins(scores, labels, 10) if b.count]
    assert [b.accuracy for b in used] == pytest.approx(list(prob_true), abs=1e-12)
    assert [b.mean_score for b in used] == pytest.approx(list(prob_pred), abs=1e-12)
    n = len(scores)
    expected = sum(b.count / n * abs(t - p) for b, t, p in zip(used, prob_true, prob_pred))
    assert metrics.ece(scores, labels, 10) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.ece([1.5], [True])
