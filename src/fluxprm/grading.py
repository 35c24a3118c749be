"""Answer extraction and equivalence checking, safe to call from any thread or process.

``math_verify`` (sympy underneath) is the judge of equivalence, but its own timeouts use ``signal.alarm``,
which only works in the main thread, and some inputs make sympy run for minutes. So:

1. A fast path decides most calls without sympy: normalised string equality, and exact number comparison
   (``"27.0" == "27" == 27``, ``"025" == 25``, ``"0.5" == "\\frac{1}{2}"``).
2. Everything else goes to a small pool of persistent worker processes (plain ``subprocess`` children, so
   they also work from daemonic multiprocessing workers, after ``fork`` and under ``spawn``). Each worker
   runs math-verify with its signal timeouts off and bounds the call with its own interval timer (a soft
   timeout: the worker answers ``False`` and stays alive). If the worker does not answer by
   ``timeout + 0.5 s`` (sympy stuck in C code, signals blocked) the caller kills it and answers ``False``;
   a replacement is started in the background. Workers are also capped at 4 GB of address space
   (``FLUXPRM_GRADING_MEMORY_MB``), so a runaway computation fails instead of exhausting memory.

Workers: ``FLUXPRM_GRADING_WORKERS`` (default min(4, max(2, CPUs))), started on first need.

Nothing here raises on bad input: garbage gives ``False`` (logged at debug level).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
import weakref
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

__all__ = ["extract_answer", "is_equivalent", "grade", "Grader", "GradingError", "shutdown"]

logger = logging.getLogger(__name__)

HARD_GRACE = 0.5  # seconds a worker gets beyond the soft timeout before it is killed
STARTUP_TIMEOUT = 60.0  # a worker must import math-verify within this


class GradingError(RuntimeError):
    """The grading workers cannot run (e.g. math-verify is not installed). Not raised for bad answers."""


# ----------------------------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_ANSWER_RE = re.compile(
    r"(?:final\s+answer\s*(?:is|:)|answer\s*(?:is\s*)?:)\s*(?P<ans>[^\n]+)",
    re.IGNORECASE,
)


def _balanced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[start] == '{'`` and the index after it."""
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2  # an escaped character, e.g. \{ or \}
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def _last_boxed(text: str) -> str | None:
    for m in reversed(list(_BOX_RE.finditer(text))):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            group = _balanced(text, i)
            if group is not None:
                return group[0]
        elif m.end() < len(text) and text[m.end()] == " ":  # "\boxed 5"
            token = re.match(r"\s*([^\s$]+)", text[m.end() :])
            if token:
                return token.group(1)
    return None


def _clean_answer(ans: str) -> str:
    ans = ans.strip().replace("**", "").strip()
    if ans.startswith("$"):
        end = ans.find("$", 1 + (ans.startswith("$$")))
        if end > 0:
            ans = ans[: end + 1]
    else:
        ans = re.split(r"\.\s", ans, maxsplit=1)[0]  # "5. I hope it is correct." -> "5"
    ans = ans.strip().rstrip(".").strip()
    boxed = _last_boxed(ans)
    return (boxed if boxed is not None else _strip_math(ans)).strip()


def extract_answer(text: str) -> str | None:
    """The final answer of a response: the last ``\\boxed{...}``/``\\fbox{...}`` (balanced braces), else the
    last "final answer is X" / "Answer: X", else ``None``."""
    if not isinstance(text, str) or not text:
        return None
    try:
        boxed = _last_boxed(text)
        if boxed is not None and boxed.strip():
            return boxed.strip()
        matches = list(_ANSWER_RE.finditer(text))
        for m in reversed(matches):
            ans = _clean_answer(m.group("ans"))
            if ans:
                return ans
    except Exception:  # noqa: BLE001 - extraction never raises
        logger.debug("answer extraction failed", exc_info=True)
    return None


# ------------------------------------------------------------------------------------------------ fast path

_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_INT_RE = re.compile(r"[+-]?\d+")
_DEC_RE = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)")
_SLASH_RE = re.compile(r"([+-]?\d+)/(\d+)")
_FRAC_RE = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{(\d+)\}")


def _strip_math(s: str) -> str:
    s = s.strip()
    changed = True
    while changed:
        changed = False
        for left, right in _MATH_DELIMS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
                changed = True
                break
    return s


def _norm(s: str) -> str:
    s = _strip_math(s)
    boxed = _last_boxed(s) if s.startswith(("\\boxed", "\\fbox")) else None
    if boxed is not None:
        s = _strip_math(boxed)
    for a, b in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""),
                 ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""), ("~", "")):
        s = s.replace(a, b)
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def _number(s: str) -> tuple[Fraction, bool] | None:
    """``(value, exact)`` for a plain number (integer, decimal, a/b, \\frac{a}{b}); ``None`` otherwise."""
    if _INT_RE.fullmatch(s):
        return Fraction(int(s)), True
    if _DEC_RE.fullmatch(s):
        try:
            return Fraction(Decimal(s)), False
        except (InvalidOperation, ValueError):
            return None
    m = _SLASH_RE.fullmatch(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2))), True
    m = _FRAC_RE.fullmatch(s)
    if m and int(m.group(3)) != 0:
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return (-value if m.group(1) == "-" else value), True
    return None


def _fast_equal(pred: str, gold: str) -> bool | None:
    """``True``/``False`` when decidable without sympy, else ``None``."""
    p, g = _norm(pred), _norm(gold)
    if p == g:
        return True
    if len(p) > 64 or len(g) > 64:  # keep int() away from giant digit strings
        return None
    pn, gn = _number(p), _number(g)
    if pn is None or gn is None:
        return None
    if pn[0] == gn[0]:
        return True
    if pn[1] and gn[1]:  # two exact numbers that differ
        return False
    return None  # a decimal is involved: math-verify's rounding rules decide


def _gold_to_str(gold: Any) -> str:
    if isinstance(gold, bool):
        return str(gold)
    if isinstance(gold, float):
        if gold != gold or gold in (float("inf"), float("-inf")):
            return str(gold)
        return str(int(gold)) if gold.is_integer() else repr(gold)
    if isinstance(gold, (int, Fraction, Decimal)):
        return str(gold)
    if isinstance(gold, tuple):
        return "(" + ", ".join(_strip_math(_gold_to_str(x)) for x in gold) + ")"
    if isinstance(gold, str):
        return gold
    raise TypeError(f"unsupported gold answer type {type(gold).__name__}")


def _gold_string(gold: Any) -> str:
    """One gold string. A list with several answers (OlympiadBench ``final_answer``) means all of them, in
    any order: it becomes ``"a, b"``, which math-verify reads as a set."""
    if isinstance(gold, (list, set, frozenset)):
        items = [_strip_math(_gold_to_str(x)) for x in gold]
        if not items:
            raise ValueError("empty gold answer list")
        return items[0] if len(items) == 1 else ", ".join(items)
    return _gold_to_str(gold)


# ------------------------------------------------------------------------------------------------- workers

# Runs in the worker with `python -c`; independent of the fluxprm package so worker start-up stays cheap.
_WORKER_SOURCE = r"""
import json, logging, os, resource, signal, sys, threading, time
out = os.fdopen(os.dup(1), "w", buffering=1)
try:  # a runaway sympy computation gets a MemoryError rather than the machine's memory
    limit = int(os.environ.get("FLUXPRM_GRADING_MEMORY_MB", "4096")) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
except (ValueError, OSError):
    pass
os.dup2(2, 1)  # stray prints must not corrupt the protocol channel
logging.disable(logging.CRITICAL)
from math_verify import parse, verify

class SoftTimeout(BaseException):
    pass

def on_alarm(signum, frame):
    raise SoftTimeout()

signal.signal(signal.SIGALRM, on_alarm)
parent = os.getppid()

def watch_parent():
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)

threading.Thread(target=watch_parent, daemon=True).start()

def parse_answer(s):
    s = s.strip()
    res = parse(s if "$" in s else "$" + s + "$", parsing_timeout=None)
    return res or parse(s, parsing_timeout=None)

def equal(pred, gold):
    p = parse_answer(pred)
    if not p:
        return False
    g = parse_answer(gold)
    return bool(g) and bool(verify(g, p, timeout_seconds=None))

hooks = os.environ.get("FLUXPRM_GRADING_TEST_HOOKS") == "1"
out.write(json.dumps({"ready": os.getpid()}) + "\n")
for line in sys.stdin:
    req = json.loads(line)
    try:
        try:
            if req.get("soft"):
                signal.setitimer(signal.ITIMER_REAL, float(req["soft"]))
            if hooks and req.get("hook") == "hang":  # test hook: a hang no signal can interrupt
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
                time.sleep(3600)
            res = {"ok": equal(req["pred"], req["gold"])}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except SoftTimeout:
        res = {"ok": False, "timeout": True}
    except Exception as e:
        res = {"ok": False, "error": repr(e)[:300]}
    out.write(json.dumps(res) + "\n")
"""


class _Worker:
    def __init__(self, env: dict[str, str]):
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_SOURCE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        except OSError as e:
            raise GradingError(f"cannot start a grading worker with {sys.executable}: {e}") from e
        self._buf = b""
        ready = self._read_line(time.monotonic() + STARTUP_TIMEOUT)
        if ready is None or "ready" not in ready:
            self.kill()
            raise GradingError(
                "the grading worker did not start; check that math-verify imports: "
                f"{sys.executable} -c 'import math_verify'"
            )

    def _read_line(self, deadline: float) -> dict | None:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the worker died
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, request: dict, deadline: float) -> dict | None:
        """The worker's answer, or ``None`` if it did not answer by ``deadline`` (or died)."""
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return None
        return self._read_line(deadline)

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass
        self.close_pipes()

    def close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass


_POOLS: "weakref.WeakSet[_Pool]" = weakref.WeakSet()


class _Pool:
    """Up to ``max_workers`` workers, started on demand; one caller uses a worker at a time."""

    def __init__(self, max_workers: int, test_hooks: bool = False):
        self.max_workers = max(1, max_workers)
        self.env = dict(os.environ)
        if test_hooks:
            self.env["FLUXPRM_GRADING_TEST_HOOKS"] = "1"
        self._reset()
        _POOLS.add(self)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._count = 0  # workers alive or being started
        self._generation = getattr(self, "_generation", 0) + 1  # bumped by shutdown: stale spares are dropped
        self._pid = os.getpid()

    def after_fork_in_child(self) -> None:
        # The parent's workers belong to the parent: close our copies of their pipes, never kill them.
        for w in list(self._all):
            w.proc.returncode = 0  # not our child: keep subprocess from waiting for it
            w.close_pipes()
        self._reset()

    def acquire(self) -> _Worker:
        with self._cond:
            while not self._idle and self._count >= self.max_workers:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
            generation = self._generation
        try:
            w = _Worker(self.env)
        except BaseException:
            with self._cond:
                if generation == self._generation:
                    self._count -= 1
                self._cond.notify()
            raise
        with self._cond:
            if generation == self._generation:  # else shutdown() ran meanwhile: used once, then killed
                self._all.add(w)
        return w

    def release(self, w: _Worker, healthy: bool) -> None:
        with self._cond:
            ours = w in self._all  # False once shutdown() (or a fork) dropped it
            if ours and healthy:
                self._idle.append(w)
            elif ours:
                self._all.discard(w)
                self._count -= 1
            self._cond.notify()
        if not (ours and healthy):
            w.kill()
        if not healthy:
            threading.Thread(target=self._spare, args=(self._generation,), daemon=True).start()

    def _spare(self, generation: int) -> None:
        """Start a replacement in the background so the next call does not pay the start-up."""
        with self._cond:
            if self._idle or self._count >= self.max_workers or generation != self._generation:
                return
            self._count += 1
        try:
            w = _Worker(self.env)
        except BaseException:  # noqa: BLE001
            with self._cond:
                if generation == self._generation:
                    self._count -= 1
                self._cond.notify()
            return
        with self._cond:
            if generation == self._generation:
                self._all.add(w)
                self._idle.append(w)
                self._cond.notify()
                return
        w.kill()  # the pool was shut down (or we forked) meanwhile

    def size(self) -> int:
        with self._cond:
            return self._count

    def shutdown(self) -> None:
        with self._cond:
            workers, self._idle = list(self._all), []
            self._all = set()
            self._count = 0
            self._generation += 1
            self._cond.notify_all()
        for w in workers:
            w.kill()


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _default_workers() -> int:
    if os.environ.get("FLUXPRM_GRADING_WORKERS"):
        return int(os.environ["FLUXPRM_GRADING_WORKERS"])
    return min(4, max(2, os.cpu_count() or 2))


class Grader:
    """Equivalence checking with its own worker pool. The module functions use a shared default instance.

    ``soft_timeout=False`` turns the in-worker timer off, so every slow call ends with the worker killed
    (for tests of that path). ``test_hooks`` enables a request that hangs the worker on purpose.
    """

    def __init__(self, max_workers: int | None = None, soft_timeout: bool = True, test_hooks: bool = False):
        self.pool = _Pool(max_workers or _default_workers(), test_hooks=test_hooks)
        self.soft_timeout = soft_timeout
        self.stats = {"calls": 0, "fast": 0, "pool": 0, "timeouts": 0, "killed": 0, "errors": 0}
        self._stats_lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def is_equivalent(self, pred: Any, gold: Any, timeout: float = 5.0, *, _hook: str | None = None) -> bool:
        self._count("calls")
        try:
            if pred is None or gold is None:
                return False
            pred_s = _gold_to_str(pred) if not isinstance(pred, str) else pred
            gold_s = _gold_string(gold)
            if not pred_s.strip() or not gold_s.strip():
                return False
            if _hook is None:
                fast = _fast_equal(pred_s, gold_s)
                if fast is not None:
                    self._count("fast")
                    return fast
            return self._in_worker(_strip_math(pred_s), _strip_math(gold_s), float(timeout), _hook)
        except GradingError:
            raise
        except Exception:  # noqa: BLE001 - garbage in, False out
            self._count("errors")
            logger.debug("is_equivalent(%r, %r) failed", pred, gold, exc_info=True)
            return False

    def _in_worker(self, pred: str, gold: str, timeout: float, hook: str | None) -> bool:
        self._count("pool")
        request: dict[str, Any] = {"pred": pred, "gold": gold}
        if self.soft_timeout:
            request["soft"] = max(timeout, 0.01)
        if hook:
            request["hook"] = hook
        worker = self.pool.acquire()
        answer = None
        try:
            answer = worker.call(request, time.monotonic() + timeout + HARD_GRACE)
        finally:  # a worker that did not answer (or garbled its answer) is killed, never reused
            self.pool.release(worker, healthy=answer is not None)
        if answer is None:
            self._count("killed")
            logger.debug("grading worker killed after %.1f s: pred=%r gold=%r", timeout, pred[:200], gold[:200])
            return False
        if answer.get("timeout"):
            self._count("timeouts")
            logger.debug("grading timed out after %.1f s: pred=%r gold=%r", timeout, pred[:200], gold[:200])
        elif answer.get("error"):
            self._count("errors")
            logger.debug("math-verify error %s: pred=%r gold=%r", answer["error"], pred[:200], gold[:200])
        return bool(answer.get("ok"))

    def grade(self, response_text: str, gold: Any, timeout: float = 5.0) -> bool:
        return self.is_equivalent(extract_answer(response_text), gold, timeout=timeout)

    def shutdown(self) -> None:
        self.pool.shutdown()


_DEFAULT: Grader | None = None
_DEFAULT_LOCK = threading.Lock()


def _default() -> Grader:
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = Grader()
    return _DEFAULT


def is_equivalent(pred: Any, gold: Any, timeout: float = 5.0) -> bool:
    """Whether answer ``pred`` equals ``gold`` (math-verify semantics), within ``timeout`` seconds.

    ``gold`` may be a string (LaTeX or plain, ``$`` optional), an int, a float (``27.0`` == ``"27"``), a tuple
    (``(1, 2)``) or a list: one element means that answer; several mean all of them, in any order
    (OlympiadBench's multi-answer ``final_answer``). Never raises on bad input; a call that takes longer
    than ``timeout`` returns ``False``. Safe in threads, thread pools and worker processes.
    """
    return _default().is_equivalent(pred, gold, timeout=timeout)


def grade(response_text: str, gold: Any, timeout: float = 5.0) -> bool:
    """``is_equivalent(extract_answer(response_text), gold)``."""
    return _default().grade(response_text, gold, timeout=timeout)


def shutdown() -> None:
    """Stop the default grader's worker processes (they also stop by themselves when this process exits)."""
    if _DEFAULT is not None:
        _DEFAULT.shutdown()


atexit.register(shutdown)
