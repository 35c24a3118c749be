"""Evaluation metrics for PRM scores: AUROC, Best-of-N selection and voting, first-error F1.

Plain functions over plain values (scores, booleans, step-reward lists), shared by ``fluxprm bon``,
``fluxprm eval`` and ``scripts/mini/evaluate.py`` so every number the project reports is computed once,
in one way. This module imports no torch and no numpy: a command working on a scores file starts instantly
(a test checks it in a fresh interpreter).

Conventions:

- A *group* is the list of candidate responses to one problem, in their original (sampling) order.
  Candidates are whatever objects the caller has; the functions take accessors (``score``, ``correct``,
  ``answer``) so no wrapper type is imposed.
- A score of ``None`` or NaN means "not scored": such a candidate is never picked and never outranks one.
- Accuracies are means over problems (groups) in ``[0, 1]``, or ``None`` when there is no problem at all,
  so an undefined metric is never confused with a bad one.
- Ties are resolved *in expectation*: a selection rule that ties between candidates is credited with the
  mean correctness of the tied ones (what uniform random tie-breaking achieves on average). A PRM that
  gives every candidate the same score therefore scores exactly the random baseline, not "whoever came
  first". The single-pick functions (:func:`pick_best`, :func:`majority_vote`) return the first of the tied.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_left
from dataclasses import asdict, dataclass
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence, TypeVar

__all__ = [
    "auroc", "roc_points",
    "group", "top_candidates", "pick_best", "vote_winners", "majority_vote", "weighted_vote",
    "pick_accuracy", "vote_accuracy", "random_pick_accuracy", "oracle_accuracy", "best_of_n", "accuracy_at_n",
    "pick_value", "vote_value", "oracle_value", "subsets", "SubsetAccuracy", "subset_accuracy",
    "FirstErrorF1", "first_error_index", "first_error_of_labels", "first_error_f1", "threshold_f1", "best_threshold",
    "StepCounts", "PRMScore", "prmbench_step_counts", "prmscore", "auprc", "ReliabilityBin", "reliability_bins",
    "ece", "bootstrap_ci", "pearson", "spearman",
]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
Score = Callable[[Any], "float | None"]
Correct = Callable[[Any], bool]
Answer = Callable[[Any], "Hashable | None"]
Equivalent = Callable[[Any, Any], bool]


def _usable(x: float | None) -> bool:
    return x is not None and not math.isnan(x)


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


# ---- AUROC -------------------------------------------------------------------------------------------

def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` separating ``labels`` True (positive) from False.

    It is the probability that a random positive scores higher than a random negative, a tie counting
    one half — the Mann–Whitney U statistic divided by ``P·N``. It is computed from average ranks of
    tied scores (``U = Σ rank(positive) − P(P+1)/2``) in O(n log n), which equals sklearn's
    ``roc_auc_score`` and the brute-force pairwise count. Threshold-free, so it judges a PRM's ranking
    quality whatever scale its scores are on.

    Returns ``None`` when either class is empty (the metric is undefined there). Raises ``ValueError``
    on mismatched lengths or a NaN score (which would have no rank).
    """
    if len(scores) != len(labels):
        raise ValueError(f"auroc: {len(scores)} scores but {len(labels)} labels")
    if any(math.isnan(s) for s in scores):
        raise ValueError("auroc: a score is NaN; drop unscored items first")
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum_pos = 0.0
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        average_rank = (start + end) / 2 + 1  # 1-based ranks start+1 .. end+1, averaged over the tie
        rank_sum_pos += average_rank * sum(1 for i in order[start:end + 1] if labels[i])
        start = end + 1
    u = rank_sum_pos - positives * (positives + 1) / 2
    return u / (positives * negatives)


def roc_points(scores: Sequence[float], labels: Sequence[bool]) -> list[tuple[float, float]]:
    """The ROC curve as ``(false positive rate, true positive rate)`` points, from ``(0, 0)`` to ``(1, 1)``: one
    point per distinct score, highest first, tied scores entering together (sklearn's ``roc_curve`` with
    ``drop_intermediate=False``). The trapezoids under these points add up to :func:`auroc` exactly, so the plot
    and the number in the table are the same ranking. Empty when either class is empty."""
    if len(scores) != len(labels):
        raise ValueError(f"roc_points: {len(scores)} scores but {len(labels)} labels")
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return []
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    points, tp, fp, start = [(0.0, 0.0)], 0, 0, 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        hits = sum(1 for i in order[start:end + 1] if labels[i])
        tp, fp = tp + hits, fp + (end + 1 - start - hits)
        points.append((fp / negatives, tp / positives))
        start = end + 1
    return points


# ---- Best-of-N: grouping and selection ----------------------------------------------------------------

def group(items: Iterable[T], by: Callable[[T], K]) -> dict[K, list[T]]:
    """Candidates grouped by problem: ``{by(item): [items...]}``.

    Groups appear in order of their first candidate and keep the candidates' input order, so "the first
    n candidates" of a group (see :func:`accuracy_at_n`) are the first n sampled.
    """
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(by(item), []).append(item)
    return groups


def top_candidates(candidates: Sequence[T], score: Score) -> list[T]:
    """All candidates sharing the highest usable score (input order); ``[]`` if none is scored."""
    scored = [(c, s) for c in candidates if _usable(s := score(c))]
    if not scored:
        return []
    best = max(s for _, s in scored)
    return [c for c, s in scored if s == best]


def pick_best(candidates: Sequence[T], score: Score) -> T | None:
    """The candidate with the highest score — the PRM's Best-of-N pick.

    Unscored candidates (``None``/NaN) are passed over; a tie goes to the earliest candidate, so the pick
    is deterministic. ``None`` when no candidate is scored (an empty group included): the PRM has no
    basis to pick, and inventing one would credit it with a choice it did not make.
    """
    top = top_candidates(candidates, score)
    return top[0] if top else None


def _clusters(answers: Sequence[Hashable | None], weights: Sequence[float | None] | None,
              equivalent: Equivalent | None) -> list[tuple[Any, float, list[int]]]:
    """``(representative answer, total weight, member indices)`` per answer cluster, in first-seen order.

    ``None`` answers (nothing extracted) join no cluster. Without ``equivalent`` answers cluster by
    equality; with it, each answer joins the first cluster whose representative it is equivalent to.
    """
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    clusters: list[tuple[Any, float, list[int]]] = []
    by_key: dict[Hashable, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        weight = 1.0
        if weights is not None:
            w = weights[i]
            if _usable(w) and w < 0:  # type: ignore[operator]
                raise ValueError(f"weighted vote: weight {w} < 0; vote with non-negative scores (probabilities)")
            weight = float(w) if _usable(w) else 0.0  # type: ignore[arg-type]
        if equivalent is None:
            slot = by_key.setdefault(answer, len(clusters))
        else:
            slot = next((k for k, (rep, _, _) in enumerate(clusters) if equivalent(answer, rep)), len(clusters))
        if slot == len(clusters):
            clusters.append((answer, weight, [i]))
        else:
            rep, total, members = clusters[slot]
            clusters[slot] = (rep, total + weight, members + [i])
    return clusters


def vote_winners(answers: Sequence[Hashable | None], weights: Sequence[float | None] | None = None,
                 equivalent: Equivalent | None = None) -> list[Any]:
    """The answers with the most votes (plain count, or total weight when ``weights`` are given).

    Returns every tied winner in first-seen order (``[]`` when no candidate has an answer). Candidates
    whose answer is ``None`` — nothing could be extracted — do not vote: "no answer" must not win a
    vote. ``equivalent(a, b)`` (e.g. :func:`fluxprm.grading.is_equivalent`) merges answers that are
    written differently but mean the same (``"27"`` and ``"27.0"``); by default answers must be equal.
    """
    clusters = _clusters(answers, weights, equivalent)
    if not clusters:
        return []
    most = max(total for _, total, _ in clusters)
    return [rep for rep, total, _ in clusters if total == most]


def majority_vote(answers: Sequence[Hashable | None], equivalent: Equivalent | None = None) -> Any | None:
    """The most frequent answer (self-consistency); ties go to the answer seen first; ``None`` if none.

    The baseline a PRM must beat: it needs no verifier at all.
    """
    winners = vote_winners(answers, None, equivalent)
    return winners[0] if winners else None


def weighted_vote(answers: Sequence[Hashable | None], weights: Sequence[float | None],
                  equivalent: Equivalent | None = None) -> Any | None:
    """The answer whose candidates' PRM scores sum highest; ties go to the answer seen first.

    PRM-weighted majority vote, as in huggingface/search-and-learn (``find_answer_with_largest_sum``):
    it combines agreement between samples with the verifier's confidence, and usually beats both the
    plain vote and the single best-scored pick. Weights must be non-negative (a negative score would
    count as a vote *against*); unscored candidates weigh 0.
    """
    winners = vote_winners(answers, weights, equivalent)
    return winners[0] if winners else None


# ---- Best-of-N: accuracies over problems ---------------------------------------------------------------

def _fraction_correct(candidates: Sequence[T], correct: Correct) -> float:
    return sum(1 for c in candidates if correct(c)) / len(candidates) if candidates else 0.0


def pick_accuracy(groups: Iterable[Sequence[T]], score: Score, correct: Correct) -> float | None:
    """Best-of-N accuracy of picking the highest-scored candidate, averaged over problems.

    Ties at the top are credited with the mean correctness of the tied candidates (see the module
    docstring). A problem with no scored candidate counts as missed. ``None`` if there are no problems.
    """
    return _mean([pick_value(g, score, correct) for g in groups])


def vote_accuracy(groups: Iterable[Sequence[T]], answer: Answer, correct: Correct, weight: Score | None = None,
                  equivalent: Equivalent | None = None) -> float | None:
    """Accuracy of majority vote (or, with ``weight``, PRM-weighted vote) over problems.

    A winning answer is credited with the mean correctness of the candidates that gave it (a consistent
    grader marks them all alike); tied winners are averaged. A problem where no candidate has an
    answer counts as missed. ``None`` if there are no problems.
    """
    return _mean([vote_value(g, answer, correct, weight, equivalent) for g in groups])


def random_pick_accuracy(groups: Iterable[Sequence[T]], correct: Correct) -> float | None:
    """Expected accuracy of picking a candidate uniformly at random: the mean fraction of correct candidates.

    The exact expectation, not a sampled pick, so the baseline carries no sampling noise. An empty
    group counts as 0. ``None`` if there are no problems.
    """
    return _mean([_fraction_correct(g, correct) for g in groups])


def oracle_accuracy(groups: Iterable[Sequence[T]], correct: Correct) -> float | None:
    """Fraction of problems with at least one correct candidate (pass@N): the ceiling of any selection rule."""
    return _mean([oracle_value(g, correct) for g in groups])


def best_of_n(groups: Iterable[Sequence[T]], *, score: Score, correct: Correct, answer: Answer | None = None,
              equivalent: Equivalent | None = None, n: int | None = None) -> dict[str, float | int | None]:
    """Every Best-of-N accuracy of one pool, side by side.

    Keys: ``problems``; ``prm`` (:func:`pick_accuracy`), ``random`` (:func:`random_pick_accuracy`),
    ``oracle`` (:func:`oracle_accuracy`) and, when ``answer`` is given, ``majority`` and
    ``weighted_majority`` (:func:`vote_accuracy` without and with the PRM score as weight).
    With ``n``, only the first ``n`` candidates of each group take part (see :func:`accuracy_at_n`).
    """
    pools = [list(g) if n is None else list(g)[:n] for g in groups]
    out: dict[str, float | int | None] = {
        "problems": len(pools),
        "prm": pick_accuracy(pools, score, correct),
        "random": random_pick_accuracy(pools, correct),
        "oracle": oracle_accuracy(pools, correct),
    }
    if answer is not None:
        out["majority"] = vote_accuracy(pools, answer, correct, None, equivalent)
        out["weighted_majority"] = vote_accuracy(pools, answer, correct, score, equivalent)
    return out


def accuracy_at_n(groups: Iterable[Sequence[T]], ns: Iterable[int], *, score: Score, correct: Correct,
                  answer: Answer | None = None, equivalent: Equivalent | None = None
                  ) -> dict[int, dict[str, float | int | None]]:
    """:func:`best_of_n` restricted to the first ``n`` candidates of each group, for each ``n`` in ``ns``.

    The accuracy-vs-N curve of the Best-of-N literature. Candidates are sampled independently, so the
    first ``n`` are an unbiased sample of size ``n`` and the curve needs no resampling.
    """
    pools = [list(g) for g in groups]
    for n in ns:
        if n < 1:
            raise ValueError(f"accuracy_at_n: n must be >= 1, got {n}")
    return {n: best_of_n(pools, score=score, correct=correct, answer=answer, equivalent=equivalent, n=n)
            for n in ns}


# ---- Best-of-N: one problem's credit, and its expectation over random subsets of N candidates -------------

def pick_value(candidates: Sequence[T], score: Score, correct: Correct) -> float:
    """One problem's credit for picking the highest-scored candidate: the mean correctness of the tied top
    candidates (1 or 0 without a tie); 0 when no candidate is scored."""
    return _fraction_correct(top_candidates(candidates, score), correct)


def vote_value(candidates: Sequence[T], answer: Answer, correct: Correct, weight: Score | None = None,
               equivalent: Equivalent | None = None) -> float:
    """One problem's credit for a (weighted) majority vote: the winning answer's candidates' mean correctness,
    averaged over tied winning answers; 0 when no candidate has an answer."""
    answers = [answer(c) for c in candidates]
    weights = [weight(c) for c in candidates] if weight is not None else None
    clusters = _clusters(answers, weights, equivalent)
    if not clusters:
        return 0.0
    most = max(total for _, total, _ in clusters)
    won = [_fraction_correct([candidates[i] for i in members], correct)
           for _, total, members in clusters if total == most]
    return sum(won) / len(won)


def oracle_value(candidates: Sequence[T], correct: Correct) -> float:
    """1.0 when any candidate is correct (pass@N of one problem), else 0.0."""
    return 1.0 if any(correct(c) for c in candidates) else 0.0


def subsets(size: int, n: int, limit: int, rng: random.Random) -> tuple[list[tuple[int, ...]], bool]:
    """Index subsets of ``n`` of ``range(size)`` to average a Best-of-N rule over, and whether they are all of them.

    Every subset when there are at most ``limit`` (``C(size, n)``; exact), else ``limit`` subsets drawn
    uniformly at random, each without replacement (an estimate). ``n >= size`` gives the whole group once:
    a problem with fewer than ``n`` candidates takes part with all it has. Indices are sorted, so a subset
    keeps the candidates' input order.
    """
    if n < 1:
        raise ValueError(f"subsets: n must be >= 1, got {n}")
    if limit < 1:
        raise ValueError(f"subsets: limit must be >= 1, got {limit}")
    if n >= size:
        return [tuple(range(size))], True
    if math.comb(size, n) <= limit:
        return list(itertools.combinations(range(size), n)), True
    return [tuple(sorted(rng.sample(range(size), n))) for _ in range(limit)], False


@dataclass(frozen=True, slots=True)
class SubsetAccuracy:
    """A rule's accuracy at one N: its expectation over random draws of N candidates per problem.

    ``std`` is the standard deviation of the accuracy over such draws (what repeating the experiment with
    other seeds would show), ``sqrt(Σ Var_problem) / problems``; ``exact`` says every subset of every
    problem was enumerated (no sampling error in ``accuracy``).
    """

    accuracy: float | None
    std: float | None
    exact: bool


def subset_accuracy(groups: Sequence[Sequence[T]], n: int, rules: Mapping[str, Callable[[Sequence[T]], float]],
                    *, samples: int = 1000, seed: int = 0) -> dict[str, SubsetAccuracy]:
    """Best-of-N accuracy of each rule at ``n``: sub-sample ``n`` candidates per problem without replacement.

    ``rules[name](subset)`` is one problem's credit in ``[0, 1]`` for the candidates it was shown (e.g.
    ``lambda s: pick_value(s, score, correct)``). Per problem, every subset of :func:`subsets` is scored
    (exactly when there are at most ``samples`` of them, else ``samples`` random ones from a generator
    seeded by ``(seed, n, problem index)``, so results are reproducible); all rules see the same subsets,
    so differences between rules carry no extra sampling noise. The accuracy is the mean over problems of
    each problem's mean credit; ``None`` (and ``std`` ``None``) when there are no problems.
    """
    sums: dict[str, list[float]] = {name: [] for name in rules}
    variances: dict[str, list[float]] = {name: [] for name in rules}
    exact = True
    for index, candidates in enumerate(groups):
        rng = random.Random(f"{seed}/{n}/{index}")
        chosen, complete = subsets(len(candidates), n, samples, rng)
        exact = exact and complete
        shown = [[candidates[i] for i in subset] for subset in chosen]
        for name, rule in rules.items():
            values = [rule(subset) for subset in shown]
            mean = math.fsum(values) / len(values)
            sums[name].append(mean)
            variances[name].append(math.fsum((v - mean) ** 2 for v in values) / len(values))
    problems = len(groups)
    if not problems:
        return {name: SubsetAccuracy(None, None, True) for name in rules}
    return {name: SubsetAccuracy(math.fsum(sums[name]) / problems, math.sqrt(math.fsum(variances[name])) / problems,
                                 exact) for name in rules}


# ---- ProcessBench / PRMBench: first-error identification ---------------------------------------------

@dataclass(frozen=True, slots=True)
class FirstErrorF1:
    """ProcessBench's metric for one sample set; accuracies are fractions (ProcessBench prints them ×100)."""

    f1: float | None
    acc_erroneous: float | None
    acc_correct: float | None
    n_erroneous: int
    n_correct: int
    threshold: float | None = None

    def as_dict(self, digits: int | None = 4) -> dict[str, float | int | None]:
        """Plain dict for JSON; floats rounded to ``digits`` (``None`` keeps them exact)."""
        out = asdict(self)
        if digits is not None:
            out = {k: round(v, digits) if isinstance(v, float) else v for k, v in out.items()}
        return out


def first_error_of_labels(step_labels: Sequence[float | None] | None) -> int | None:
    """The gold side of :func:`first_error_index`: the first step labelled bad (< 0.5), -1 when every step is
    labelled good, ``None`` when it cannot be placed (no labels, or an unknown label before any bad one)."""
    if not step_labels:
        return None
    for i, label in enumerate(step_labels):
        if label is None:
            return None
        if label < 0.5:
            return i
    return -1


def first_error_index(step_rewards: Sequence[float], threshold: float) -> int:
    """Index of the first step whose reward is below ``threshold``, or -1 if none is.

    How a PRM is read on ProcessBench (Qwen2.5-Math-PRM uses threshold 0.5): a step judged incorrect
    ends the solution's correctness, so the prediction is the first such step; -1 says "no error".
    ProcessBench's TRL script reads ``argmax`` over two classes, which flags a reward of exactly 0.5;
    here a step is flagged only strictly below the threshold.
    """
    for i, reward in enumerate(step_rewards):
        if reward < threshold:
            return i
    return -1


def first_error_f1(predicted: Sequence[int], labels: Sequence[int]) -> FirstErrorF1:
    """ProcessBench F1 of predicted first-error indices against labels (-1 = the solution has no error).

    Exactly as ProcessBench's official evaluation (QwenLM/ProcessBench, ``code/run_eval_prm_trl.py`` and
    ``code/run_eval_prm_rlhflow.py``): ``match = prediction == label``; ``acc1`` is the match rate on
    erroneous samples (``label != -1``: the exact first error step must be found), ``acc2`` the match
    rate on correct samples (``label == -1``: no error may be reported), and
    ``F1 = 2·acc1·acc2 / (acc1 + acc2)``, their harmonic mean — so a critic that always says "no error",
    or flags everything, scores 0 however the two classes are balanced.

    Where ProcessBench's numpy code would give NaN: an empty class makes its accuracy and F1 ``None``
    (undefined), and ``acc1 = acc2 = 0`` gives F1 0.0 (the harmonic mean's limit), so thresholds can
    still be compared.
    """
    if len(predicted) != len(labels):
        raise ValueError(f"first_error_f1: {len(predicted)} predictions but {len(labels)} labels")
    erroneous = [p == y for p, y in zip(predicted, labels) if y != -1]
    correct = [p == y for p, y in zip(predicted, labels) if y == -1]
    return _f1(sum(erroneous), len(erroneous), sum(correct), len(correct), None)


def _f1(hits_err: int, n_err: int, hits_ok: int, n_ok: int, threshold: float | None) -> FirstErrorF1:
    acc_err = hits_err / n_err if n_err else None
    acc_ok = hits_ok / n_ok if n_ok else None
    if acc_err is None or acc_ok is None:
        f1 = None
    else:
        f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err + acc_ok else 0.0
    return FirstErrorF1(f1, acc_err, acc_ok, n_err, n_ok, threshold)


def _check_labels(step_rewards: Sequence[Sequence[float]], labels: Sequence[int]) -> None:
    if len(step_rewards) != len(labels):
        raise ValueError(f"{len(step_rewards)} step-reward lists but {len(labels)} labels")
    bad = [y for y in labels if y < -1]
    if bad:
        raise ValueError(f"first-error label {bad[0]} < -1; use -1 for 'no error', else the 0-based step index")


def threshold_f1(step_rewards: Sequence[Sequence[float]], labels: Sequence[int], threshold: float) -> FirstErrorF1:
    """ProcessBench F1 when each sample's prediction is :func:`first_error_index` at ``threshold``."""
    _check_labels(step_rewards, labels)
    predicted = [first_error_index(r, threshold) for r in step_rewards]
    result = first_error_f1(predicted, labels)
    return FirstErrorF1(result.f1, result.acc_erroneous, result.acc_correct, result.n_erroneous,
                        result.n_correct, threshold)


def best_threshold(step_rewards: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """The threshold maximising :func:`threshold_f1` on these (training) samples, searched exactly.

    A PRM's reward scale is its own (a small model's rewards may sit well away from 0.5), so the
    threshold is chosen on a training split and then applied unchanged to the dev/test split.

    Each sample is matched for thresholds in one interval: a correct sample for ``t <= min(rewards)``;
    a sample whose first error is step ``k`` for ``rewards[k] < t <= min(rewards[:k])``. So F1 is
    piecewise constant in ``t`` and changes only at those interval ends: every piece is tried (its
    midpoint; the lowest piece at its upper end, the highest just above the largest end) in
    O(n log n), with no grid to miss the optimum. Equal F1s go to the lowest threshold.

    Raises ``ValueError`` unless both erroneous and correct samples are present (F1 is undefined).
    """
    _check_labels(step_rewards, labels)
    spans_err: list[tuple[float, float]] = []
    spans_ok: list[tuple[float, float]] = []
    for rewards, label in zip(step_rewards, labels):
        if label == -1:
            spans_ok.append((-math.inf, min(rewards) if rewards else math.inf))
        elif label < len(rewards):
            upper = min(rewards[:label]) if label else math.inf
            if rewards[label] < upper:
                spans_err.append((rewards[label], upper))
    n_err = sum(1 for y in labels if y != -1)
    n_ok = len(labels) - n_err
    if not n_err or not n_ok:
        raise ValueError("best_threshold needs both erroneous (label >= 0) and correct (label -1) samples")

    def counter(spans: list[tuple[float, float]]) -> Callable[[float], int]:
        lows = sorted(a for a, _ in spans)
        highs = sorted(b for _, b in spans)
        return lambda t: bisect_left(lows, t) - bisect_left(highs, t)  # #{a < t} - #{b < t} = #{a < t <= b}

    hits_err, hits_ok = counter(spans_err), counter(spans_ok)
    ends = sorted({x for span in spans_err + spans_ok for x in span if math.isfinite(x)})
    if not ends:  # nothing depends on the threshold; any value gives the same F1
        return 0.5
    candidates = [ends[0]]
    for low, high in zip(ends, ends[1:]):
        mid = (low + high) / 2
        candidates.append(mid if low < mid <= high else high)
    candidates.append(math.nextafter(ends[-1], math.inf))
    best, best_f1 = candidates[0], -1.0
    for t in candidates:
        f1 = _f1(hits_err(t), n_err, hits_ok(t), n_ok, t).f1 or 0.0
        if f1 > best_f1:
            best, best_f1 = t, f1
    return best


# ---- PRMBench: step-level PRMScore ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StepCounts:
    """PRMBench's confusion counts over steps, in *its* naming: the positive class is a **correct** step.

    ``tp``: correct step predicted valid; ``fn``: correct step predicted invalid; ``fp``: erroneous step
    predicted valid; ``tn``: erroneous step predicted invalid (the error was caught).
    """

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def __add__(self, other: "StepCounts") -> "StepCounts":
        return StepCounts(self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn)


def prmbench_step_counts(error_steps: Sequence[int], step_rewards: Sequence[float], threshold: float = 0.5
                         ) -> StepCounts:
    """One PRMBench sample's step counts, as ``eval_on_hallucination_step`` in ssmisya/PRMBench
    ``mr_eval/tasks/prmtest_classified/task.py`` computes them.

    ``error_steps`` are PRMBench's 1-based step numbers. A step is predicted *valid* when its reward is
    strictly above the threshold (``step_level_validity_labels = [s > validity_threshold ...]`` in
    ``mr_eval/models/qwen_prm.py``, threshold 0.5), so a reward of exactly 0.5 counts as flagged — the
    opposite tie rule from ProcessBench's. As upstream, the loop runs over the *predicted* steps: steps
    the model gave no reward (a truncated trace) count nowhere, and an error step past them is not seen.
    """
    errors = {e - 1 for e in error_steps}  # upstream: "hallucination_steps are 0-indexed"
    tp = fp = tn = fn = 0
    for index, reward in enumerate(step_rewards):
        valid = reward > threshold
        if index in errors:
            fp, tn = (fp + 1, tn) if valid else (fp, tn + 1)
        else:
            tp, fn = (tp + 1, fn) if valid else (tp, fn + 1)
    return StepCounts(tp, fp, tn, fn)


def _binary_f1(hits: int, false_alarms: int, misses: int) -> float | None:
    """F1 from counts; ``None`` where PRMBench's code would print -1 (an empty denominator)."""
    precision = hits / (hits + false_alarms) if hits + false_alarms else None
    recall = hits / (hits + misses) if hits + misses else None
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall) if precision + recall else None


@dataclass(frozen=True, slots=True)
class PRMScore:
    """PRMBench's headline metric over a set of samples.

    ``f1_correct`` is upstream's ``f1`` (correct steps as positives), ``f1_error`` its ``negative_f1``
    (erroneous steps as positives) and ``prmscore = 0.5·f1_correct + 0.5·f1_error`` (the paper's
    ``PRMScore = w1·F1_neg + w2·F1`` with ``w1 = w2 = 0.5``). Undefined values are ``None`` where upstream
    writes -1 (e.g. ``f1_error`` on the all-correct "correct" class); ``prmscore`` is then ``None`` too.
    """

    prmscore: float | None
    f1_correct: float | None
    f1_error: float | None
    counts: StepCounts
    samples: int

    def as_dict(self, digits: int | None = 4) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return round(x, digits) if x is not None and digits is not None else x
        return {"prmscore": r(self.prmscore), "f1_correct": r(self.f1_correct), "f1_error": r(self.f1_error),
                "samples": self.samples, **asdict(self.counts)}


def prmscore(counts: StepCounts, samples: int = 0) -> PRMScore:
    """:class:`PRMScore` of summed :func:`prmbench_step_counts` (upstream sums TP/FP/TN/FN over samples, then
    takes F1 once: a micro average over steps, not a mean of per-sample F1s)."""
    f1_correct = _binary_f1(counts.tp, counts.fp, counts.fn)
    f1_error = _binary_f1(counts.tn, counts.fn, counts.fp)
    score = 0.5 * f1_correct + 0.5 * f1_error if f1_correct is not None and f1_error is not None else None
    return PRMScore(score, f1_correct, f1_error, counts, samples)


# ---- Outcome: AUPRC and calibration --------------------------------------------------------------------

def _check_binary(name: str, scores: Sequence[float], labels: Sequence[bool]) -> None:
    if len(scores) != len(labels):
        raise ValueError(f"{name}: {len(scores)} scores but {len(labels)} labels")
    if any(math.isnan(s) for s in scores):
        raise ValueError(f"{name}: a score is NaN; drop unscored items first")


def auprc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the precision–recall curve as *average precision*: ``Σ (R_k − R_{k−1}) · P_k`` over the
    distinct score thresholds, highest first — sklearn's ``average_precision_score``, which (unlike a
    trapezoid over the PR curve) is not optimistic. Tied scores enter together at one threshold.

    Against a base rate of ``positives / n`` (a random scorer's AUPRC), it shows how well a PRM finds the
    rare class. ``None`` when there is no positive.
    """
    _check_binary("auprc", scores, labels)
    positives = sum(1 for y in labels if y)
    if positives == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    area, hits, seen, start = 0.0, 0, 0, 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        new_hits = sum(1 for i in order[start:end + 1] if labels[i])
        hits += new_hits
        seen = end + 1
        if new_hits:
            area += (new_hits / positives) * (hits / seen)
        start = end + 1
    return area


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One bin of a reliability diagram: scores in ``(low, high]`` (the first bin includes 0)."""

    low: float
    high: float
    count: int
    mean_score: float | None  # mean confidence in the bin
    accuracy: float | None  # fraction of positives in the bin


def reliability_bins(scores: Sequence[float], labels: Sequence[bool], bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1], binned as sklearn's ``calibration_curve(strategy="uniform")`` does (a score
    on an inner edge goes to the lower bin). Scores must be probabilities: a score outside [0, 1] is an error,
    since its calibration means nothing."""
    _check_binary("reliability_bins", scores, labels)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    bad = [s for s in scores if not 0.0 <= s <= 1.0]
    if bad:
        raise ValueError(f"calibration needs scores in [0, 1] (probabilities); got {bad[0]}")
    edges = [k / bins for k in range(bins + 1)]
    inner = edges[1:-1]
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, s in enumerate(scores):
        members[bisect_left(inner, s)].append(i)
    out = []
    for k, idx in enumerate(members):
        mean_score = math.fsum(scores[i] for i in idx) / len(idx) if idx else None
        accuracy = sum(1 for i in idx if labels[i]) / len(idx) if idx else None
        out.append(ReliabilityBin(edges[k], edges[k + 1], len(idx), mean_score, accuracy))
    return out


def ece(scores: Sequence[float], labels: Sequence[bool], bins: int = 10) -> float | None:
    """Expected calibration error: ``Σ_b (n_b / n) · |accuracy_b − mean_score_b|`` over :func:`reliability_bins`.

    0 for a perfectly calibrated scorer; it says whether a score of 0.8 really means "right 80% of the time",
    which a threshold or a weighted vote silently relies on. ``None`` on no scores.
    """
    table = reliability_bins(scores, labels, bins)
    n = sum(b.count for b in table)
    if not n:
        return None
    return math.fsum(b.count / n * abs(b.accuracy - b.mean_score) for b in table if b.count)  # type: ignore[operator]


# ---- confidence intervals ---------------------------------------------------------------------------------

def bootstrap_ci(groups: Sequence[Sequence[T]], statistic: Callable[[list[Sequence[T]]], "float | None"], *,
                 resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` resampling whole *groups* (problems) with replacement.

    Why groups: responses to one problem are correlated (same difficulty, often the same answer), so resampling
    responses would make small dev sets look more certain than they are. ``statistic`` receives the resampled
    list of groups; resamples where it is undefined (``None``, e.g. AUROC with one class) are skipped. Returns
    ``None`` when fewer than half the resamples are defined. Seeded: the same inputs give the same interval.
    """
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"bootstrap_ci: need 0 < level < 1 and resamples >= 1, got {level}, {resamples}")
    pools = list(groups)
    if not pools:
        return None
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        value = statistic([pools[rng.randrange(len(pools))] for _ in pools])
        if _usable(value):
            values.append(float(value))  # type: ignore[arg-type]
    if len(values) < resamples / 2:
        return None
    values.sort()
    tail = (1 - level) / 2
    lo = values[min(len(values) - 1, int(math.floor(tail * len(values))))]
    hi = values[min(len(values) - 1, int(math.ceil((1 - tail) * len(values))) - 1)]
    return lo, hi


# ---- correlation -----------------------------------------------------------------------------------------

def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; ``None`` when fewer than two pairs or either side is constant."""
    if len(x) != len(y):
        raise ValueError(f"pearson: {len(x)} values against {len(y)}")
    if len(x) < 2:
        return None
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else None


def _ranks(x: Sequence[float]) -> list[float]:
    """0-based ranks, ties sharing their average rank."""
    order = sorted(range(len(x)), key=x.__getitem__)
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson of average ranks); ``None`` where :func:`pearson` is undefined."""
    return pearson(_ranks(x), _ranks(y))
