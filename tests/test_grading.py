"""fluxprm.grading: extraction, equivalence on the data sets' gold types, and timeouts that hold in threads,
thread pools and worker processes (spawn and fork)."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from fluxprm.grading import Grader, extract_answer, grade, is_equivalent

# Makes sympy (through math-verify) compute for minutes: evaluating 10^(10^8) numerically.
PATHOLOGICAL = "$10^{10^{8}}$"

# (prediction, gold, expected) in the shapes the data sets use: AIME "025", MATH strings, numeric golds,
# LaTeX tuples, OlympiadBench lists.
CASES = [
    ("27", 27.0, True),
    ("27.0", "27", True),
    (27.0, "27", True),
    ("25", "025", True),
    ("025", 25, True),
    ("70", 70, True),
    ("\\frac{1}{2}", "0.5", True),
    ("0.5", "$\\frac{1}{2}$", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("(1,2)", (1, 2), True),
    ("(1, 2)", "$(1,2)$", True),
    ("x = 3", "3", True),
    ("\\sqrt{18}", "3\\sqrt{2}", True),
    ("\\frac{\\sqrt{2}}{2}", ["$\\frac{1}{\\sqrt{2}}$"], True),
    ("2, 1", ["$1$", "$2$"], True),  # several gold answers: all of them, any order
    ("50\\%", "50", True),
    ("26", 27, False),
    ("24", "025", False),
    ("\\frac{1}{3}", "0.5", False),
    ("(2,1)", (1, 2), False),
    ("1", ["$1$", "$2$"], False),
    ("3\\sqrt{3}", "3\\sqrt{2}", False),
]


@pytest.fixture(scope="module")
def grader():
    g = Grader(max_workers=2)
    yield g
    g.shutdown()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("first \\boxed{3}, corrected: \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("nested \\boxed{\\frac{\\sqrt{2}}{2}} done", "\\frac{\\sqrt{2}}{2}"),
        ("$\\fbox{42}$", "42"),
        ("\\boxed 7 is it", "7"),
        ("The final answer is $5$. I hope it is correct.", "5"),
        ("Some work.\n**Answer:** 1.5", "1.5"),
        ("answer: (1, 2)\n", "(1, 2)"),
        ("unbalanced \\boxed{3 and no answer", None),
        ("nothing here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("pred, gold, expected", CASES)
def test_equivalence(grader, pred, gold, expected):
    assert grader.is_equivalent(pred, gold) is expected


def test_fast_path_and_pool_both_used(grader):
    before = dict(grader.stats)
    assert grader.is_equivalent("27.0", 27)  # numbers: decided without sympy
    assert grader.is_equivalent("x=27", 27)  # needs math-verify
    assert grader.stats["fast"] == before["fast"] + 1
    assert grader.stats["pool"] == before["pool"] + 1


def test_grade():
    assert grade("Adding up, we get $\\boxed{\\dfrac{1}{2}}$.", "0.5")
    assert grade("The final answer is 025.", 25)
    assert not grade("Adding up, we get $\\boxed{3}$.", "0.5")
    assert not grade("I don't know.", "0.5")


@pytest.mark.parametrize(
    "pred, gold",
    [
        (None, "1"), ("", "1"), ("1", None), ("1", ""), ("}}{{\\frac", "1"), ("\\frac{", "\\sqrt["),
        ("1", object()), ("1", []), ("x" * 100_000, "1"), ("1" * 5000, "1" * 4999 + "2"), ("$$", "$"),
    ],
)
def test_garbage_is_false_not_an_error(grader, pred, gold):
    assert grader.is_equivalent(pred, gold, timeout=2) is False


def test_thread_pool_of_8(grader):
    cases = CASES * 3
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda c: grader.is_equivalent(c[0], c[1]), cases))
    assert results == [c[2] for c in cases]


def _work(args):
    pred, gold = args
    return is_equivalent(pred, gold)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_process_pool(method):
    # With fork, the parent's default grader already has workers: the children must not share them.
    assert is_equivalent("x=1", "1")
    cases = CASES[:12] + CASES[-6:]
    with ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        results = list(ex.map(_work, [(p, g) for p, g, _ in cases]))
    assert results == [e for _, _, e in cases]
    assert is_equivalent("x=2", "2")  # the parent's workers still work


def test_daemonic_pool_worker():
    # multiprocessing.Pool workers are daemonic: they may not start multiprocessing children.
    with mp.get_context("fork").Pool(2) as pool:
        assert pool.map(_work, [("x=3", "3"), ("4", "5"), ("\\sqrt{4}", "2")]) == [True, False, True]


def _timed(fn, *args, **kw):
    t = time.monotonic()
    out = fn(*args, **kw)
    return out, time.monotonic() - t


def test_pathological_input_soft_timeout_in_a_thread(grader):
    grader.is_equivalent("x=1", "1")  # a worker is up
    box = {}

    def run():
        box["result"] = _timed(grader.is_equivalent, PATHOLOGICAL, "5", timeout=2)

    before = grader.stats["timeouts"]
    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert not t.is_alive()
    result, elapsed = box["result"]
    assert result is False
    assert grader.stats["timeouts"] == before + 1  # sympy really ran until the timer stopped it
    assert 1.5 < elapsed < 2 + 2
    assert grader.is_equivalent("x=1", "1")  # the worker survived


def test_pathological_input_worker_killed():
    # Without the in-worker timer, the sympy computation runs until the caller kills the worker.
    g = Grader(max_workers=1, soft_timeout=False)
    try:
        assert g.is_equivalent("x=1", "1")
        result, elapsed = _timed(g.is_equivalent, PATHOLOGICAL, "5", timeout=2)
        assert result is False
        assert g.stats["killed"] == 1
        assert 1.5 < elapsed < 2 + 2
        assert g.is_equivalent("x=1", "1")  # a fresh worker took over
        assert g.pool.size() == 1
    finally:
        g.shutdown()


def test_uninterruptible_hang_killed():
    # A test hook makes the worker block SIGALRM and sleep: only the caller's kill can end it.
    g = Grader(max_workers=1, test_hooks=True)
    try:
        assert g.is_equivalent("x=1", "1")
        result, elapsed = _timed(g.is_equivalent, "1", "1", timeout=1, _hook="hang")
        assert result is False  # although "1" == "1": the answer never came
        assert g.stats["killed"] == 1
        assert elapsed < 1 + 2
        assert g.is_equivalent("x=1", "1")
    finally:
        g.shutdown()


def _pathological_in_child(_):
    t = time.monotonic()
    return is_equivalent(PATHOLOGICAL, "5", timeout=2), time.monotonic() - t


def test_pathological_input_in_spawned_worker():
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        ex.submit(is_equivalent, "x=1", "1").result()  # start-up outside the timed call
        result, elapsed = ex.submit(_pathological_in_child, None).result(timeout=60)
    assert result is False
    assert elapsed < 2 + 2


def test_module_import_is_cheap():
    # Importing fluxprm.grading must not pull in sympy / math-verify: only the worker processes load them.
    import subprocess
    import sys

    code = (
        "import sys, fluxprm; before = set(sys.modules); import fluxprm.grading; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('sympy', 'math_verify', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_shutdown_and_restart():
    g = Grader(max_workers=1)
    assert g.is_equivalent("x=1", "1")
    pid = next(iter(g.pool._all)).proc.pid
    g.shutdown()
    assert g.pool.size() == 0
    assert g.is_equivalent("y=2", "2")
    assert next(iter(g.pool._all)).proc.pid != pid
    g.shutdown()
