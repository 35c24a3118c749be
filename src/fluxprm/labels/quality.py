"""Quality reward: a judge LLM scores each thinking step 0-10 given the problem, the earlier steps and the
response; the score is divided by 10.

Two versioned prompts ship in ``fluxprm/prompts`` (docs/LABEL.md):

* ``judge_step_v2.txt`` (the default; placeholders ``{problem}``, ``{response}``, ``{steps}``, ``{number}``):
  problem and final response first, then the thinking steps up to the graded one, then a short question, so
  the prompts of one trace share their prefix (:class:`JudgeTrace`). The local judge reads a trace once,
  growing one KV cache (:meth:`LogprobJudge.score_traces`); servers' prefix caches hit. The earlier steps in
  view grow up to ``window_chars`` and then restart from the last ``context_chars`` of them.
* ``judge_step_v1.txt`` (placeholders ``{problem}``, ``{previous_steps}``, ``{step}``, ``{response}``), one
  prompt rebuilt per step: the earlier steps are the most recent ones that fit in ``context_chars`` (older
  ones replaced by a note saying how many were left out). Kept to reproduce old label files.

In both the problem, each step and the response keep at most ``text_chars`` characters (head and tail, the
middle replaced by ``[…]``), so a prompt stays bounded whatever the trace length.

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

import inspect
import logging
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Iterator, Sequence

__all__ = ["JUDGE_PROMPT", "JUDGE_PROMPTS", "load_prompt", "fill", "clip", "build_judge_prompt", "JudgeTrace",
           "parse_score", "score_from_logprobs", "Judge", "LogprobJudge", "TextJudge", "make_judge",
           "is_request_error"]

logger = logging.getLogger(__name__)

JUDGE_PROMPT = "judge_step_v1.txt"
JUDGE_PROMPTS = {"v1": JUDGE_PROMPT, "v2": "judge_step_v2.txt"}  # --judge-prompt → the versioned file
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


def _cache_name(llm: Any) -> str:
    """What the LLM cache keys ``llm``'s answers by: a local model's folder as it is now (``cache_name``), else its
    name (a server's model name is all there is to go by)."""
    return getattr(llm, "cache_name", None) or llm.name


@dataclass(frozen=True)
class JudgeTrace:
    """The v2 judge prompts of one trace, kept as pieces so that consecutive steps share a prefix.

    The prompt of thinking step ``t`` is ``head + omitted note + steps[start_t .. t] + questions[t]``: the
    problem and the final response come first (in ``head``), then the thinking steps up to and including the
    graded one, then a short question naming it. Consecutive steps thus extend one text, and a judge can run
    the trace once, growing its KV cache a step at a time, and pay only the question per step
    (:meth:`LogprobJudge.score_traces`); a server's prefix cache hits the same way.

    The earlier steps in view start at the trace's first step and grow; once they exceed ``window_chars``
    characters the view restarts from the most recent earlier steps that fit in ``context_chars`` (a note
    says how many are left out), and grows again: a step sees between the steps that fit in ``context_chars``
    and about ``window_chars`` of earlier reasoning, so the context stays bounded on 40K-token traces. ``starts[t]`` is the first
    step in view for step ``t``; steps that share it form one *segment* (one growing cache).
    """

    head: str
    steps: tuple[str, ...]       # "\n\nStep k: text" per thinking step (text clipped to text_chars)
    questions: tuple[str, ...]   # "\n\nGrade step k ..." per thinking step
    starts: tuple[int, ...]

    @classmethod
    def build(cls, problem: str, thinking_steps: Sequence[str], response: str, template: str | None = None,
              context_chars: int = 1000, window_chars: int = 6000, text_chars: int = 1500) -> "JudgeTrace":
        template = template if template is not None else load_prompt(JUDGE_PROMPTS["v2"])
        if template.count("{steps}") != 1:
            raise ValueError("a v2 judge prompt has exactly one {steps} placeholder (where the thinking steps go)")
        head_template, question_template = template.split("{steps}")
        head = fill(head_template, problem=clip(problem.strip(), text_chars),
                    response=clip(response.strip(), text_chars) if response.strip() else "(no final response: "
                    "the trace was cut off)")
        steps = tuple(f"\n\nStep {k + 1}: {clip(text, text_chars)}" for k, text in enumerate(thinking_steps))
        questions = tuple(fill(question_template, number=str(k + 1)) for k in range(len(steps)))
        starts: list[int] = []
        start = 0
        for t in range(len(steps)):
            if sum(len(x) for x in steps[start:t]) > window_chars:
                start, kept = t, 0
                while start > 0 and kept + len(steps[start - 1]) <= context_chars:
                    start -= 1
                    kept += len(steps[start])
            starts.append(start)
        return cls(head, steps, questions, tuple(starts))

    def __len__(self) -> int:
        return len(self.steps)

    @staticmethod
    def omitted(start: int) -> str:
        """The note a segment starting at step ``start`` (0-based) opens with after the head ('' for 0)."""
        return f"\n\n[{start} earlier step{'s' if start > 1 else ''} omitted]" if start else ""

    def prompt(self, t: int) -> str:
        """The whole v2 prompt for step ``t`` (what a text judge is sent)."""
        start = self.starts[t]
        return self.head + self.omitted(start) + "".join(self.steps[start : t + 1]) + self.questions[t]

    def segments(self) -> Iterator[tuple[int, list[int]]]:
        """``(start, steps judged)`` per run of steps that share the first step in view."""
        t = 0
        while t < len(self.starts):
            start, group = self.starts[t], []
            while t < len(self.starts) and self.starts[t] == start:
                group.append(t)
                t += 1
            yield start, group


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
        self.tokens_fed = 0  # tokens a local judge ran through its model (what a benchmark compares)
        # (query, key) pairs its attention computed, summed over forwards (per layer and head): with
        # tokens_fed, the judge's compute — on a small model over long traces attention is a large part of it
        self.attention_pairs = 0

    @property
    def name(self) -> str:
        return getattr(self.llm, "name", type(self.llm).__name__)

    def score_prompts(self, prompts: list[str], on_steps: Callable[[int], None] | None = None
                      ) -> list[float | None]:  # pragma: no cover - interface
        """One score per prompt; ``on_steps(n)`` is told as prompts are answered (progress of a long chunk)."""
        raise NotImplementedError

    def score_traces(self, traces: Sequence[JudgeTrace], on_steps: Callable[[int], None] | None = None
                     ) -> list[list[float | None]]:
        """Scores of every step of each trace's v2 prompts. Sent as whole prompts, in trace and step order,
        so a server with a prefix cache (llama.cpp ``cache_prompt``, vLLM/SGLang automatic prefix caching)
        reuses each step's prefix for the next one. ``on_steps(n)``: ``n`` more steps judged."""
        prompts = [trace.prompt(t) for trace in traces for t in range(len(trace))]
        # a subclass written before on_steps existed still works when no progress is asked for
        flat = self.score_prompts(prompts, on_steps) if on_steps is not None else self.score_prompts(prompts)
        out, at = [], 0
        for trace in traces:
            out.append(flat[at : at + len(trace)])
            at += len(trace)
        return out


class LogprobJudge(Judge):
    """Reads the score distribution of a local transformers model in one forward per prompt."""

    def _render(self, prompt: str) -> str:
        tok = self.llm.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           tokenize=False)
            return text + SCORE_PREFIX
        return prompt + "\n" + SCORE_PREFIX

    def score_prompts(self, prompts: list[str], on_steps: Callable[[int], None] | None = None) -> list[float | None]:
        out: list[float | None] = []
        for prompt in prompts:
            try:
                out.append(score_from_logprobs(self.logprobs(prompt)))
            except ValueError as exc:
                logger.warning("judge %s: %s; quality recorded as missing", self.name, exc)
                out.append(None)
            if on_steps is not None:
                on_steps(1)
        return out

    def logprobs(self, prompt: str) -> dict[str, float]:
        """Log-probs of the exact answers "0".."10" after the prompt (cached)."""
        from fluxprm.llm import LLMCache

        text = self._render(prompt)
        cache = getattr(self.llm, "cache", None)
        key = (LLMCache.key(_cache_name(self.llm), text, {"score_logprobs": list(CHOICES), "version": 1})
               if cache is not None else None)
        if key is not None and (hit := cache.get(key)) is not None:
            return {c: (-math.inf if v is None else v) for c, v in hit.items()}
        result = self._one_forward(text)
        if key is not None:
            cache.put(key, self.llm.name, {c: (None if v == -math.inf else v) for c, v in result.items()})
        return result

    def _choices(self) -> tuple[dict[str, list[int]], list[int] | None]:
        """Token ids of each answer "0".."10", and the extra token to append so that one forward reads them
        all (``None`` when the tokenizer splits the answers in a way one forward cannot cover)."""
        tok = self.llm.tokenizer
        choice_ids = {c: list(tok(c, add_special_tokens=False).input_ids) for c in CHOICES}
        multi = {c: ids for c, ids in choice_ids.items() if len(ids) > 1}
        # One forward covers every choice when the multi-token ones ("10") are a single-token choice
        # ("1") plus one more token: feed prompt + that first token and read two positions.
        prefixes = {tuple(ids[:-1]) for ids in multi.values()}
        if not (len(prefixes) <= 1 and all(len(p) == 1 for p in prefixes)):
            return choice_ids, None
        return choice_ids, list(next(iter(prefixes))) if prefixes else []

    def _one_forward(self, text: str) -> dict[str, float]:
        choice_ids, extra = self._choices()
        if extra is None:  # an unusual tokenizer: let the backend do one forward per extra token
            return _split_overlap(self.llm.choice_logprobs(text, list(CHOICES)), self.llm.tokenizer)
        return self._forward(list(self.llm.tokenizer(text).input_ids), choice_ids, extra)

    def _forward(self, prompt_ids: list[int], choice_ids: dict[str, list[int]], extra: list[int]) -> dict[str, float]:
        """Log-probs of the answers after ``prompt_ids``: one forward over the prompt and ``extra``."""
        import torch

        keep = 1 + len(extra)  # only the last positions need the LM head
        device = getattr(self.llm, "device", "cpu")
        ids = torch.tensor([prompt_ids + extra], device=device)
        self.tokens_fed += ids.shape[1]
        self.attention_pairs += _causal_pairs(0, ids.shape[1])
        with torch.inference_mode():
            try:
                logits = self.llm.model(input_ids=ids, logits_to_keep=keep).logits[0, -keep:].float()
            except TypeError:  # a model class without logits_to_keep
                logits = self.llm.model(input_ids=ids).logits[0, -keep:].float()
        return _answers(logits, choice_ids, extra)

    # -- v2: one growing KV cache per trace

    def _pieces(self) -> tuple[str, str]:
        """What wraps a v2 prompt: the chat template's text before the user message, and after it (with the
        assistant prefix "Score: ")."""
        tok = self.llm.tokenizer
        if getattr(tok, "chat_template", None):
            marker = "\x00fluxprm-user-message\x00"
            text = tok.apply_chat_template([{"role": "user", "content": marker}], add_generation_prompt=True,
                                           tokenize=False)
            before, after = text.split(marker)
            return before, after + SCORE_PREFIX
        return "", "\n" + SCORE_PREFIX

    def trace_ids(self, trace: JudgeTrace, t: int) -> list[int]:
        """Token ids of step ``t``'s v2 prompt: its pieces (chat header + head, omitted note, each step, question
        + chat footer) tokenized one by one and concatenated — exactly what the cached path feeds the model,
        so the two can be compared."""
        before, after = self._pieces()
        start = trace.starts[t]
        return (self._encode(before + trace.head, True) + self._encode(trace.omitted(start))
                + [i for k in range(start, t + 1) for i in self._encode(trace.steps[k])]
                + self._encode(trace.questions[t] + after))

    def _encode(self, text: str, first: bool = False) -> list[int]:
        return list(self.llm.tokenizer(text, add_special_tokens=first).input_ids) if text else []

    def trace_logprobs_uncached(self, trace: JudgeTrace, t: int) -> dict[str, float]:
        """Step ``t``'s answer log-probs from one full forward over :meth:`trace_ids` (no KV cache reused):
        the reference the cached path must equal."""
        choice_ids, extra = self._choices()
        if extra is None:
            raise ValueError("this tokenizer needs several forwards per answer; the cached judge cannot run it")
        return self._forward(self.trace_ids(trace, t), choice_ids, extra)

    def score_traces(self, traces: Sequence[JudgeTrace], on_steps: Callable[[int], None] | None = None
                     ) -> list[list[float | None]]:
        """Every step of each trace, reading the trace once per segment; ``on_steps(n)`` after each forward
        (and for the steps the LLM cache answered), so a chunk of long traces shows its progress.

        Per trace, one forward puts the chat header, problem and response in a KV cache. Per segment the cache
        is cropped back to them and extended with the omitted-steps note and the earlier steps in view. Then
        the segment's steps go through in blocks of about ``BLOCK_TOKENS`` tokens, one forward per block:
        each step followed by its question (and the answer's first token), with an attention mask under which
        a step sees the cache and the earlier steps only, and a question sees those and its own step — the
        same attention as a forward over that step's whole prompt, with positions to match. The questions'
        keys are then dropped from the cache, the steps' kept. Cost ≈ one pass over the trace plus the
        questions, instead of a whole prompt per step. Each step's result is cached in the LLM cache (key:
        its prompt text, v2 tokenization).
        """
        from fluxprm.llm import LLMCache

        choice_ids, extra = self._choices()
        if extra is None or not _can_crop(self.llm.model):
            return super().score_traces(traces, on_steps)
        tell = on_steps or (lambda n: None)
        cache_db = getattr(self.llm, "cache", None)
        out: list[list[float | None]] = []
        for trace in traces:
            before, after = self._pieces()
            keys = [LLMCache.key(_cache_name(self.llm), before + trace.prompt(t) + after,
                                 {"score_logprobs": list(CHOICES), "version": 2, "tokenized": "pieces"})
                    if cache_db is not None else None for t in range(len(trace))]
            found: list[dict[str, float] | None] = [None] * len(trace)
            for t, key in enumerate(keys):
                if key is not None and (hit := cache_db.get(key)) is not None:
                    found[t] = {c: (-math.inf if v is None else v) for c, v in hit.items()}
            if cached := sum(result is not None for result in found):
                tell(cached)
            kv, head_length = None, 0
            for start, group in trace.segments():
                if all(found[t] is not None for t in group):
                    continue
                if kv is None:
                    kv = self._new_cache()
                    self._extend(kv, self._encode(before + trace.head, True))
                    head_length = kv.get_seq_length()
                _crop_to(kv, head_length)
                self._extend(kv, self._encode(trace.omitted(start))
                             + [i for k in range(start, group[0]) for i in self._encode(trace.steps[k])])
                pending = [(t, self._encode(trace.steps[t]), self._encode(trace.questions[t] + after) + extra)
                           for t in group]
                while pending:
                    block, size = [], 0
                    while pending and (not block or size + len(pending[0][1]) + len(pending[0][2]) <= BLOCK_TOKENS):
                        block.append(pending.pop(0))
                        size += len(block[-1][1]) + len(block[-1][2])
                    fresh = 0
                    for (t, _, _), logits in zip(block, self._block_forward(kv, block, 1 + len(extra))):
                        if found[t] is None:
                            fresh += 1
                            found[t] = _answers(logits, choice_ids, extra)
                            if keys[t] is not None:
                                cache_db.put(keys[t], self.llm.name,
                                             {c: (None if v == -math.inf else v) for c, v in found[t].items()})
                    tell(fresh)
            scores: list[float | None] = []
            for result in found:
                try:
                    scores.append(score_from_logprobs(result))  # type: ignore[arg-type]
                except ValueError as exc:
                    logger.warning("judge %s: %s; quality recorded as missing", self.name, exc)
                    scores.append(None)
            out.append(scores)
        return out

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.llm.model.config)

    def _extend(self, kv: Any, ids: list[int]) -> None:
        """Append ``ids`` to the KV cache (no logits needed)."""
        import torch

        if not ids:
            return
        tensor = torch.tensor([ids], device=getattr(self.llm, "device", "cpu"))
        self.tokens_fed += len(ids)
        self.attention_pairs += _causal_pairs(kv.get_seq_length(), len(ids))
        with torch.inference_mode():
            try:
                self.llm.model(input_ids=tensor, past_key_values=kv, use_cache=True, logits_to_keep=1)
            except TypeError:  # a model class without logits_to_keep
                self.llm.model(input_ids=tensor, past_key_values=kv, use_cache=True)

    def _block_forward(self, kv: Any, block: list[tuple[int, list[int], list[int]]], keep: int) -> list[Any]:
        """One forward over ``step, question`` pairs appended to ``kv``; the logits of each question's last
        ``keep`` positions. Afterwards ``kv`` holds the steps only (the questions' entries are removed)."""
        import torch

        device = getattr(self.llm, "device", "cpu")
        past = kv.get_seq_length()
        ids: list[int] = []
        positions: list[int] = []
        owner: list[int] = []       # which pair of the block a token belongs to
        is_step: list[bool] = []
        read: list[int] = []        # block indices whose logits are wanted
        end = past                  # position after the last step token so far
        for j, (_, step, question) in enumerate(block):
            for piece, step_piece in ((step, True), (question, False)):
                ids += piece
                positions += range(end, end + len(piece))
                owner += [j] * len(piece)
                is_step += [step_piece] * len(piece)
                if step_piece:
                    end += len(piece)
            read += range(len(ids) - keep, len(ids))
        n = len(ids)
        self.tokens_fed += n
        self.attention_pairs += n * past + n * n  # the kernel computes the whole block square, mask or not
        owners = torch.tensor(owner, device=device)
        steps = torch.tensor(is_step, device=device)
        causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        # a key of the block is seen if it is earlier (causal) and a step token, or part of the same question
        seen = causal & (steps[None, :] | ((owners[:, None] == owners[None, :]) & ~steps[:, None] & ~steps[None, :]))
        mask = torch.cat([torch.ones(n, past, dtype=torch.bool, device=device), seen], dim=1)[None, None]
        with torch.inference_mode():
            logits = self.llm.model(input_ids=torch.tensor([ids], device=device),
                                    position_ids=torch.tensor([positions], device=device), attention_mask=mask,
                                    past_key_values=kv, use_cache=True,
                                    logits_to_keep=torch.tensor(read, device=device)).logits[0].float()
            kept = torch.cat([torch.arange(past, device=device), past + steps.nonzero().flatten()])
            for layer in kv.layers:
                layer.keys = layer.keys.index_select(-2, kept)
                layer.values = layer.values.index_select(-2, kept)
        return [logits[j * keep : (j + 1) * keep] for j in range(len(block))]


def _causal_pairs(past: int, n: int) -> int:
    """(query, key) pairs of a causal forward of ``n`` tokens after ``past`` cached ones."""
    return n * past + n * (n + 1) // 2


def _crop_to(kv: Any, length: int) -> None:
    """Drop the KV cache's tokens after the first ``length``.

    Through transformers 5.14 ``crop(n)`` with ``n >= 0`` meant "keep n tokens"; 5.15 and later reject it and
    take only a negative count of tokens to remove, which every version reads the same way (and ``crop(0)``
    would empty the cache on the older ones, hence the guard).
    """
    surplus = kv.get_seq_length() - length
    if surplus > 0:
        kv.crop(-surplus)


BLOCK_TOKENS = 1024  # tokens per forward of the cached judge: amortises the per-forward cost over several steps


def _can_crop(model: Any) -> bool:
    """Whether the model keeps a plain KV cache that can be cropped back: every layer full attention (no
    sliding window, no recurrent state)."""
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return False
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None)
    if layer_types:
        return all(kind == "full_attention" for kind in layer_types)
    return not (getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", False))


def _answers(logits: Any, choice_ids: dict[str, list[int]], extra: list[int]) -> dict[str, float]:
    """Log-probs of the answers "0".."10" from the logits of the last position (and of the appended first
    answer token, for answers of two tokens)."""
    import torch

    first = torch.log_softmax(logits[0], dim=-1)
    second = torch.log_softmax(logits[1], dim=-1) if extra else None
    out: dict[str, float] = {}
    for c, cids in choice_ids.items():
        out[c] = float(first[cids[0]]) if len(cids) == 1 else float(first[cids[0]] + second[cids[1]])
    # "1" followed by "0" is the answer "10", not "1": move that mass out of "1".
    for c, cids in choice_ids.items():
        if len(cids) > 1:
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

    def score_prompts(self, prompts: list[str], on_steps: Callable[[int], None] | None = None) -> list[float | None]:
        from fluxprm.llm import GenParams

        scores: list[float | None] = [None] * len(prompts)
        todo = list(range(len(prompts)))
        for attempt in range(self.retries + 1):
            if not todo:
                break
            params = GenParams(max_tokens=self.max_tokens, temperature=0.0 if attempt == 0 else self.retry_temperature,
                               seed=self.seed + attempt)
            self.attempts += len(todo)
            retry: list[int] = []
            # With progress wanted, the requests go in slices (several per concurrent connection, in order, so a
            # server's prefix cache still hits): a chunk's thousand steps would otherwise report all at once.
            size = len(todo) if on_steps is None else max(1, PROGRESS_SLICE * getattr(self.llm, "concurrency", 1))
            for at in range(0, len(todo), size):
                part = todo[at : at + size]
                texts = _generate_isolating(self.llm, [[{"role": "user", "content": prompts[i]}] for i in part],
                                            params)
                unparsed = 0
                for i, text in zip(part, texts):
                    if text == _FAILED:  # rejected by the server: retrying would not help
                        continue
                    scores[i] = _to_unit(parse_score(text))
                    if scores[i] is None:
                        retry.append(i)
                        unparsed += 1
                if on_steps is not None:  # answered for good: parsed, rejected, or out of retries
                    on_steps(len(part) - (unparsed if attempt < self.retries else 0))
            if retry and attempt < self.retries:
                logger.debug("judge %s: %d unparseable answers, retry %d", self.name, len(retry), attempt + 1)
            todo = retry
        return scores


# Requests per concurrent connection between two progress reports of the text judge. Each slice waits for its slowest
# request: 512 requests to a local server answering in 20-60 ms, 8 connections, took 1-8 % longer than in one call.
PROGRESS_SLICE = 8


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
