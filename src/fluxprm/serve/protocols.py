"""Request and response shapes of the three scoring protocols ``fluxprm serve`` speaks (no web framework here).

* **native** ``POST /v1/score``: ``{"records": [trace record, ...]}`` (or a bare JSON array) in, ``{"model",
  "results": [...]}`` out — one score record (``docs/SCHEMAS.md``) or errors record per trace, in order,
  exactly what ``fluxprm score`` writes for the same records.
* **OpenRLHF** ``POST /get_reward``: ``{"query": [...], "prompts": [...], "labels": [...]}`` in (what
  ``openrlhf/utils/remote_rm_utils.py`` posts: ``query`` = prompt + response decoded with special tokens,
  ``prompts`` = the prompt strings, ``labels`` = gold answers), ``{"rewards", "scores", "extra_logs"}`` out
  (what ``openrlhf/cli/serve_rm.py`` returns and ``update_samples_with_rewards`` reads: one number per query
  in each list, and ``extra_logs`` as lists of numbers per query).
* **vLLM** ``POST /pooling`` for process reward models: ``{"model", "input" | "messages"}`` in, one
  ``[p_neg, p_pos]`` pair per step tag of each input out, in vLLM's ``PoolingResponse`` shape (``id``,
  ``object: "list"``, ``created``, ``model``, ``data: [{"index", "object": "pooling", "data"}]``, ``usage``) —
  what ``vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling`` answers (``Qwen2ForProcessRewardModel``:
  softmax of the two-class head at every ``<extra_0>`` token, class 1 = correct).

Parsing never raises anything but :class:`RequestError` (a 4xx with a message naming the field); per-trace
problems become ``BadRecord``s that travel with the batch and come back as per-trace errors.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from fluxprm.records import BadRecord
from fluxprm.rl.rewards import completion_record, prompt_text
from fluxprm.scores import TraceScore
from fluxprm.traces import Trace, TraceError, parse_record, read_chat_template, split_thinking

__all__ = ["RequestError", "parse_score_request", "score_response", "RewardBatch", "parse_get_reward",
           "reward_response", "PoolingItem", "parse_pooling", "pooling_response", "trace_tokens"]

SOURCE = "<request>"  # the ``source`` of traces read from a request body (``line`` = record index + 1)
POOLING_TASKS = (None, "token_classify", "encode", "reward")  # what a PRM answers under vLLM's task names


class RequestError(ValueError):
    """A request the server will not score: HTTP ``status``, a message saying what to change, the field."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param

    @property
    def type(self) -> str:
        return {400: "BadRequestError", 404: "NotFoundError", 413: "RequestTooLarge"}.get(self.status,
                                                                                            "BadRequestError")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _check_count(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise RequestError(f"the request holds {n} {what}, more than this server's limit of {limit} "
                           "(--max-request-traces); split it", status=413)


def trace_tokens(item: Trace | BadRecord) -> int:
    """Characters / 4 of a trace's text: the queue's token estimate (no tokenizer in the request path)."""
    if not isinstance(item, Trace):
        return 1
    parts = [item.problem, item.thinking, item.response, *(item.steps or ()), *(item.thinking_steps or ())]
    return 1 + sum(len(p) for p in parts if p) // 4


def _bad(exc: TraceError, line: int) -> BadRecord:
    return BadRecord(SOURCE, line, str(exc), exc.id, exc.hint)


# ============================================================================================ native /v1/score

def parse_score_request(body: Any, max_traces: int) -> list[Trace | BadRecord]:
    """Trace records → one ``Trace`` (or ``BadRecord``) per trace; a Best-of-N pool record gives one per candidate."""
    records = body.get("records") if isinstance(body, dict) else body
    if isinstance(body, dict) and "records" not in body:
        raise RequestError("expected {\"records\": [trace record, ...]} (or a JSON array of trace records); the "
                           f"body has keys {', '.join(map(repr, body)) or 'none'}", param="records")
    if not isinstance(records, list):
        raise RequestError(f"'records' must be an array of trace records, got {_type_name(records)}",
                           param="records")
    _check_count(len(records), max_traces, "records")
    items: list[Trace | BadRecord] = []
    for i, record in enumerate(records):
        try:
            items.extend(parse_record(record, source=SOURCE, line=i + 1))
        except TraceError as exc:
            items.append(_bad(exc, i + 1))
        _check_count(len(items), max_traces, "traces")
    return items


def score_response(model: str, results: Sequence[TraceScore | BadRecord]) -> dict[str, Any]:
    """``{"model", "results"}``: each result a score record, or an errors record (it has an ``"error"`` key)."""
    return {"model": model, "results": [r.to_json() for r in results]}


# ============================================================================================ OpenRLHF /get_reward

@dataclass
class RewardBatch:
    """One /get_reward request: a trace per query (or the reason it has none), its completion text and gold."""

    traces: list[Trace | BadRecord]
    completions: list[str]
    golds: list[Any]


def _str_list(body: dict, key: str, n: int | None) -> list[Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str) and key != "labels":
        value = [value]
    if not isinstance(value, list):
        raise RequestError(f"'{key}' must be an array, got {_type_name(value)}", param=key)
    if n is not None and value and len(value) != n:
        raise RequestError(f"'{key}' has {len(value)} entries but 'query' has {n}; send one per query", param=key)
    return value or None


def split_query(query: str, prompt: str | None) -> tuple[str, str | None]:
    """``(completion, prompt)`` of an OpenRLHF query (= prompt + response, decoded with its special tokens).

    The prompt is a prefix of the query when decoding round-trips (it does for the tokenizers OpenRLHF
    uses); otherwise its stripped text is looked for in the query; failing that the query is read as a chat
    transcript (its last assistant turn is the completion, its last user turn the problem).
    """
    if prompt:
        if query.startswith(prompt):
            return query[len(prompt):], prompt
        core = prompt.strip()
        at = query.rfind(core) if core else -1
        if at >= 0:
            return query[at + len(core):], prompt
    return query, prompt


def parse_get_reward(body: Any, max_traces: int) -> RewardBatch:
    """An OpenRLHF remote-RM request → one trace per query, its completion, its gold answer (or None)."""
    if not isinstance(body, dict):
        raise RequestError(f"expected a JSON object with 'query' (and 'prompts', 'labels'), got {_type_name(body)}")
    queries = body.get("query", body.get("queries"))
    if isinstance(queries, str):
        queries = [queries]
    if not isinstance(queries, list):
        raise RequestError("'query' must be an array of strings (prompt + response of each sample)"
                           if queries is not None else "missing 'query': an array of prompt + response strings",
                           param="query")
    _check_count(len(queries), max_traces, "queries")
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise RequestError(f"'query'[{i}] must be a string, got {_type_name(q)}", param="query")
    n = len(queries)
    prompts = _str_list(body, "prompts", n)
    labels = _str_list(body, "labels", n)
    traces: list[Trace | BadRecord] = []
    completions: list[str] = []
    for i, query in enumerate(queries):
        prompt = prompts[i] if prompts else None
        if prompt is not None and not isinstance(prompt, (str, list)):
            raise RequestError(f"'prompts'[{i}] must be a string or a message list, got {_type_name(prompt)}",
                               param="prompts")
        if isinstance(prompt, list):  # a chat message list: the completion follows its last user turn
            completion, _ = split_query(query, prompt_text(prompt))
            record = completion_record(prompt, completion, id=str(i))
        else:
            completion, prompt = split_query(query, prompt)
            record = completion_record(prompt, completion, id=str(i)) if prompt else {"id": str(i),
                                                                                       "response": query}
        completions.append(completion)
        try:
            traces.append(parse_record(record, source=SOURCE, line=i + 1)[0])
        except TraceError as exc:
            if not prompt:
                exc = TraceError(f"cannot tell the prompt from the response in 'query'[{i}] ({exc}); send "
                                 "'prompts' as OpenRLHF does", id=str(i))
            traces.append(_bad(exc, i + 1))
    golds = list(labels) if labels else [None] * n
    return RewardBatch(traces, completions, golds)


def reward_response(results: Sequence[TraceScore | BadRecord], prm: Sequence[float], outcome: Sequence[float | None],
                    rewards: Sequence[float]) -> dict[str, Any]:
    """OpenRLHF's reply: ``rewards`` (for the advantages), ``scores`` (0–1, for dynamic filtering: the same
    values, which already lie in [0, 1]), ``extra_logs`` (per-sample numbers it logs: the normalised PRM
    reward, the outcome (0 without a label), whether the PRM could score the sample)."""
    return {"rewards": list(rewards), "scores": list(rewards),
            "extra_logs": {"prm_reward": list(prm),
                           "outcome_reward": [0.0 if o is None else float(o) for o in outcome],
                           "prm_scored": [1.0 if isinstance(r, TraceScore) else 0.0 for r in results]}}


# ============================================================================================ vLLM /pooling

@dataclass
class PoolingItem:
    """One /pooling input cut at its step tags: the problem, and the text before each tag, in reading order.

    ``thinking`` / ``response`` hold the raw segments ending at each tag in the reply's thinking part (inside
    ``<think>…</think>``) and after it; the reply's text after its last tag carries no tag and is not scored.
    """

    problem: str
    thinking: list[str]
    response: list[str]
    prompt_tokens: int = 0

    @property
    def tags(self) -> int:
        return len(self.thinking) + len(self.response)

    def trace(self, index: int) -> Trace | BadRecord:
        """The trace to score (explicit steps: the non-empty segments), or why there is none."""
        thinking = [s.strip() for s in self.thinking if s.strip()]
        response = [s.strip() for s in self.response if s.strip()]
        if not thinking and not response:
            return BadRecord(SOURCE, index + 1, f"input {index}: every step before a step tag is empty; put each "
                                                "step's text before its tag", str(index))
        return Trace(id=str(index), problem=self.problem, response="\n\n".join(response), steps=response,
                     thinking="\n\n".join(thinking) if thinking else None, thinking_steps=thinking or None,
                     source=SOURCE, line=index + 1)

    def pairs(self, result: TraceScore | BadRecord, index: int, max_length: int | None) -> list[list[float]]:
        """``[p_neg, p_pos]`` per tag: ``[1 - r, r]`` of the step ending there; an empty step repeats the reward
        of the step before it (the first non-empty one if it leads)."""
        if isinstance(result, BadRecord):
            raise RequestError(f"input {index}: {result.error}")
        thinking = [s for s in self.thinking if s.strip()]
        response = [s for s in self.response if s.strip()]
        if (len(result.thinking_step_rewards) != len(thinking) or len(result.response_step_rewards) != len(response)
                or result.truncated):
            limit = f" of {max_length} tokens" if max_length else ""
            raise RequestError(f"input {index} does not fit the model's context{limit}: send fewer or shorter "
                               "steps (vLLM rejects such inputs too), or score it whole with POST /v1/score, which "
                               "scores long traces in windows")
        rewards = iter([*result.thinking_step_rewards, *result.response_step_rewards])
        per_tag: list[float | None] = [next(rewards) if s.strip() else None for s in [*self.thinking, *self.response]]
        last = next(r for r in per_tag if r is not None)
        filled = []
        for r in per_tag:
            last = r if r is not None else last
            filled.append(float(last))
        return [[1.0 - r, r] for r in filled]


def _message_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise RequestError(f"{where}.content[{j}]: only text parts are supported by a process reward "
                                   "model", param="messages")
        return "\n".join(parts)
    raise RequestError(f"{where}.content must be a string or an array of text parts, got {_type_name(content)}",
                       param="messages")


def _turns_item(turns: list[tuple[str, str]], tag: str, index: int) -> PoolingItem:
    """The reply is the one turn holding the step tags; the problem is the last user turn before it."""
    tagged = [k for k, (_, text) in enumerate(turns) if tag in text]
    if not tagged:
        return PoolingItem("", [], [])
    if len(tagged) > 1:
        roles = ", ".join(turns[k][0] or "text" for k in tagged)
        raise RequestError(f"input {index}: step tags {tag!r} appear in more than one turn ({roles}); put every "
                           "step and its tag in the reply (the assistant turn)")
    k = tagged[0]
    problem = ""
    if turns[k][0] != "user":
        problem = next((text for role, text in reversed(turns[:k]) if role == "user"), "")
    return _text_item(problem, turns[k][1], tag)


def _text_item(problem: str, reply: str, tag: str) -> PoolingItem:
    """Segments of a reply: tagged thinking steps (``<think>…</think>`` holding tags) are thinking steps, which a
    trajectory-aware model reads as such; a thought without tags stays inside the first step's text, as vLLM
    would read it."""
    thinking, response = split_thinking(reply)
    if thinking is None or tag not in thinking or thinking.count(tag) + response.count(tag) != reply.count(tag):
        thinking, response = None, reply
    segments = lambda text: text.split(tag)[:-1] if text else []  # noqa: E731 - the text before each tag
    return PoolingItem(problem, segments(thinking), segments(response))


def _text_input(text: str, tag: str, index: int) -> PoolingItem:
    if tag not in text:
        return PoolingItem("", [], [])
    chat = read_chat_template(text)
    if chat is not None:
        return _turns_item([(role, content) for role, content in chat.turns], tag, index)
    return _text_item("", text, tag)


def parse_pooling(body: Any, step_tag: str, decode: Callable[[list[int]], str], max_traces: int
                  ) -> tuple[str | None, list[PoolingItem]]:
    """A vLLM ``PoolingRequest`` → ``(model, items)``. ``input`` is a string, an array of strings, an array of
    token ids or an array of those (ids are decoded with the served model's tokenizer); ``messages`` is a chat."""
    if not isinstance(body, dict):
        raise RequestError(f"expected a JSON object with 'input' or 'messages', got {_type_name(body)}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"'model' must be a string, got {_type_name(model)}", param="model")
    task = body.get("task")
    if task not in POOLING_TASKS:
        raise RequestError(f"task {task!r} is not supported: this server serves a process reward model; use "
                           "\"token_classify\" (or leave 'task' out)", param="task")
    if body.get("encoding_format", "float") != "float":
        raise RequestError("only \"encoding_format\": \"float\" is supported", param="encoding_format")
    if body.get("use_activation") is False or body.get("softmax") is False:
        raise RequestError("raw logits (use_activation=false) are not served: the data are the probabilities "
                           "[p_neg, p_pos]", param="use_activation")
    has_input, has_messages = "input" in body, "messages" in body
    if has_input == has_messages:
        raise RequestError("send exactly one of 'input' (text, texts or token ids) and 'messages' (a chat)",
                           param="input")
    if has_messages:
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise RequestError("'messages' must be a non-empty array of {\"role\", \"content\"}", param="messages")
        turns = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise RequestError(f"messages[{i}] must be an object with a string 'role'", param="messages")
            turns.append((m["role"].lower(), _message_text(m.get("content"), f"messages[{i}]")))
        return model, [_turns_item(turns, step_tag, 0)]
    raw = body["input"]
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(_is_id(t) for t in raw)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise RequestError("'input' must be a string, an array of strings, or token ids (an array of integers, "
                           "or an array of those)", param="input")
    _check_count(len(raw), max_traces, "inputs")
    items = []
    for i, one in enumerate(raw):
        if isinstance(one, list) and all(_is_id(t) for t in one):
            try:
                one = decode(one)
            except Exception as exc:  # noqa: BLE001 - ids outside the vocabulary and the like
                raise RequestError(f"input {i}: cannot decode these token ids with the served model's tokenizer "
                                   f"({type(exc).__name__}: {exc})", param="input") from None
        if not isinstance(one, str):
            raise RequestError(f"input {i} must be a string or an array of token ids, got {_type_name(one)}",
                               param="input")
        items.append(_text_input(one, step_tag, i))
    return model, items


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def pooling_response(model: str, data: list[list[list[float]]], prompt_tokens: int) -> dict[str, Any]:
    """vLLM's ``PoolingResponse``."""
    return {"id": f"pool-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": model,
            "data": [{"index": i, "object": "pooling", "data": d} for i, d in enumerate(data)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0,
                      "prompt_tokens_details": None}}
