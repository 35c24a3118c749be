"""PRM rewards for reinforcement learning: one scalar per completion, or rewards placed on its tokens.

The scalar reward is the ReasonFlux-PRM recipe used in the authors' GRPO code::

    reward = (1 − β) · outcome + β · prm          (β = 0.75 by default, as there)

* ``outcome`` is 1.0 when the completion's final answer equals the gold answer (:mod:`fluxprm.grading`: a fast
  exact path, then math-verify in worker processes with hard timeouts, so a pathological answer never hangs or
  kills the trainer) and 0.0 otherwise, also when no gold answer is given.
* ``prm`` is the trace's PRM score normalised to [0, 1]: the model's score is
  ``aggregate(step rewards) + α · trajectory reward``; with a trajectory reward it is divided by ``1 + α``, so a
  model whose step and trajectory rewards are probabilities (every supported format) gives ``prm ∈ [0, 1]``;
  the result is clipped to [0, 1]. A completion the PRM cannot score (empty, no steps) gets ``prm = 0``.

Dense rewards (``dense=True``) put each step's share of that reward on the token that closes the step, the way
a token-level RL trainer (verl's ``token_level_scores``, PPO/GRPO with per-token returns) consumes it: step ``i``
of ``n`` gets ``β · r_i / (n · (1 + α))`` (``1 + α`` only with a trajectory reward), the last token gets the
rest of the scalar — ``(1 − β) · outcome + β · α · trajectory / (1 + α)`` — so that with the model's default
``mean`` aggregation the dense rewards of a completion sum to its scalar reward exactly. The step ends come
from the core's step spans and the policy tokenizer's character offsets (:func:`token_ends`,
:func:`closing_tokens`).
"""

from __future__ import annotations

import bisect
import logging
import threading
from dataclasses import dataclass, replace
from typing import Any, Sequence

from fluxprm.records import BadRecord
from fluxprm.scores import TraceScore
from fluxprm.traces import Trace, TraceError, parse_record

__all__ = ["DEFAULT_BETA", "DenseReward", "RewardModel", "reward", "completion_record", "prompt_text",
           "completion_text", "prm_reward", "outcome_reward", "mix", "token_ends", "closing_tokens",
           "step_char_ends", "shared_model"]

logger = logging.getLogger(__name__)

DEFAULT_BETA = 0.75  # the authors' GRPO mix: (1 − β)·outcome + β·PRM


# ----------------------------------------------------------------------------------------- text of a sample

def prompt_text(prompt: Any) -> str:
    """The problem a prompt poses: a string as is; a chat message list → its last user turn's content."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") in ("user", "human")]
        chosen = users[-1] if users else (prompt[-1] if prompt and isinstance(prompt[-1], dict) else None)
        if chosen is not None:
            return _content(chosen.get("content"))
    return "" if prompt is None else str(prompt)


def completion_text(completion: Any) -> str:
    """The text a policy produced: a string as is; a message list (TRL's conversational form) → its assistant turns."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)):
        turns = [m for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return "\n\n".join(_content(m.get("content")) for m in turns)
    return "" if completion is None else str(completion)


def _content(value: Any) -> str:
    """Message content: a string, or the text parts of a multimodal part list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, dict))
    return "" if value is None else str(value)


def completion_record(prompt: Any, completion: Any, *, id: str | None = None) -> dict[str, Any]:
    """A trace record for the core parser: the prompt is the problem, the completion the response.

    The parser splits a ``<think>…</think>`` (or ``<|begin_of_thought|>…``) part off as the thinking trajectory.
    """
    record: dict[str, Any] = {"problem": prompt_text(prompt), "response": completion_text(completion)}
    if id is not None:
        record["id"] = id
    return record


def _trace(record: dict[str, Any], index: int) -> Trace | BadRecord:
    try:
        return parse_record(record, source="<rl>", line=index + 1)[0]
    except TraceError as exc:
        return BadRecord("<rl>", index + 1, str(exc), record.get("id"))


# ----------------------------------------------------------------------------------------- scalar parts

def prm_reward(result: TraceScore | BadRecord, alpha: float | None = None) -> float:
    """The PRM score normalised to [0, 1] (see the module docstring); 0.0 for a trace that was not scored.

    ``alpha`` is the trajectory weight the score was made with (the model's; ``None`` reads it from nowhere and
    assumes the score carries no trajectory term beyond what ``trajectory_reward`` says, i.e. α = 1).
    """
    if not isinstance(result, TraceScore) or result.score is None:
        return 0.0
    value = float(result.score)
    if result.trajectory_reward is not None:
        value /= 1.0 + (1.0 if alpha is None else max(0.0, float(alpha)))
    if value != value:  # NaN from a broken model must not reach the optimiser
        return 0.0
    return min(1.0, max(0.0, value))


def outcome_reward(completion: Any, gold: Any, timeout: float = 5.0) -> float | None:
    """1.0 if the completion's final answer equals ``gold``, else 0.0; ``None`` when there is no gold answer.

    Grading runs in :mod:`fluxprm.grading`'s worker processes with a hard timeout: it never hangs the caller.
    """
    if gold is None or (isinstance(gold, str) and not gold.strip()):
        return None
    from fluxprm.grading import grade

    try:
        return 1.0 if grade(completion_text(completion), gold, timeout=timeout) else 0.0
    except Exception as exc:  # noqa: BLE001 - a grading failure costs one sample's outcome, never the run
        logger.warning("grading failed (%s: %s): outcome 0", type(exc).__name__, exc)
        return 0.0


def mix(prm: float, outcome: float | None, beta: float = DEFAULT_BETA) -> float:
    """``(1 − β)·outcome + β·prm``; a missing outcome counts 0."""
    return (1.0 - beta) * (outcome or 0.0) + beta * prm


# ----------------------------------------------------------------------------------------- token placement

def token_ends(text: str, tokenizer: Any, token_ids: Sequence[int] | None = None) -> list[int]:
    """Character offset (exclusive) in ``text`` where each token of the completion ends.

    Without ``token_ids`` the text is tokenized (``add_special_tokens=False``; a fast tokenizer's offset mapping).
    With the ids the policy generated, their offsets are used when re-tokenizing gives the same ids; otherwise
    each end is the length of the decoded prefix (exact for any tokenizer, slower), so a special token or an
    unusual merge never shifts a reward onto the wrong token.
    """
    if token_ids is not None:
        token_ids = [int(t) for t in token_ids]
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):  # a slow tokenizer has no offset mapping
        enc = None
    if enc is not None and (token_ids is None or list(enc["input_ids"]) == token_ids):
        ends, last = [], 0
        for _, end in enc["offset_mapping"]:
            last = max(last, int(end))
            ends.append(last)
        return ends
    if token_ids is None:
        token_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return _decoded_ends(tokenizer, token_ids, len(text))


_DECODE_WINDOW = 8  # tokens of left context when measuring one token's decoded length (multi-byte chars, merges)


def _decoded_ends(tokenizer: Any, token_ids: list[int], text_len: int) -> list[int]:
    """Ends from decoding: each token adds ``len(decode(ctx + [t])) − len(decode(ctx))`` characters.

    Linear in the completion length (a short window of context per token, not the whole prefix), so a 16K-token
    completion costs milliseconds, and exact for byte-level BPE up to the character a multi-byte sequence
    completes.
    """
    ends: list[int] = []
    total = 0
    for i in range(len(token_ids)):
        ctx = token_ids[max(0, i - _DECODE_WINDOW):i]
        with_token = tokenizer.decode(ctx + [token_ids[i]], skip_special_tokens=True)
        without = tokenizer.decode(ctx, skip_special_tokens=True) if ctx else ""
        total += max(0, len(with_token) - len(without))
        ends.append(min(total, text_len))
    return ends


def closing_tokens(ends: Sequence[int], char_ends: Sequence[int]) -> list[int]:
    """For each character end, the index of the token that contains its last character (the step's closing token).

    A position past the last token maps to the last token; an empty completion has no tokens (``[]`` → ``-1``s).
    """
    if not ends:
        return [-1] * len(char_ends)
    return [min(bisect.bisect_left(ends, max(1, c)), len(ends) - 1) for c in char_ends]


def step_char_ends(completion: str, trace: Trace, score: TraceScore) -> list[int]:
    """Where, in the completion string, each scored step ends (one per entry of ``score.step_rewards``).

    Each step is the span the core recorded in the trace's thinking or response text; that text is located in
    the completion in reading order. A step that is not a contiguous piece of the completion (a thought preamble
    merged with its body) is located by its last paragraph. A step that cannot be found ends where the previous
    one did (its reward is not lost: it lands on the same token).
    """
    texts: list[str] = []
    for body, spans, steps in ((trace.thinking or "", score.thinking_step_spans, score.thinking_step_rewards),
                               (trace.response or "", score.response_step_spans, score.response_step_rewards)):
        if spans is not None and len(spans) == len(steps):
            texts.extend(body[a:b] for a, b in spans)
        else:
            texts.extend([""] * len(steps))
    ends, cursor = [], 0
    for text in texts:
        found = _find_end(completion, text, cursor)
        if found is None:
            found = cursor if ends else len(completion)
        ends.append(found)
        cursor = max(cursor, found)
    return ends


def _find_end(haystack: str, needle: str, start: int) -> int | None:
    if not needle:
        return None
    pos = haystack.find(needle, start)
    if pos >= 0:
        return pos + len(needle)
    tail = needle.rsplit("\n\n", 1)[-1].strip()
    if tail and tail != needle:
        pos = haystack.find(tail, start)
        if pos >= 0:
            return pos + len(tail)
    return None


@dataclass(slots=True)
class DenseReward:
    """One completion's rewards on its tokens.

    ``token_rewards[t]`` is the reward on completion token ``t`` (zero except at step ends and the last token);
    ``step_end_tokens[i]`` is the token closing scored step ``i``, whose PRM reward is ``step_rewards[i]``;
    ``reward`` is the completion's scalar reward (equal to ``sum(token_rewards)`` under mean aggregation).
    """

    token_rewards: list[float]
    step_end_tokens: list[int]
    step_rewards: list[float]
    reward: float
    prm: float
    outcome: float | None
    error: str | None = None


def dense_reward(completion: str, trace: Trace | BadRecord, result: TraceScore | BadRecord, ends: Sequence[int],
                 outcome: float | None, beta: float, alpha: float | None) -> DenseReward:
    """Place one completion's reward on its tokens (see the module docstring for the split)."""
    prm = prm_reward(result, alpha)
    scalar = mix(prm, outcome, beta)
    rewards = [0.0] * len(ends)
    if not isinstance(result, TraceScore) or not isinstance(trace, Trace) or not result.step_rewards:
        if rewards:
            rewards[-1] = scalar
        error = result.error if isinstance(result, BadRecord) else None
        return DenseReward(rewards, [], [], scalar, prm, outcome, error)
    has_traj = result.trajectory_reward is not None
    scale = 1.0 + ((1.0 if alpha is None else alpha) if has_traj else 0.0)
    n = len(result.step_rewards)
    positions = closing_tokens(ends, step_char_ends(completion, trace, result))
    for pos, r in zip(positions, result.step_rewards):
        if pos >= 0:
            rewards[pos] += beta * float(r) / (n * scale)
    if rewards:
        tail = (1.0 - beta) * (outcome or 0.0)
        if has_traj:
            tail += beta * (scale - 1.0) * float(result.trajectory_reward) / scale
        rewards[-1] += tail
    return DenseReward(rewards, positions, list(result.step_rewards), scalar, prm, outcome)


# ----------------------------------------------------------------------------------------- the reward model

class RewardModel:
    """A loaded PRM with scoring options, turning (prompt, completion) pairs into RL rewards.

    Build one per process and call it every step: the model loads once and the engine's batching verdict is
    measured once. Thread-safe (one lock around the model).
    """

    def __init__(self, model: Any = None, options: Any = None, *, device: str = "auto") -> None:
        from fluxprm.engine.options import ScoreOptions
        from fluxprm.engine.score import Scorer
        from fluxprm.models.base import TransformerPRM
        from fluxprm.models.loading import load_prm

        prm = model if isinstance(model, TransformerPRM) else load_prm(model, device=device)
        options = options or ScoreOptions()
        self.scorer = Scorer(prm, replace(options, spans=True))
        self.prm = prm
        self._lock = threading.Lock()

    @property
    def alpha(self) -> float | None:
        return getattr(self.prm, "alpha", None)

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> tuple[list[Trace | BadRecord],
                                                                               list[TraceScore | BadRecord]]:
        """Parse and score every pair; returns the traces and one TraceScore or BadRecord per pair, in order."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        traces = [_trace(completion_record(p, c, id=str(i)), i) for i, (p, c) in enumerate(zip(prompts, completions))]
        with self._lock:
            results = self.scorer.score_batch(traces)
        for r in results:
            if isinstance(r, BadRecord):
                logger.debug("PRM reward 0 for sample %s: %s", r.line, r.error)
        return traces, results

    def rewards(self, prompts: Sequence[Any], completions: Sequence[Any], gold: Sequence[Any] | None = None,
                beta: float = DEFAULT_BETA, timeout: float = 5.0) -> list[float]:
        """Scalar rewards ``(1 − β)·outcome + β·prm``, one per completion."""
        _, results = self.score(prompts, completions)
        golds = _golds(gold, len(completions))
        return [mix(prm_reward(r, self.alpha), outcome_reward(c, g, timeout), beta)
                for r, c, g in zip(results, completions, golds)]

    def dense(self, prompts: Sequence[Any], completions: Sequence[Any], tokenizer: Any,
              gold: Sequence[Any] | None = None, beta: float = DEFAULT_BETA,
              completion_ids: Sequence[Sequence[int]] | None = None, timeout: float = 5.0) -> list[DenseReward]:
        """Per-token rewards: each step's share at the token closing it, the outcome term on the last token.

        ``tokenizer`` is the *policy's* tokenizer; ``completion_ids`` the token ids it generated (when given,
        ``token_rewards`` has exactly one entry per id).
        """
        traces, results = self.score(prompts, completions)
        golds = _golds(gold, len(completions))
        out = []
        for i, (trace, result, completion, g) in enumerate(zip(traces, results, completions, golds)):
            text = completion_text(completion)
            ids = None if completion_ids is None else completion_ids[i]
            ends = token_ends(text, tokenizer, ids)
            out.append(dense_reward(text, trace, result, ends, outcome_reward(text, g, timeout), beta, self.alpha))
        return out


def _golds(gold: Sequence[Any] | None, n: int) -> list[Any]:
    if gold is None:
        return [None] * n
    gold = list(gold)
    if len(gold) != n:
        raise ValueError(f"{len(gold)} gold answers for {n} completions")
    return gold


_SHARED: dict[tuple[str, str], RewardModel] = {}
_SHARED_LOCK = threading.Lock()


def shared_model(model: Any = None, device: str = "auto") -> RewardModel:
    """The process-wide :class:`RewardModel` for a model name or path (loaded on first use, then reused)."""
    if model is not None and not isinstance(model, str):
        return model if isinstance(model, RewardModel) else RewardModel(model, device=device)
    key = (model or "", device)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = RewardModel(model, device=device)
        return _SHARED[key]


def reward(prompts: Sequence[Any], completions: Sequence[Any], gold: Sequence[Any] | None = None,
           beta: float = DEFAULT_BETA, model: Any = None, *, dense: bool = False, tokenizer: Any = None,
           completion_ids: Sequence[Sequence[int]] | None = None, timeout: float = 5.0
           ) -> list[float] | list[DenseReward]:
    """RL rewards for completions of prompts: ``(1 − β)·outcome + β·PRM`` (see the module docstring).

    ``model`` is a name, a path, a loaded ``TransformerPRM`` or a :class:`RewardModel` (default: fluxprm-mini,
    loaded once per process). ``dense=True`` returns a :class:`DenseReward` per completion, placed on the tokens
    of ``tokenizer`` (the policy's tokenizer; required).
    """
    rm = shared_model(model)
    if dense:
        if tokenizer is None:
            raise ValueError("dense rewards need the policy's tokenizer (tokenizer=...)")
        return rm.dense(prompts, completions, tokenizer, gold, beta, completion_ids, timeout)
    return rm.rewards(prompts, completions, gold, beta, timeout)
