"""Step segmentation of thinking and response text, with character spans, and thinking↔response alignment.

Thinking trajectories are long and messy: a Sky-T1 or R1 trace has hundreds of paragraphs, many of
them one-word fragments ("Wait.", "Hmm."). A PRM reads one reward per step, so segmentation decides
both what a reward means and what scoring costs. The rules here are deliberately simple and
deterministic so that the same text always yields the same steps (resume and caching rely on it):

1. split on a separator (default a blank line, ``"\\n\\n"``), strip, drop empties;
2. merge fragments shorter than ``min_chars`` into the preceding step (the first into the next);
3. cap the count: if more than ``max_steps`` remain, merge neighbours into ``max_steps`` contiguous
   groups of as-even-as-possible size, so a 30K-token trajectory cannot explode into 2,000 steps.

Every step is a *span* ``(start, end)`` of the text it came from, and its text is exactly
``text[start:end]``: merging takes the original text between the first and last piece, never a
re-joined copy. Spans are what dense RL rewards need to put a step's reward on the right token of a
policy's completion, and what a viewer needs to highlight a step in the original record.

This module imports no torch: segmentation is needed by labelling, training data, the viewer and
the benchmarks without a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from fluxprm.traces import Trace

__all__ = ["StepConfig", "step_config_for", "PRMInput", "Span", "prepare", "split_steps", "split_spans", "merge_short", "cap_steps",
           "align_steps", "NoSteps"]

Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class StepConfig:
    """Knobs of segmentation; each field is a CLI flag of the same name on every command that segments.

    Defaults are chosen for R1/Sky-T1 style traces: blank-line paragraphs, fragments under 30
    characters merged, at most 64 thinking and 32 response steps per trace. A checkpoint trained by
    ``fluxprm train`` records the values it was trained with, and scoring with it uses them by default.
    """

    separator: str = field(default="\n\n", metadata={
        "help": "Step separator in free text; backslash escapes are read (\\n, \\t).", "escapes": True})
    min_chars: int = field(default=30, metadata={"help": "Merge steps shorter than this into their predecessor.",
                                                 "min": 0})
    max_thinking_steps: int = field(default=64, metadata={
        "help": "Cap on thinking steps (neighbours merged evenly); 0 = no cap.", "min": 0})
    max_response_steps: int = field(default=32, metadata={"help": "Cap on response steps; 0 = no cap.", "min": 0})

    def __post_init__(self) -> None:
        for name in ("min_chars", "max_thinking_steps", "max_response_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def step_config_for(trained: dict | None, overrides: dict | None = None) -> StepConfig:
    """The segmentation to score with: what the checkpoint was trained with (if it says), then the user's choices.

    A PRM judges steps best when they are cut the way its training data was cut, so a checkpoint's
    recorded segmentation is the default; every field the user sets explicitly wins over it.
    """
    names = set(StepConfig.__dataclass_fields__)
    values = {k: v for k, v in (trained or {}).items() if k in names}
    values.update({k: v for k, v in (overrides or {}).items() if k in names and v is not None})
    return StepConfig(**values)


class NoSteps(ValueError):
    """A trace with nothing to score: thinking and response are both empty."""


@dataclass(slots=True)
class PRMInput:
    """One trace as a PRM sees it: the problem and its segmented thinking and response steps.

    ``thinking_spans`` / ``response_spans`` give each step's ``(start, end)`` in the trace's
    ``thinking`` / ``response`` text (``None`` when the steps did not come from that text, e.g. a
    step list that is not a substring sequence of it).
    """

    problem: str
    thinking_steps: list[str]
    response_steps: list[str]
    thinking_spans: list[Span] | None = None
    response_spans: list[Span] | None = None

    @property
    def num_steps(self) -> int:
        return len(self.thinking_steps) + len(self.response_steps)


def prepare(trace: Trace, cfg: StepConfig) -> PRMInput:
    """Segment a trace: explicit steps are kept as given (stripped, empties dropped), free text is split by ``cfg``."""
    thinking, thinking_spans = _segment(trace.thinking, trace.thinking_steps, cfg, cfg.max_thinking_steps)
    response, response_spans = _segment(trace.response, trace.steps, cfg, cfg.max_response_steps)
    if not thinking and not response:
        raise NoSteps("the trace has no steps: thinking and response are both empty")
    return PRMInput(trace.problem, thinking, response, thinking_spans, response_spans)


def _segment(text: str | None, given: list[str] | None, cfg: StepConfig, max_steps: int
             ) -> tuple[list[str], list[Span] | None]:
    if given is not None:
        steps = [s for s in (t.strip() for t in given) if s]
        return steps, locate_spans(text or "", steps)
    if not text:
        return [], []
    spans = split_spans(text, cfg.separator, cfg.min_chars, max_steps)
    return [text[a:b] for a, b in spans], spans


def locate_spans(text: str, steps: Sequence[str]) -> list[Span] | None:
    """Spans of ``steps`` found in order in ``text`` (an explicit step list joined into a text), or None."""
    spans, pos = [], 0
    for step in steps:
        start = text.find(step, pos)
        if start < 0:
            return None
        spans.append((start, start + len(step)))
        pos = start + len(step)
    return spans


def split_spans(text: str, separator: str = "\n\n", min_chars: int = 0, max_steps: int = 0) -> list[Span]:
    """Spans of the steps of ``text``: separator split, strip, drop empties, merge short, cap count.

    ``min_chars`` ≤ 0 disables merging, ``max_steps`` ≤ 0 disables the cap.
    """
    spans: list[Span] = []
    pos = 0
    for part in (text.split(separator) if separator else [text]):
        stripped = part.strip()
        if stripped:
            start = pos + len(part) - len(part.lstrip())
            spans.append((start, start + len(stripped)))
        pos += len(part) + len(separator)
    if min_chars > 0:
        spans = [(g[0][0], g[-1][1]) for g in _groups_merging_short(spans, [b - a for a, b in spans], min_chars)]
    if max_steps > 0 and len(spans) > max_steps:
        bounds = _even_bounds(len(spans), max_steps)
        spans = [(spans[a][0], spans[b - 1][1]) for a, b in zip(bounds, bounds[1:])]
    return spans


def split_steps(text: str, separator: str = "\n\n", min_chars: int = 0, max_steps: int = 0) -> list[str]:
    """The step texts of :func:`split_spans` (each is ``text[start:end]``)."""
    return [text[a:b] for a, b in split_spans(text, separator, min_chars, max_steps)]


def _groups_merging_short(items: list, lengths: list[int], min_chars: int) -> list[list]:
    """Group items so every one shorter than ``min_chars`` joins its predecessor (the first ones their successor).

    Merging into the predecessor keeps a trailing "Wait." with the thought it qualifies; a short
    opening fragment ("Okay.") has no predecessor and so joins the step after it. A text made only
    of short fragments stays one step.
    """
    groups: list[list] = []
    carry: list = []  # short fragments seen before the first long step
    for item, n in zip(items, lengths):
        if n < min_chars and groups:
            groups[-1].append(item)
        elif n < min_chars:
            carry.append(item)
        else:
            groups.append(carry + [item])
            carry = []
    if carry:
        groups.append(carry)
    return groups


def merge_short(steps: list[str], min_chars: int, joiner: str = "\n\n") -> list[str]:
    """Merge every step shorter than ``min_chars`` into its predecessor (for step lists, joined by ``joiner``)."""
    return [joiner.join(g) for g in _groups_merging_short(steps, [len(s) for s in steps], min_chars)]


def _even_bounds(n: int, groups: int) -> list[int]:
    """Boundaries that split ``n`` items into ``groups`` contiguous groups whose sizes differ by ≤ 1.

    Larger groups come first, so surplus items are merged into the earlier groups — the rule the
    ReasonFlux authors use when a trajectory has more steps than its response.
    """
    base, extra = divmod(n, groups)
    bounds = [0]
    for g in range(groups):
        bounds.append(bounds[-1] + base + (1 if g < extra else 0))
    return bounds


def cap_steps(steps: list[str], max_steps: int, joiner: str = "\n\n") -> list[str]:
    """Merge neighbours so that at most ``max_steps`` steps remain, keeping group sizes even."""
    if len(steps) <= max_steps:
        return list(steps)
    bounds = _even_bounds(len(steps), max_steps)
    return [joiner.join(steps[a:b]) for a, b in zip(bounds, bounds[1:])]


def align_steps(num_thinking: int, num_response: int) -> list[int]:
    """Map each thinking step to the response step it is compared with for the alignment reward.

    The paper pairs thinking step s_t with response step a_t. Trajectories nearly always have more
    steps than their responses, so the thinking steps are split into ``num_response`` contiguous,
    evenly sized groups (the surplus joins the earlier groups, as the authors merge surplus steps into
    their predecessor) and every step of group g is paired with response step g. With fewer thinking
    than response steps, thinking step t pairs with response step t and the surplus response steps
    go unpaired. Returns a list of ``num_thinking`` response indices (empty if either side is empty).
    """
    if num_thinking <= 0 or num_response <= 0:
        return []
    if num_thinking <= num_response:
        return list(range(num_thinking))
    bounds = _even_bounds(num_thinking, num_response)
    mapping: list[int] = []
    for g, (a, b) in enumerate(zip(bounds, bounds[1:])):
        mapping.extend([g] * (b - a))
    return mapping
