"""Step segmentation of thinking and response text, and thinking↔response alignment.

Thinking trajectories are long and messy: a Sky-T1 or R1 trace has hundreds of paragraphs, many of
them one-word fragments ("Wait.", "Hmm."). A PRM reads one reward per step, so segmentation decides
both what a reward means and what scoring costs. The rules here are deliberately simple and
deterministic so that the same text always yields the same steps (resume and caching rely on it):

1. split on a separator (default a blank line, ``"\\n\\n"``), strip, drop empties;
2. merge fragments shorter than ``min_chars`` into the preceding step (the first into the next);
3. cap the count: if more than ``max_steps`` remain, merge neighbours into ``max_steps`` contiguous
   groups of as-even-as-possible size, so a 30K-token trajectory cannot explode into 2,000 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StepConfig", "split_steps", "merge_short", "cap_steps", "align_steps"]


@dataclass(frozen=True, slots=True)
class StepConfig:
    """Knobs of segmentation; every field has a CLI flag of the same name.

    Defaults are chosen for R1/Sky-T1 style traces: blank-line paragraphs, fragments under 30
    characters merged, at most 64 thinking and 32 response steps per trace.
    """

    separator: str = "\n\n"
    min_chars: int = 30
    max_thinking_steps: int = 64
    max_response_steps: int = 32
    joiner: str = "\n\n"  # text placed between merged pieces, so merged steps read naturally


def split_steps(text: str, separator: str = "\n\n", min_chars: int = 0, max_steps: int = 0,
                joiner: str = "\n\n") -> list[str]:
    """Split ``text`` into steps: separator split, strip, drop empties, merge short, cap count.

    ``min_chars`` ≤ 0 disables merging, ``max_steps`` ≤ 0 disables the cap.
    """
    pieces = [p.strip() for p in text.split(separator)] if separator else [text.strip()]
    pieces = [p for p in pieces if p]
    if min_chars > 0:
        pieces = merge_short(pieces, min_chars, joiner)
    if max_steps > 0:
        pieces = cap_steps(pieces, max_steps, joiner)
    return pieces


def merge_short(steps: list[str], min_chars: int, joiner: str = "\n\n") -> list[str]:
    """Merge every step shorter than ``min_chars`` into its predecessor (the first into its successor).

    Merging into the predecessor keeps a trailing "Wait." with the thought it qualifies; a short
    opening fragment ("Okay.") has no predecessor and so joins the step after it.
    """
    merged: list[str] = []
    carry = ""  # short fragments seen before the first long step
    for step in steps:
        if len(step) < min_chars and merged:
            merged[-1] = merged[-1] + joiner + step
        elif len(step) < min_chars:
            carry = carry + joiner + step if carry else step
        else:
            merged.append(carry + joiner + step if carry else step)
            carry = ""
    if carry:  # the whole text was short fragments: keep it as one step
        merged.append(carry)
    return merged


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
