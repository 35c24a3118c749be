"""Quality reward: a judge LLM scores each thinking step 0-10 given the problem, the earlier steps and the
response; the score is divided by 10.

The prompt is the versioned package file ``prompts/judge_step_v1.txt`` (placeholders ``{problem}``,
``{previous_steps}``, ``{step}``, ``{response}``). Long texts are clipped so a judge prompt stays a few
thousand characters whatever the trace length (documented choice): the problem, the step and the response
keep at most ``text_chars`` characters each (head and tail, the middle replaced by ``[…]``), and the earlier
steps are the most recent ones that fit in ``context_chars`` (older ones replaced by a note saying how many
were left out).

Two judge modes, picked from the LLM object:

* **log-prob** (a local :class:`fluxprm.llm.TransformersLLM`, default the embedded SmolLM2-135M-Instruct):
  the chat-templated prompt is followed by the assistant prefix ``"Score: "`` and one forward reads the
  next-token distribution. Choices are ``"0"``…``"10"``; when the tokenizer splits ``"10"`` into ``"1"``,
  ``"0"`` (SmolLM2 does) the forward runs over prompt + ``"1"``, so the same forward also gives
  P(``"0"`` | ``"1"``): P(10) = P(1)·P(0|1) and P(1) = P(1)·(1 − P(0|1)). The 11 probabilities are
  renormalised and the judge score is the expected value / 10. No sampling; cached in the LLM cache.
* **text** (any other backend, e.g. an OpenAI-compatible server via ``URL#model`` / ``openai:model``):
  the judge answers in words and :func:`parse_score` reads "Score: N" (also "N/10", a bold "**N**", a lone
  number on the last line). Unparseable output is retried up to ``retries`` times with a different seed
  and temperature ``retry_temperature`` (each attempt is its own cache entry, so retries are not answered
  from the cache with the same garbage); still unparseable → the step's quality is ``None`` (missing,
  left out of the fusion) — never silently 0.
"""

from __future__ import annotations

import math
import re
import logging
from importlib import resources
from typing import Any, Sequence

__all__ = ["JUDGE_PROMPT", "load_prompt", "fill", "clip", "build_judge_prompt", "parse_score", "score_from_logprobs",
           "Judge", "LogprobJudge", "TextJudge", "make_judge", "is_request_error"]

logger = logging.getLogger(__name__)

JUDGE_PROMPT = "judge_step_v1.txt"
SCORE_PREFIX = "Score: "
CHOICES = tuple(str(i) for i in range(11))


def load_prompt(name: str) -> str:
    """The text of a versioned prompt template shipped in ``fluxprm/prompts``."""
    return resources.files("fluxprm").joinpath("prompts", name).read_text(encoding="utf-8")


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def fill(text: str, /, **values: str) -> str:
    """Replace ``{name}`` placeholders in one pass (braces inside the values, e.g. LaTeX, are left alone)."""
    missing = set(_PLACEHOLDER.findall(text)) - set(values)
    if missing:
        raise KeyError(f"prompt placeholders without a value: {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def clip(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and tail joined by ``[…]``."""
    if limit <= 0 or len(text) <= limit:
        return text
    half = max(1, (limit - 5) // 2)
    return text[:half].rstrip() + " […] " + text[-half:].lstrip()


def _previous(steps: Sequence[str], budget: int, text_chars: int) -> str:
    if not steps:
        return "(none: this is the first step)"
    kept: list[str] = []
    used = 0
    for i in range(len(steps) - 1, -1, -1):
        piece = f"Step {i + 1}: {clip(steps[i], text_chars)}"
        if kept and used + len(piece) > budget:
            break
        kept.append(piece if used + len(piece) <= budget else clip(piece, budget))
        used += len(piece) + 2
    omitted = len(steps) - len(kept)
    head = [f"[{omitted} earlier step{'s' if omitted > 1 else ''} omitted]"] if omitted else []
    return "\n\n".join(head + kept[::-1])


def build_judge_prompt(problem: str, thinking_steps: Sequence[str], t: int, response: str,
                       template: str | None = None, context_chars: int = 2000, text_chars: int = 1500) -> str:
    """The judge prompt for thinking step ``t`` (0-based) of a trace."""
    template = template if template is not None else load_prompt(JUDGE_PROMPT)
    return fill(template, problem=clip(problem.strip(), text_chars),
                previous_steps=_previous(thinking_steps[:t], context_chars, text_chars),
                step=clip(thinking_steps[t], text_chars),
                response=clip(response.strip(), text_chars) if response.strip() else "(no final response: "
                "the trace was cut off)")


_SCORE_PATTERNS = (
    # "Score: N" and the synonyms small judges use instead ("Rating: 10.", "Grade = 7")
    re.compile(r"(?:score|rating|grade)\s*(?:of\s*)?[:=]?\s*[*_`\[\(]*\s*(\d+(?:\.\d+)?)\s*(?:/\s*10|out of 10)?",
               re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/\s*10\b|out of 10\b)", re.IGNORECASE),
    re.compile(r"\*\*\s*(\d+(?:\.\d+)?)\s*\*\*"),
)


def parse_score(text: str | None) -> float | None:
    """A 0-10 score from a judge's answer, or ``None`` if there is none.

    Looks for "Score: N" (or "Rating"/"Grade"; any case; ``=``, bold, brackets and "/10" tolerated), then "N/10" / "N out of 10",
    then a bold number, then a last line that is only a number; the last match of the first pattern that
    matches wins (judges often restate the score at the end). Values outside 0-10 are rejected.
    """
    if not text:
        return None
    for pattern in _SCORE_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return _in_range(matches[-1])
    lines = [ln.strip(" .*`") for ln in text.strip().splitlines() if ln.strip()]
    if lines and re.fullmatch(r"\d+(?:\.\d+)?", lines[-1]):
        return _in_range(lines[-1])
    return None


def _in_range(s: str) -> float | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return v if 0.0 <= v <= 10.0 else None


def score_from_logprobs(logprobs: dict[str, float]) -> float:
    """Expected score / 10 from log-probs of the exact answers ``"0"``..``"10"`` (renormalised over them)."""
    probs = {c: math.exp(lp) for c, lp in logprobs.items() if lp is not None and lp > -math.inf}
    total = sum(probs.values())
    if total <= 0:
        raise ValueError("the judge gave no probability to any score 0-10")
    return sum(int(c) * p for c, p in probs.items()) / total / 10.0


def is_request_error(exc: BaseException) -> bool:
    """An LLM failure that belongs to one request (prompt too long, rejected input), not to the server.

    Such failures make one value missing; anything else (server down, auth) stops the job so that a
    ``--resume`` later fills the values instead of leaving permanent holes.
    """
    cause = exc.__cause__ or exc
    return getattr(cause, "status_code", None) in (400, 413, 422)


class Judge:
    """Scores judge prompts; ``score_prompts`` returns one value in [0, 1] or ``None`` per prompt."""

    def __init__(self, llm: Any):
        self.llm = llm

    @property
    def name(self) -> str:
        return getattr(self.llm, "name", type(self.llm).__name__)

    def score_prompts(self, prompts: list[str]) -> list[float | None]:  # pragma: no cover - interface
        raise NotImplementedError


class LogprobJudge(Judge):
    """Reads the score distribution of a local transformers model in one forward per prompt."""

    def _render(self, prompt: str) -> str:
        tok = self.llm.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           tokenize=False)
            return text + SCORE_PREFIX
        return prompt + "\n" + SCORE_PREFIX

    def score_prompts(self, prompts: list[str]) -> list[float | None]:
        out: list[float | None] = []
        for prompt in prompts:
            try:
                out.append(score_from_logprobs(self.logprobs(prompt)))
            except ValueError as exc:
                logger.warning("judge %s: %s; quality recorded as missing", self.name, exc)
                out.append(None)
        return out

    def logprobs(self, prompt: str) -> dict[str, float]:
        """Log-probs of the exact answers "0".."10" after the prompt (cached)."""
        from fluxprm.llm import LLMCache

        text = self._render(prompt)
        cache = getattr(self.llm, "cache", None)
        key = LLMCache.key(self.llm.name, text, {"score_logprobs": list(CHOICES), "version": 1}) if cache is not None else None
        if key is not None and (hit := cache.get(key)) is not None:
            return {c: (-math.inf if v is None else v) for c, v in hit.items()}
        result = self._one_forward(text)
        if key is not None:
            cache.put(key, self.llm.name, {c: (None if v == -math.inf else v) for c, v in result.items()})
        return result

    def _one_forward(self, text: str) -> dict[str, float]:
        import torch

        tok, model = self.llm.tokenizer, self.llm.model
        prompt_ids = list(tok(text).input_ids)
        choice_ids = {c: list(tok(c, add_special_tokens=False).input_ids) for c in CHOICES}
        multi = {c: ids for c, ids in choice_ids.items() if len(ids) > 1}
        # One forward covers every choice when the multi-token ones ("10") are a single-token choice
        # ("1") plus one more token: feed prompt + that first token and read two positions.
        prefixes = {tuple(ids[:-1]) for ids in multi.values()}
        one_forward = len(prefixes) <= 1 and all(len(p) == 1 for p in prefixes)
        if not one_forward:  # an unusual tokenizer: let the backend do one forward per extra token
            return _split_overlap(self.llm.choice_logprobs(text, list(CHOICES)), tok)
        extra = list(next(iter(prefixes))) if prefixes else []
        device = getattr(self.llm, "device", "cpu")
        keep = 1 + len(extra)  # only the last positions need the LM head
        with torch.inference_mode():
            ids = torch.tensor([prompt_ids + extra], device=device)
            try:
                logits = model(input_ids=ids, logits_to_keep=keep).logits[0, -keep:].float()
            except TypeError:  # a model class without logits_to_keep
                logits = model(input_ids=ids).logits[0, -keep:].float()
        first = torch.log_softmax(logits[0], dim=-1)
        second = torch.log_softmax(logits[1], dim=-1) if extra else None
        out: dict[str, float] = {}
        for c, cids in choice_ids.items():
            if len(cids) == 1:
                out[c] = float(first[cids[0]])
            else:
                out[c] = float(first[cids[0]] + second[cids[1]])
        # "1" followed by "0" is the answer "10", not "1": move that mass out of "1".
        for c, cids in multi.items():
            for short, sids in choice_ids.items():
                if len(sids) == 1 and sids[0] == cids[0]:
                    rest = math.exp(out[short]) - math.exp(out[c])
                    out[short] = math.log(rest) if rest > 0 else -math.inf
        return out


def _split_overlap(logprobs: dict[str, float], tokenizer: Any) -> dict[str, float]:
    """``choice_logprobs`` sums a multi-token choice's tokens, and scores a single-token choice by its first
    token only, so P("1") includes P("10"); subtract it (needs the tokenizer to know which overlap)."""
    if tokenizer is None:
        return logprobs
    out = dict(logprobs)
    ids = {c: list(tokenizer(c, add_special_tokens=False).input_ids) for c in logprobs}
    for c, cids in ids.items():
        if len(cids) > 1:
            for short, sids in ids.items():
                if len(sids) == 1 and sids[0] == cids[0] and out[short] > -math.inf and out[c] > -math.inf:
                    rest = math.exp(out[short]) - math.exp(out[c])
                    out[short] = math.log(rest) if rest > 0 else -math.inf
    return out


class TextJudge(Judge):
    """Asks a chat model for "Score: N"; retries unparseable answers, then records ``None``."""

    def __init__(self, llm: Any, retries: int = 2, max_tokens: int = 256, retry_temperature: float = 0.7,
                 seed: int = 0):
        super().__init__(llm)
        self.retries, self.max_tokens = retries, max_tokens
        self.retry_temperature, self.seed = retry_temperature, seed
        self.attempts = 0

    def score_prompts(self, prompts: list[str]) -> list[float | None]:
        from fluxprm.llm import GenParams

        scores: list[float | None] = [None] * len(prompts)
        todo = list(range(len(prompts)))
        for attempt in range(self.retries + 1):
            if not todo:
                break
            params = GenParams(max_tokens=self.max_tokens, temperature=0.0 if attempt == 0 else self.retry_temperature,
                               seed=self.seed + attempt)
            messages = [[{"role": "user", "content": prompts[i]}] for i in todo]
            self.attempts += len(todo)
            texts = _generate_isolating(self.llm, messages, params)
            retry: list[int] = []
            for i, text in zip(todo, texts):
                if text == _FAILED:  # rejected by the server: retrying would not help
                    continue
                scores[i] = _to_unit(parse_score(text))
                if scores[i] is None:
                    retry.append(i)
            if retry and attempt < self.retries:
                logger.debug("judge %s: %d unparseable answers, retry %d", self.name, len(retry), attempt + 1)
            todo = retry
        return scores


def _to_unit(score: float | None) -> float | None:
    return None if score is None else score / 10.0


_FAILED = "\x00request failed\x00"  # marks a request-level failure: not retried, recorded as missing


def _generate_isolating(llm: Any, prompts: list[Any], params: Any) -> list[str | None]:
    """``llm.generate`` over ``prompts``; if one prompt is rejected (HTTP 400/413/422), retry prompt by prompt
    (finished ones come from the cache) and mark the rejected ones ``_FAILED`` (logged)."""
    try:
        return [texts[0] if texts else None for texts in llm.generate(prompts, params)]
    except Exception as exc:  # noqa: BLE001 - filtered just below
        if not is_request_error(exc):
            raise
    out: list[str | None] = []
    for p in prompts:
        try:
            texts = llm.generate([p], params)[0]
            out.append(texts[0] if texts else None)
        except Exception as exc:  # noqa: BLE001
            if not is_request_error(exc):
                raise
            logger.warning("%s: request rejected, value recorded as missing: %s", getattr(llm, "name", llm), exc)
            out.append(_FAILED)
    return out


def make_judge(llm: Any, retries: int = 2, max_tokens: int = 256, retry_temperature: float = 0.7,
               seed: int = 0) -> Judge:
    """The log-prob judge for a local transformers model, the text judge for anything else."""
    if hasattr(llm, "model") and hasattr(llm, "tokenizer"):
        return LogprobJudge(llm)
    return TextJudge(llm, retries=retries, max_tokens=max_tokens, retry_temperature=retry_temperature, seed=seed)
