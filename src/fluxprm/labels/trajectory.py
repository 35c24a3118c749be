"""Trajectory reward: does the reasoning *pattern* of a trace transfer to a policy model?

1. An expert LLM reads (problem x, thinking, response) and writes a reasoning template
   (``prompts/template_extract_v1.txt``; greedy, one call per trace).
2. A policy LLM solves x ``rollouts`` times guided by that template (``prompts/template_solve_v1.txt``),
   sampled at ``temperature`` with seeds ``seed, seed+1, …, seed+rollouts-1`` — one seed per rollout, the
   same seeds for every trace; each rollout is its own request and its own cache entry.
3. r_final = (rollouts whose answer :func:`fluxprm.grading.grade` finds equal to the gold answer) / rollouts.

A trace without a gold answer gets ``None`` (no LLM call is made) and a note. Thinking longer than
``thinking_chars`` is clipped (head and tail kept) before it goes to the expert. A request the server
rejects (HTTP 400/413/422, e.g. a prompt over the context) makes that trace's reward ``None`` with a note;
any other failure (server down) stops the job, so ``--resume`` can fill the value later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from fluxprm.labels.quality import _FAILED, _generate_isolating, clip, fill, load_prompt

__all__ = ["TEMPLATE_EXTRACT", "TEMPLATE_SOLVE", "TrajectoryItem", "TrajectoryResult", "TrajectoryRewarder"]

TEMPLATE_EXTRACT = "template_extract_v1.txt"
TEMPLATE_SOLVE = "template_solve_v1.txt"


@dataclass
class TrajectoryItem:
    problem: str
    thinking: str
    response: str
    gold: Any


@dataclass
class TrajectoryResult:
    reward: float | None
    n: int
    correct: int | None
    note: str | None = None
    template: str | None = None

    def rollouts_json(self) -> dict[str, Any]:
        return {"n": self.n, "correct": self.correct}


def _has_gold(gold: Any) -> bool:
    if gold is None:
        return False
    if isinstance(gold, str):
        return bool(gold.strip())
    if isinstance(gold, (list, tuple, set)):
        return len(gold) > 0
    return True


class TrajectoryRewarder:
    """Template-guided rollouts of a policy LLM (any :class:`fluxprm.llm.LLM`), graded against gold answers."""

    def __init__(self, policy: Any, expert: Any | None = None, rollouts: int = 8, temperature: float = 0.7,
                 max_tokens: int = 1024, template_max_tokens: int = 512, thinking_chars: int = 12000,
                 seed: int = 0, grader: Callable[[str, Any], bool] | None = None, grading_timeout: float = 5.0):
        if rollouts < 1:
            raise ValueError(f"rollouts must be >= 1, got {rollouts}")
        self.policy, self.expert = policy, expert if expert is not None else policy
        self.rollouts, self.temperature, self.max_tokens = rollouts, temperature, max_tokens
        self.template_max_tokens, self.thinking_chars, self.seed = template_max_tokens, thinking_chars, seed
        self.grading_timeout = grading_timeout
        if grader is None:
            from fluxprm.grading import grade

            def grader(text: str, gold: Any) -> bool:
                return grade(text, gold, timeout=grading_timeout)
        self.grader = grader
        self.extract_template, self.solve_template = load_prompt(TEMPLATE_EXTRACT), load_prompt(TEMPLATE_SOLVE)

    def extract_prompt(self, item: TrajectoryItem) -> list[dict[str, str]]:
        text = fill(self.extract_template, problem=item.problem.strip(),
                    thinking=clip(item.thinking.strip(), self.thinking_chars) or "(none)",
                    response=item.response.strip() or "(none: the trace was cut off)")
        return [{"role": "user", "content": text}]

    def solve_prompt(self, problem: str, template: str) -> list[dict[str, str]]:
        text = fill(self.solve_template, problem=problem.strip(), template=template.strip() or "(none)")
        return [{"role": "user", "content": text}]

    def run(self, items: Sequence[TrajectoryItem]) -> list[TrajectoryResult]:
        """One result per item; LLM calls are batched over the items (concurrent on HTTP backends)."""
        from fluxprm.llm import GenParams

        results: list[TrajectoryResult | None] = [None] * len(items)
        todo = []
        for i, item in enumerate(items):
            if _has_gold(item.gold):
                todo.append(i)
            else:
                results[i] = TrajectoryResult(None, 0, None, "trajectory reward needs a gold answer; none found")
        if not todo:
            return results  # type: ignore[return-value]
        templates = _generate_isolating(
            self.expert, [self.extract_prompt(items[i]) for i in todo],
            GenParams(max_tokens=self.template_max_tokens, temperature=0.0, seed=self.seed))
        solvable = []
        for i, template in zip(todo, templates):
            if template == _FAILED:
                results[i] = TrajectoryResult(None, 0, None, "the expert LLM rejected the template request")
            else:
                solvable.append((i, template or ""))
        prompts = [self.solve_prompt(items[i].problem, t) for i, t in solvable]
        answers: list[list[str | None]] = [[] for _ in solvable]
        for r in range(self.rollouts):
            params = GenParams(max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed + r)
            for slot, text in enumerate(_generate_isolating(self.policy, prompts, params) if prompts else []):
                answers[slot].append(text)
        for (i, template), texts in zip(solvable, answers):
            if any(t == _FAILED for t in texts):
                results[i] = TrajectoryResult(None, self.rollouts, None, "the policy LLM rejected a rollout request",
                                              template)
                continue
            correct = sum(bool(self.grader(t or "", items[i].gold)) for t in texts)
            results[i] = TrajectoryResult(correct / self.rollouts, self.rollouts, correct, None, template)
        return results  # type: ignore[return-value]
