"""Fitting a trace into the model's context: the long-trace policies of ``--long``.

Reasoning traces routinely run past a PRM's context (16K-token thoughts, 4K-context PRMs). No record is
rejected for length by default:

- ``truncate`` drops the earliest *thinking* steps until the trace fits — never the problem or the
  response, which are what the reward is about (``TransformerPRM.encode``); a trace whose problem and
  response alone do not fit is rejected with a message.
- ``windows`` scores every step exactly once, in consecutive windows. Each window is the problem, then
  preceding text it does not score (at least ``context_tokens`` of it where there is any: a step's reward
  is R(s_t | x, s_<t), so a step read without what led to it is judged out of context), then the run of
  steps it scores. The response steps stay together in the last window with as much of the thinking before
  them in view as fits.
- ``auto`` (the default) truncates when that makes the trace fit with at least one thinking step kept —
  one forward, the latest and most relevant thinking kept — and otherwise scores in windows.

Preceding context costs nothing in the formats: every format's ``encode_ids(problem, steps)`` lays out
steps and returns one read position per step, so a window is ``encode_ids(problem, context + own)`` with the
context's read positions dropped. The earliest context step may be cut to its tail (marked ``…``) to fill
the window; what the model sees of it is context, never a reward. ``docs/LONG_TRACES.md`` has the figures.

In windows, a problem that takes more than half the context is clipped to its head and tail, and a
single step that does not fit beside the problem is clipped to its tail (the reward is read at a
step's end, so its end is what must be seen). Clipped traces are flagged ``truncated`` with
``clipped_steps``; nothing is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fluxprm.engine.options import DEFAULT_CONTEXT_TOKENS
from fluxprm.models.base import Encoded, TraceTooLong, TransformerPRM
from fluxprm.steps import PRMInput

__all__ = ["Fitted", "Window", "fit_trace", "encode_windows"]

_MIN_PROBLEM_SHARE = 0.5  # the problem may take at most this share of a window's context
_JOIN_MARGIN = 8          # tokens reserved beyond context_tokens when packing a window's own steps
_TAIL_MARGIN = 2          # tokens left for the "…" and separator around a context step's tail
_MIN_TAIL = 16            # beyond context_tokens, a context step's tail shorter than this is not added


@dataclass(slots=True)
class Window:
    """Which steps one window scores and what it shows before them (step indices into thinking + response)."""

    first_step: int       # the first step this window scores
    end_step: int         # one past the last step it scores
    context_from: int     # the earliest step in view as context (== first_step: none)
    context_tokens: int   # tokens the preceding context adds to the window
    clipped_context: str | None = None  # the tail of step context_from shown in its place, if it did not fit whole

    def context(self, steps: list[str]) -> list[str]:
        """The step texts this window shows before its own steps (``steps`` = thinking + response)."""
        whole = steps[self.context_from + (self.clipped_context is not None):self.first_step]
        return ([self.clipped_context] if self.clipped_context is not None else []) + whole


@dataclass(slots=True)
class Fitted:
    """A trace laid out for the model: one encoding, or several windows whose read positions cover every step."""

    parts: list[Encoded]
    clipped: list[str] = field(default_factory=list)  # what was clipped: "problem", "step 3", ...
    windows: list[Window] = field(default_factory=list)  # one per part when laid out by encode_windows

    @property
    def tokens(self) -> int:
        return sum(len(p.input_ids) for p in self.parts)


def fit_trace(prm: TransformerPRM, item: PRMInput, policy: str,
              context_tokens: int = DEFAULT_CONTEXT_TOKENS) -> Fitted:
    """Lay out ``item`` by ``policy`` (auto | truncate | windows); raises :class:`TraceTooLong` only for truncate."""
    if policy == "windows":
        return encode_windows(prm, item, context_tokens)
    try:
        enc = prm.encode(item)
    except TraceTooLong:
        if policy == "truncate":
            raise
        return encode_windows(prm, item, context_tokens)
    if policy == "auto" and item.thinking_steps and enc.num_thinking == 0:
        return encode_windows(prm, item, context_tokens)  # truncating would drop every thinking step
    return Fitted([enc])


def _clip(prm: TransformerPRM, text: str, max_tokens: int, keep: str) -> str:
    """``text`` cut to about ``max_tokens`` tokens, keeping its tail (``keep="tail"``) or its head and tail."""
    ids = prm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    max_tokens = max(1, max_tokens)
    if keep == "tail":
        return "…" + _decode(prm.tokenizer, ids[-max_tokens:])
    half = max_tokens // 2
    return _decode(prm.tokenizer, ids[:half]) + " … " + _decode(prm.tokenizer, ids[len(ids) - (max_tokens - half):])


def _decode(tokenizer: Any, ids: list[int]) -> str:
    """``tokenizer.decode(ids)``, saying whether to clean up tokenization spaces rather than leaving it to the
    tokenizer's config: transformers ignores ``clean_up_tokenization_spaces=True`` for BPE tokenizers (it would
    strip real spaces before punctuation) and warns that it does, a warning the user can do nothing about. The
    value passed is the one transformers would apply, so the text is what it was."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    bpe = (backend is not None and type(backend.model).__name__ == "BPE"
           and not getattr(tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False))
    cleanup = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False)) and not bpe
    return tokenizer.decode(ids, clean_up_tokenization_spaces=cleanup)


def _fit_one(prm: TransformerPRM, problem: str, steps: list[str]) -> tuple[list[int], list[int]] | None:
    ids, pos = prm.encode_ids(problem, steps)
    return (ids, pos) if len(ids) <= prm.max_length else None


def encode_windows(prm: TransformerPRM, item: PRMInput, context_tokens: int = DEFAULT_CONTEXT_TOKENS) -> Fitted:
    """Cover every step exactly once with windows (problem + preceding context + a run of steps) that each fit.

    Walking backwards from the end, each window scores the latest steps not yet scored that fit in the
    context less a reserve of ``context_tokens`` (at most half the room beside the problem), and the room
    left is filled with the text before them (whole steps, the earliest maybe by its tail). So the last
    window scores the response (all of it when it fits beside the reserve) with as much of the thinking
    before it in view as fits, and every window with preceding text shows at least ``context_tokens`` of
    it (or half the room beside the problem, if less) — less only where a single step is as large as the
    window. Step sizes are estimated from one full encoding (token distance between read positions) and
    every window is then checked exactly.
    """
    steps = item.thinking_steps + item.response_steps
    n_think = len(item.thinking_steps)
    ids, positions = prm.encode_ids(item.problem, steps)
    if len(ids) <= prm.max_length:
        return Fitted([Encoded(ids, positions, num_thinking=n_think, signals=prm.trace_signals(item))],
                      windows=[Window(0, len(steps), 0, 0)])
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
    # room kept for context beside a window's own steps: what was asked, but never more than half the window
    reserve = min(context_tokens + _JOIN_MARGIN, budget // 2) if context_tokens > 0 else 0
    own_budget = budget - reserve
    parts: list[Encoded] = []
    windows: list[Window] = []
    end = len(steps)
    while end > 0:
        start, used = end, 0
        while start > 0 and used + sizes[start - 1] <= own_budget:
            used += sizes[start - 1]
            start -= 1
        start = min(start, end - 1)
        fitted = _fit_one(prm, problem, steps[start:end])
        while start < end - 1 and (fitted is None or (start > 0 and prm.max_length - len(fitted[0]) < reserve)):
            start += 1  # does not fit, or (estimates off) leaves less than the reserve for context: one step fewer
            fitted = _fit_one(prm, problem, steps[start:end])
        if fitted is None:  # one step alone does not fit beside the problem: keep its tail
            steps[start] = _clip_step(prm, problem, steps[start], budget)
            clipped.append(f"step {start + 1}")
            fitted = _fit_one(prm, problem, steps[start:end])
            if fitted is None:
                raise TraceTooLong(f"step {start + 1} does not fit the model's context of {prm.max_length} tokens "
                                   "even clipped; raise --max-length")
        enc, window = _with_context(prm, problem, steps, sizes, start, end, len(fitted[0]), context_tokens)
        enc.num_thinking = max(0, min(end, n_think) - start)
        parts.append(enc)
        windows.append(window)
        end = start
    parts.reverse()
    windows.reverse()
    signals = prm.trace_signals(item)  # every window carries the whole trace's signals: the trajectory reward
    for part in parts:                 # is read from the last window, but it is about the whole trace
        part.signals = signals
    return Fitted(parts, clipped, windows)


def _with_context(prm: TransformerPRM, problem: str, steps: list[str], sizes: list[int], start: int, end: int,
                  own_length: int, context_tokens: int) -> tuple[Encoded, Window]:
    """The window scoring ``steps[start:end]``, its free room filled with the text before ``start``.

    Whole preceding steps are added while they fit (by the size estimates), then the tail of the next
    earlier one; the result is encoded exactly and the context shrunk until the window fits. Only the
    read positions of ``steps[start:end]`` are kept: context steps are seen, never read.
    """
    own = steps[start:end]
    room = prm.max_length - own_length
    first, used = start, 0
    while first > 0 and used + sizes[first - 1] <= room:
        used += sizes[first - 1]
        first -= 1
    tail_target = room - used - _TAIL_MARGIN if first > 0 else 0
    if tail_target < _MIN_TAIL and used >= context_tokens:
        tail_target = 0  # enough context already: a scrap of one more step is not worth its tokens
    for _ in range(32):
        context = steps[first:start]
        tail = _clip(prm, steps[first - 1], tail_target, keep="tail") if tail_target > 0 else None
        if tail is not None:
            context = [tail] + context
        ids, positions = prm.encode_ids(problem, context + own)
        excess = len(ids) - prm.max_length
        if excess <= 0:
            window = Window(start, end, first - (tail is not None), len(ids) - own_length, tail)
            return Encoded(ids, positions[len(context):], num_thinking=0), window
        if tail is not None:
            tail_target -= excess
        else:  # the whole-step estimate was off: show one step fewer, and the tail of it that fits
            first += 1
            tail_target = sizes[first - 1] - excess - _TAIL_MARGIN
    ids, positions = prm.encode_ids(problem, own)  # unreachable in practice: the window without context fits
    return Encoded(ids, positions, num_thinking=0), Window(start, end, start, 0)


def _clip_step(prm: TransformerPRM, problem: str, step: str, budget: int) -> str:
    """The step's tail that fits in one window beside the problem (shrinking until it really fits)."""
    target = max(1, budget - 16)  # room for the template's separators around the step
    for _ in range(8):
        text = _clip(prm, step, target, keep="tail")
        if _fit_one(prm, problem, [text]) is not None:
            return text
        target = max(1, int(target * 0.8))
    return text
