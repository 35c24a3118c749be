"""Fitting a trace into the model's context: the long-trace policies of ``--long``.

Reasoning traces routinely run past a PRM's context (16K-token thoughts, 4K-context PRMs). No record is
rejected for length by default:

- ``truncate`` drops the earliest *thinking* steps until the trace fits — never the problem or the
  response, which are what the reward is about (``TransformerPRM.encode``); a trace whose problem and
  response alone do not fit is rejected with a message.
- ``windows`` scores every step in consecutive windows (problem + a run of steps) that each fit.
- ``auto`` (the default) truncates when that makes the trace fit with at least one thinking step kept —
  one forward, the latest and most relevant thinking kept — and otherwise scores in windows.

In windows, a problem that takes more than half the context is clipped to its head and tail, and a
single step that does not fit beside the problem is clipped to its tail (the reward is read at a
step's end, so its end is what must be seen). Clipped traces are flagged ``truncated`` with
``clipped_steps``; nothing is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fluxprm.models.base import Encoded, TraceTooLong, TransformerPRM
from fluxprm.steps import PRMInput

__all__ = ["Fitted", "fit_trace", "encode_windows"]

_MIN_PROBLEM_SHARE = 0.5  # the problem may take at most this share of a window's context


@dataclass(slots=True)
class Fitted:
    """A trace laid out for the model: one encoding, or several windows whose read positions cover every step."""

    parts: list[Encoded]
    clipped: list[str] = field(default_factory=list)  # what was clipped: "problem", "step 3", ...

    @property
    def tokens(self) -> int:
        return sum(len(p.input_ids) for p in self.parts)


def fit_trace(prm: TransformerPRM, item: PRMInput, policy: str) -> Fitted:
    """Lay out ``item`` by ``policy`` (auto | truncate | windows); raises :class:`TraceTooLong` only for truncate."""
    if policy == "windows":
        return encode_windows(prm, item)
    try:
        enc = prm.encode(item)
    except TraceTooLong:
        if policy == "truncate":
            raise
        return encode_windows(prm, item)
    if policy == "auto" and item.thinking_steps and enc.num_thinking == 0:
        return encode_windows(prm, item)  # truncating would drop every thinking step: score them in windows
    return Fitted([enc])


def _clip(prm: TransformerPRM, text: str, max_tokens: int, keep: str) -> str:
    """``text`` cut to about ``max_tokens`` tokens, keeping its tail (``keep="tail"``) or its head and tail."""
    ids = prm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    max_tokens = max(1, max_tokens)
    if keep == "tail":
        return "…" + prm.tokenizer.decode(ids[-max_tokens:])
    half = max_tokens // 2
    return prm.tokenizer.decode(ids[:half]) + " … " + prm.tokenizer.decode(ids[len(ids) - (max_tokens - half):])


def _fit_one(prm: TransformerPRM, problem: str, steps: list[str]) -> tuple[list[int], list[int]] | None:
    ids, pos = prm.encode_ids(problem, steps)
    return (ids, pos) if len(ids) <= prm.max_length else None


def encode_windows(prm: TransformerPRM, item: PRMInput) -> Fitted:
    """Cover every step with consecutive windows (problem + a run of steps) that each fit the context.

    The response steps stay together in the last window with as many of the latest thinking steps
    as fit, so the response is judged with its nearest context; earlier thinking steps fill earlier
    windows, walking backwards. Window sizes are estimated from one full encoding (token distance
    between read positions) and then checked exactly, shrinking a window that does not fit.
    """
    steps = item.thinking_steps + item.response_steps
    n_think = len(item.thinking_steps)
    ids, positions = prm.encode_ids(item.problem, steps)
    if len(ids) <= prm.max_length:
        return Fitted([Encoded(ids, positions, num_thinking=n_think)])
    clipped: list[str] = []
    problem = item.problem
    overhead = len(prm.encode_ids(problem, [])[0])  # problem + template, no steps
    if overhead > prm.max_length * _MIN_PROBLEM_SHARE:
        template = overhead - len(prm.tokenizer(problem, add_special_tokens=False)["input_ids"])
        problem = _clip(prm, problem, int(prm.max_length * _MIN_PROBLEM_SHARE) - max(template, 0), keep="both")
        overhead = len(prm.encode_ids(problem, [])[0])
        clipped.append("problem")
        ids, positions = prm.encode_ids(problem, steps)
    sizes = [0] + [b - a for a, b in zip(positions, positions[1:])]  # tokens of each step (estimate)
    sizes[0] = max(1, len(ids) - overhead - sum(sizes))
    budget = prm.max_length - overhead
    windows: list[Encoded] = []
    end = len(steps)
    keep_together = len(item.response_steps)  # the last window holds all response steps
    while end > 0:
        start, used = end, 0
        while start > 0 and (used + sizes[start - 1] <= budget or end - start < keep_together):
            used += sizes[start - 1]
            start -= 1
        start = min(start, end - 1)
        fitted = _fit_one(prm, problem, steps[start:end])
        while fitted is None and end - start > 1:
            start += 1
            fitted = _fit_one(prm, problem, steps[start:end])
        if fitted is None:  # one step alone does not fit beside the problem: keep its tail
            steps[start] = _clip_step(prm, problem, steps[start], budget)
            clipped.append(f"step {start + 1}")
            fitted = _fit_one(prm, problem, steps[start:end])
            if fitted is None:
                raise TraceTooLong(f"step {start + 1} does not fit the model's context of {prm.max_length} tokens "
                                   "even clipped; raise --max-length")
        windows.append(Encoded(fitted[0], fitted[1], num_thinking=max(0, min(end, n_think) - start)))
        end, keep_together = start, 0
    windows.reverse()
    return Fitted(windows, clipped)


def _clip_step(prm: TransformerPRM, problem: str, step: str, budget: int) -> str:
    """The step's tail that fits in one window beside the problem (shrinking until it really fits)."""
    target = max(1, budget - 16)  # room for the template's separators around the step
    for _ in range(8):
        text = _clip(prm, step, target, keep="tail")
        if _fit_one(prm, problem, [text]) is not None:
            return text
        target = max(1, int(target * 0.8))
    return text
