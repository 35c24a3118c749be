"""Segmentation and alignment rules (fluxprm.steps) on hand-checked inputs."""

from fluxprm.steps import align_steps, cap_steps, merge_short, split_steps


def test_split_strips_and_drops_empties():
    assert split_steps("a step here\n\n\n\n  second step  \n\n") == ["a step here", "second step"]


def test_merge_short_joins_predecessor_and_leading_fragment_joins_next():
    steps = ["Okay.", "Let me compute the sum of the roots.", "Wait.", "The sum is 7 by Vieta."]
    merged = merge_short(steps, min_chars=10, joiner=" ")
    assert merged == ["Okay. Let me compute the sum of the roots. Wait.", "The sum is 7 by Vieta."]


def test_merge_short_all_fragments_stay_one_step():
    assert merge_short(["a", "b"], min_chars=10, joiner="|") == ["a|b"]


def test_cap_merges_evenly_with_surplus_first():
    steps = [str(i) for i in range(10)]
    capped = cap_steps(steps, 4, joiner=",")
    assert capped == ["0,1,2", "3,4,5", "6,7", "8,9"]
    assert cap_steps(steps, 20) == steps


def test_cap_bounds_a_huge_trajectory():
    text = "\n\n".join(f"paragraph number {i} with some words" for i in range(2000))
    steps = split_steps(text, min_chars=30, max_steps=64)
    assert len(steps) == 64
    assert "paragraph number 0 " in steps[0] and "paragraph number 1999" in steps[-1]


def test_align_surplus_thinking_merges_into_earlier_groups():
    assert align_steps(7, 3) == [0, 0, 0, 1, 1, 2, 2]
    assert align_steps(2, 5) == [0, 1]
    assert align_steps(3, 0) == [] and align_steps(0, 3) == []
