"""Trajectory signals: a few numbers about a whole trace that a small PRM cannot read reliably from its hidden
states, fed to the trajectory head beside them.

Why: a 135M backbone with a 2,048-token window sees the end of a long trace, not its shape. On the
SkyThought Best-of-N pools, whether a final answer is stated, whether the thinking ever ended, how often the
writer hesitates or restarts, and how long the whole answer is separate correct from incorrect responses by
themselves (AUROC 0.6–0.9 on the training problems, see the fluxprm-mini model card) — and a PRM that misses
them ranks a short answer that never states a result above a finished one. Each signal is a pure function of
the segmented trace (:class:`~fluxprm.steps.PRMInput`), so training and scoring compute it identically, and
a checkpoint lists the signals it was trained with by name (``trajectory_signals`` in its config).
"""

from __future__ import annotations

import math
import re
from typing import Callable

from fluxprm.steps import PRMInput

__all__ = ["SIGNALS", "trace_signals", "check_signals"]

#: How far from the end of the trace a stated answer counts as the final one (characters).
ANSWER_TAIL_CHARS = 600

_ANSWER = re.compile(r"\\boxed\s*\{|\\fbox\s*\{|final answer\s*(?:is|:)|the answer is", re.IGNORECASE)
# Words a writer uses when doubting or redoing earlier work (Sky-T1/QwQ/R1 style thinking).
_HESITATION = re.compile(r"\b(?:wait|hmm+|alternatively|actually|let me (?:double[- ]check|re-?check|verify|"
                         r"re-?examine|try again|reconsider)|i made a mistake|that's not right|no, )", re.IGNORECASE)


def _text(item: PRMInput) -> str:
    return "\n\n".join(item.thinking_steps + item.response_steps)


def _final_text(item: PRMInput) -> str:
    """The response when there is one, else the tail of the thinking (a trace cut before its response)."""
    return "\n\n".join(item.response_steps) if item.response_steps else _text(item)[-ANSWER_TAIL_CHARS:]


def answer_stated(item: PRMInput) -> float:
    """1 when the final text states an answer (``\\boxed{...}``, "the final answer is"), else 0."""
    return 1.0 if _ANSWER.search(_final_text(item)[-ANSWER_TAIL_CHARS:]) else 0.0


def unfinished_thinking(item: PRMInput) -> float:
    """1 when the trace thinks but never gets to a response (generation cut off mid-thought), else 0."""
    return 1.0 if item.thinking_steps and not item.response_steps else 0.0


def hesitation_rate(item: PRMInput) -> float:
    """Hesitation and restart markers per 1,000 characters of the whole trace."""
    text = _text(item)
    return 1000.0 * len(_HESITATION.findall(text)) / max(len(text), 1)


def log_chars(item: PRMInput) -> float:
    """log(1 + characters) of thinking and response together: longer answers are more often wrong ones."""
    return math.log1p(len(_text(item)))


SIGNALS: dict[str, Callable[[PRMInput], float]] = {
    "answer_stated": answer_stated,
    "unfinished_thinking": unfinished_thinking,
    "hesitation_rate": hesitation_rate,
    "log_chars": log_chars,
}


def check_signals(names: list[str]) -> None:
    """Raise ``ValueError`` naming any signal this fluxprm does not know (a checkpoint from a newer version)."""
    unknown = [n for n in names if n not in SIGNALS]
    if unknown:
        raise ValueError(f"unknown trajectory signal(s) {', '.join(unknown)}; known: {', '.join(SIGNALS)}")


def trace_signals(item: PRMInput, names: list[str]) -> list[float]:
    """The named signals of one trace, in the order given."""
    return [SIGNALS[n](item) for n in names]
