"""The ``Trace`` record and the detection of the record shapes reasoning data comes in.

A PRM scores *traces*: a problem, an optional thinking trajectory and a final response, optionally
already cut into steps with per-step labels. Public data sets store those in a dozen shapes; this
module maps each to one :class:`Trace`, so everything downstream sees one type. Detection looks at
the keys of each record (not at the file), so mixed files work and nothing needs configuring.

Supported shapes (``Trace.format`` names, see :data:`SHAPES`; "format" there means the record shape, not the
checkpoint formats of :mod:`fluxprm.models`):

``r1``
    A response text with ``<think>…</think>`` followed by the answer. Text that starts inside the
    thought (no ``<think>``, only ``</think>``, as DeepSeek-R1 chat templates produce) and a thought
    cut off before ``</think>`` (all thinking, response ``""``) are handled too.
``sky-t1``
    ``<|begin_of_thought|>…<|end_of_thought|>`` then ``<|begin_of_solution|>…<|end_of_solution|>``
    (Sky-T1, OpenThoughts, Bespoke-Stratos). A thought without ``<|end_of_thought|>`` is cut off.
``s1k``
    ``thinking_trajectories`` (a string, or a list whose elements become ``thinking_steps`` when
    there are several) + ``attempt`` + ``question``; gold from ``solution``.
``messages``
    Chat ``messages`` (or ShareGPT ``conversations`` with ``from``/``value``): the final message
    must be the assistant's; its ``reasoning_content``/``reasoning`` is the thinking (else its
    content is split like ``r1``); the problem is the last user message before it.
``steps``
    An explicit step list: ProcessBench (``problem``, ``steps``, ``label`` = index of the first
    wrong step or -1, ``final_answer_correct``) and TRL's stepwise format (``prompt``,
    ``completions`` = steps, ``labels`` = one bool per step).
``prmbench``
    PRMBench: ``modified_process`` (steps with injected errors; ``error_steps`` are 1-based) by
    default, ``original_process`` (all steps correct) with ``FieldMap(steps="original_process")``.
``prm800k``
    Raw PRM800K (``question.problem``, ``label.steps[].completions[].rating``).
``math-shepherd``
    ``input`` with `` ки`` after every step and ``label`` = the same text with ``+``/``-``.
``math-aps``
    OmegaPRM / MATH-APS (``question``, ``reasoning_steps[]`` = ``solution_prefix`` + ``mc_value``).
``pool``
    A Best-of-N record whose response field is a list of candidate texts (Qwen2.5-Math pools).
``plain``
    ``problem``/``question``/… + ``response``/``output``/… with no thinking markers.

Outcome: ``correct``/``is_correct``/``final_answer_correct`` (bool, 0/1, true/false/yes/no) or a bool ``score`` →
``Trace.correct``. Gold: ``gold``/``gt``/``answer``/``final_answer``/``ground_truth``/
``ground_truth_answer``/``solution``, first present wins. ``answer`` is always read as the gold
(GSM8K's ``answer`` is the reference solution, never a model response).

Ids: ``id``/``idx``/``unique_id``/``uid``/``problem_id``/``question_id`` (stringified), else
``"<file name>:<line>"``. Ids are taken as given, so they need not be unique (the Sky-T1 pool uses
the problem index ``idx`` for all 15 responses to a problem).

Chat templates: raw generations are often saved with their rendered prompt, e.g. DeepSeek-R1-Distill's
``<｜begin▁of▁sentence｜><｜User｜>…<｜Assistant｜><think>\n…``. A response or problem text holding the
special tokens of a :data:`CHAT_TEMPLATES` family (DeepSeek, ChatML/Qwen, Llama 3, Gemma, Mistral) is
read as a transcript: the response is the last assistant turn, end-of-turn tokens removed; the problem
is the problem field's last user turn, or the response's when there is no problem field (a problem
field wins). ``meta["chat_template"]`` names the family, ``meta["system"]`` keeps the system prompt,
``meta["conversation"]`` any other turns. A prompt ending in ``<think>`` means the response starts
inside the thought. Text without those tokens is left byte for byte as it was.

Every key a parser does not consume goes to ``Trace.meta`` unchanged, so nothing is lost.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fluxprm.records import BadRecord, RawRecord, iter_records

__all__ = ["Trace", "TraceError", "FieldMap", "SHAPES", "CHAT_TEMPLATES", "parse_record", "iter_traces",
           "record_field", "truth_value", "split_thinking", "detect_shape"]

# Record shapes (the values of ``Trace.format``). Named "shapes" so they are not confused with the checkpoint
# formats of ``fluxprm.models.FORMATS``.
SHAPES: tuple[str, ...] = ("r1", "sky-t1", "s1k", "messages", "steps", "prmbench", "prm800k", "math-shepherd",
                           "math-aps", "pool", "plain")

ID_FIELDS = ("id", "idx", "unique_id", "uid", "problem_id", "question_id")
PROBLEM_FIELDS = ("problem", "question", "prompt", "query", "instruction", "input")
RESPONSE_FIELDS = ("response", "output", "completion", "generation", "answer_text", "code")
THINKING_FIELDS = ("thinking", "reasoning_content", "reasoning", "thinking_trajectory", "thought")
GOLD_FIELDS = ("gold", "gt", "answer", "final_answer", "ground_truth", "ground_truth_answer", "solution")
CORRECT_FIELDS = ("correct", "is_correct", "final_answer_correct")
STEP_LABEL_FIELDS = ("labels", "step_labels")
PRMBENCH_STEP_FIELDS = ("modified_process", "original_process")

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_THOUGHT_OPEN, _THOUGHT_CLOSE = "<|begin_of_thought|>", "<|end_of_thought|>"
_SOLUTION_OPEN, _SOLUTION_CLOSE = "<|begin_of_solution|>", "<|end_of_solution|>"
_SHEPHERD_TAG = "ки"
_SHEPHERD_FIRST_STEP = re.compile(r"Step 1\s*:")
_USER_ROLES = {"user", "human"}
_ASSISTANT_ROLES = {"assistant", "gpt", "model", "bot"}


# ----------------------------------------------------------------------------- public types


@dataclass(slots=True)
class Trace:
    """One reasoning trace, whatever shape its record had."""

    id: str
    problem: str
    response: str  # final response text; "" when the trace was cut off mid-thought
    thinking: str | None = None  # thinking trajectory text; None when the record has no thinking part
    steps: list[str] | None = None  # explicit response steps given by the record; None → caller splits `response`
    thinking_steps: list[str] | None = None  # explicit thinking steps; None → caller splits `thinking`
    gold: Any = None  # gold answer if the record has one (raw value: str/int/float/list)
    step_labels: list[float | None] | None = None  # aligned with `steps`: 1.0 good, 0.0 bad, None unknown
    correct: bool | None = None  # outcome correctness if the record says
    source: str = ""
    line: int = 0
    format: str = ""  # the record shape, one of SHAPES (field named `format` for compatibility)
    meta: dict[str, Any] = field(default_factory=dict)  # everything else worth keeping
    # The record's plain (string, number, bool) fields the reader took for the roles above, as they were:
    # a user naming one of them (``--group-field problem_id``, ``--score-field``) still finds it; see record_field.
    read_fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (for writing traces out, e.g. after format conversion)."""
        return {"id": self.id, "problem": self.problem, "thinking": self.thinking, "response": self.response,
                "steps": self.steps, "thinking_steps": self.thinking_steps, "gold": self.gold,
                "step_labels": self.step_labels, "correct": self.correct, "source": self.source,
                "line": self.line, "format": self.format, "meta": self.meta}


class TraceError(ValueError):
    """A record that is not a usable trace; the message says which field and what was expected."""

    def __init__(self, message: str, *, field: str | None = None, id: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.id = id
        self.hint = hint  # the command-line flag most likely to make such records readable


@dataclass(slots=True)
class FieldMap:
    """User overrides of field names (CLI ``--id-field``, ``--problem-field``, …); ``None`` = auto.

    Overrides name top-level keys and win over auto-detection; a named field that is missing is an
    error (a silent fallback would score the wrong text). ``steps`` also selects the step list of
    PRMBench records (``"original_process"`` or the default ``"modified_process"``).
    """

    id: str | None = None
    problem: str | None = None
    response: str | None = None
    thinking: str | None = None
    steps: str | None = None
    gold: str | None = None


# ----------------------------------------------------------------------------- thinking split


def split_thinking(text: str) -> tuple[str | None, str]:
    """Split a raw completion into ``(thinking, response)``; both are stripped.

    Recognises ``<think>…</think>`` (R1, QwQ, Qwen3) and ``<|begin_of_thought|>…`` /
    ``<|begin_of_solution|>…`` (Sky-T1, OpenThoughts). A thought never closed is a trace cut off
    mid-thought: everything is thinking and the response is ``""``. Text with no closing
    marker but an opening one likewise; text with only a closing marker began inside the thought
    (the chat template put the opening tag in the prompt). An empty thought (``<think>\\n</think>``,
    as Qwen3 writes with thinking disabled) gives ``None``: there is nothing to score. Text without
    markers is all response.
    """
    thinking, response, _ = _split_thinking(text)
    return thinking, response


def _split_thinking(text: str) -> tuple[str | None, str, str]:
    """``split_thinking`` plus the name of the marker style found (``r1``, ``sky-t1`` or ``plain``)."""
    if any(tag in text for tag in (_THOUGHT_OPEN, _THOUGHT_CLOSE, _SOLUTION_OPEN, _SOLUTION_CLOSE)):
        thinking, rest = _split_thought(text, _THOUGHT_OPEN, _THOUGHT_CLOSE)
        return thinking, _solution_text(rest), "sky-t1"
    if _THINK_OPEN in text or _THINK_CLOSE in text:
        thinking, rest = _split_thought(text, _THINK_OPEN, _THINK_CLOSE)
        return thinking, rest.strip(), "r1"
    return None, text.strip(), "plain"


def _split_thought(text: str, open_tag: str, close_tag: str) -> tuple[str | None, str]:
    """``(thinking, rest)`` around one thought block; text before the opening tag counts as thinking."""
    start = text.find(open_tag)
    body_start = start + len(open_tag) if start >= 0 else 0
    end = text.find(close_tag, body_start)
    if start < 0 and end < 0:
        return None, text
    preamble = text[:start].strip() if start >= 0 else ""
    if end < 0:  # cut off mid-thought
        body, rest = text[body_start:], ""
    else:
        body, rest = text[body_start:end], text[end + len(close_tag):]
    thinking = "\n\n".join(part for part in (preamble, body.strip()) if part)
    return thinking or None, rest


def _solution_text(rest: str) -> str:
    """The text inside ``<|begin_of_solution|>…<|end_of_solution|>`` (either tag may be missing)."""
    start = rest.find(_SOLUTION_OPEN)
    if start >= 0:
        rest = rest[start + len(_SOLUTION_OPEN):]
    end = rest.find(_SOLUTION_CLOSE)
    if end >= 0:
        rest = rest[:end]
    return rest.strip()


# ----------------------------------------------------------------------------- chat templates inside text fields

# Families whose chat-template markers are stripped from text fields; the values of ``Trace.meta["chat_template"]``.
CHAT_TEMPLATES: tuple[str, ...] = ("deepseek", "chatml", "llama3", "gemma", "mistral")


@dataclass(frozen=True, slots=True)
class _TemplateFamily:
    """The special-token markers of one chat-template family.

    ``pattern`` has one alternative per marker; ``kinds[i]`` says what alternative ``m{i}`` does:
    ``("open", role)`` starts a turn (``role`` ``None``: the role is spelled in the marker, group ``r{i}``),
    ``("end", None)`` closes the open turn, ``("bos", None)`` is dropped. ``detect`` are literal strings any
    one of which proves the template is there: special tokens that prose does not contain, so text
    without them is never touched. ``leading_role`` is the role of text before the first turn marker
    that is not a finished reply (DeepSeek writes the system prompt bare, right after the BOS token).
    """

    name: str
    detect: tuple[str, ...]
    pattern: re.Pattern[str]
    kinds: tuple[tuple[str, str | None], ...]
    leading_role: str = "assistant"


def _template_family(name: str, detect: tuple[str, ...], markers: tuple[tuple[str, str, str | None], ...],
                     leading_role: str = "assistant") -> _TemplateFamily:
    """Compile ``(regex, kind, role)`` markers into one pattern; ``{role}`` in a regex captures the role name."""
    parts = [f"(?P<m{i}>{regex.replace('{role}', f'(?P<r{i}>[A-Za-z_]*)')})" for i, (regex, _, _) in
             enumerate(markers)]
    return _TemplateFamily(name, detect, re.compile("|".join(parts)),
                           tuple((kind, role) for _, kind, role in markers), leading_role)


# Token strings as the families' tokenizer_config.json chat templates write them. DeepSeek's use full-width
# bars (U+FF5C) and U+2581 ("▁") for spaces; its older plain "User:"/"Assistant:" prompts are ordinary words
# and are left alone. Mistral's [INST] format is also Llama 2's; only "[/INST]" marks it, since a lone "</s>"
# could be HTML.
_TEMPLATE_FAMILIES: tuple[_TemplateFamily, ...] = (
    _template_family("deepseek", ("<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"), (
        ("<｜begin▁of▁sentence｜>", "bos", None),
        ("<｜User｜>", "open", "user"),
        ("<｜Assistant｜>", "open", "assistant"),
        ("<｜end▁of▁sentence｜>", "end", None),
    ), leading_role="system"),
    _template_family("chatml", ("<|im_start|>", "<|im_end|>"), (
        (r"<\|im_start\|>{role}[ \t]*\n?", "open", None),
        (r"<\|im_end\|>|<\|endoftext\|>", "end", None),
    )),
    _template_family("llama3", ("<|begin_of_text|>", "<|start_header_id|>", "<|eot_id|>", "<|eom_id|>",
                                "<|end_of_text|>"), (
        (r"<\|begin_of_text\|>", "bos", None),
        (r"<\|start_header_id\|>{role}<\|end_header_id\|>", "open", None),
        (r"<\|eot_id\|>|<\|eom_id\|>|<\|end_of_text\|>", "end", None),
    )),
    _template_family("gemma", ("<start_of_turn>", "<end_of_turn>"), (
        (r"<bos>", "bos", None),
        (r"<start_of_turn>{role}[ \t]*\n?", "open", None),
        (r"<end_of_turn>|<eos>", "end", None),
    )),
    _template_family("mistral", ("[/INST]",), (
        (r"<s>", "bos", None),
        (r"\[INST\]", "open", "user"),
        (r"\[/INST\]", "open", "assistant"),
        (r"\[SYSTEM_PROMPT\]", "open", "system"),
        (r"\[/SYSTEM_PROMPT\]|</s>", "end", None),
    )),
)


@dataclass(slots=True)
class _ChatText:
    """A text field read as a chat transcript.

    ``turns`` are ``(role, content)`` in order, content stripped; roles are ``system``, ``user``,
    ``assistant`` (Gemma's ``model``, ShareGPT's ``human``/``gpt`` mapped), others as written, and ``""``
    for text between turns that no marker assigns (e.g. a generation running on past its end token).
    """

    template: str
    turns: list[tuple[str, str]]

    def last(self, role: str, before: int | None = None) -> int | None:
        """Index of the last turn with ``role`` before index ``before`` (default: anywhere)."""
        stop = len(self.turns) if before is None else before
        return next((i for i in range(stop - 1, -1, -1) if self.turns[i][0] == role), None)

    def meta(self, *used: int | None) -> dict[str, Any]:
        """What a trace keeps of the transcript besides its ``used`` turns (the problem and the reply).

        ``chat_template`` (the family), ``system`` (the last system prompt) and ``conversation``: every
        other turn as ``{"role", "content"}``, only when there is one (multi-turn chats, text past the reply).
        """
        meta: dict[str, Any] = {"chat_template": self.template}
        systems = [content for role, content in self.turns if role == "system" and content]
        if systems:
            meta["system"] = systems[-1]
        others = [{"role": role, "content": content} for i, (role, content) in enumerate(self.turns)
                  if role != "system" and i not in used]
        if others:
            meta["conversation"] = others
        return meta


def read_chat_template(text: str, known: str | None = None) -> _ChatText | None:
    """The turns of a text holding a chat template's markers; ``None`` when it holds none.

    Only the first family found (in :data:`CHAT_TEMPLATES` order) is read; markers of another family
    stay in the text. ``known`` names a family already seen in the same record (the problem field's):
    then any of its markers count, even those too weak to detect it alone (Mistral's ``</s>`` ending a
    completion saved apart from its ``[INST]`` prompt). Text before the first turn marker is the
    assistant's when it ends with an end token or no turn marker follows (a bare generation saved with
    its end token), else the family's ``leading_role``.
    """
    family = next((f for f in _TEMPLATE_FAMILIES if any(tag in text for tag in f.detect)), None)
    if family is None and known is not None:
        family = next(f for f in _TEMPLATE_FAMILIES if f.name == known)
        if family.pattern.search(text) is None:
            return None
    if family is None:
        return None
    matches = list(family.pattern.finditer(text))
    kinds = [family.kinds[int(m.lastgroup[1:])] for m in matches]  # type: ignore[index]
    any_open = any(kind == "open" for kind, _ in kinds)
    turns: list[tuple[str, str]] = []
    role: str | None = None  # role of the turn being read; None outside any turn
    opened = False  # has a turn marker been seen yet

    def close(chunk: str, ended: bool) -> None:
        content = chunk.strip()
        if role is not None:
            turns.append((role, content))
        elif content:
            unassigned = "assistant" if ended or not any_open else family.leading_role
            turns.append((unassigned if not opened else "", content))

    pos = 0
    for m, (kind, fixed_role) in zip(matches, kinds, strict=True):
        close(text[pos:m.start()], ended=kind == "end")
        pos = m.end()
        role = None
        if kind == "open":
            opened = True
            role = _chat_role(fixed_role or m.group(f"r{m.lastgroup[1:]}") or "")  # type: ignore[index]
    close(text[pos:], ended=False)
    return _ChatText(family.name, turns)


def _chat_role(name: str) -> str:
    name = name.lower()
    if name in _USER_ROLES:
        return "user"
    return "assistant" if name in _ASSISTANT_ROLES else name


def _open_thought(text: str) -> str | None:
    """The thought-opening tag a text ends inside of (``<think>`` with no ``</think>`` after it), if any."""
    for open_tag, close_tag in ((_THINK_OPEN, _THINK_CLOSE), (_THOUGHT_OPEN, _THOUGHT_CLOSE)):
        start = text.rfind(open_tag)
        if start >= 0 and close_tag not in text[start:]:
            return open_tag
    return None


# ----------------------------------------------------------------------------- field access


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _keys(data: dict) -> str:
    keys = list(data)
    shown = ", ".join(repr(k) for k in keys[:20])
    return shown + (f", … ({len(keys)} keys)" if len(keys) > 20 else "")


class _Record:
    """A record plus the user's overrides; remembers the keys parsers consume so the rest become meta."""

    def __init__(self, data: dict, fields: FieldMap) -> None:
        self.data = data
        self.fields = fields
        self.used: set[str] = set()

    def get(self, role: str, candidates: Iterable[str]) -> tuple[str | None, Any]:
        """``(key, value)`` of the field playing ``role``: the override if given, else the first candidate present.

        Candidates whose value is ``null`` are skipped (``"ground_truth_answer": null`` is no gold);
        ``(None, None)`` when there is none. A named override that is missing is an error.
        """
        override = getattr(self.fields, role, None)
        if override is not None:
            if override not in self.data:
                raise TraceError(f"field '{override}' is missing (named as the {role} field; "
                                 f"record has keys: {_keys(self.data)})", field=override)
            self.used.add(override)
            return override, self.data[override]
        for key in candidates:
            if self.data.get(key) is not None:
                self.used.add(key)
                return key, self.data[key]
        return None, None

    def find(self, role: str, candidates: Iterable[str]) -> tuple[str, Any]:
        """Like :meth:`get`, but the field must exist."""
        candidates = tuple(dict.fromkeys(candidates))
        key, value = self.get(role, candidates)
        if key is None:
            if null := next((k for k in candidates if k in self.data), None):  # present, but null (a Parquet gap)
                raise TraceError(f"field '{null}' is null: the record has no {role}", field=null)
            looked = ", ".join(repr(k) for k in candidates)
            raise TraceError(f"no {role} field found (looked for {looked}; record has keys: {_keys(self.data)})",
                             field=role, hint=self.hint_for(role))
        return key, value

    def hint_for(self, role: str) -> str | None:
        """The override flag that would supply a missing field, guessed from the keys nobody consumed.

        A field holding a list of strings is most likely a step list (``--steps-field``); otherwise the
        longest unconsumed text is the likeliest response, the shortest the likeliest problem.
        """
        free = {k: v for k, v in self.data.items() if k not in self.used and isinstance(k, str)}
        if role in ("response", "steps"):
            for k, v in free.items():
                if isinstance(v, list) and len(v) > 1 and all(isinstance(x, str) for x in v):
                    return f"--steps-field {k}"
        texts = sorted((len(v), k) for k, v in free.items() if isinstance(v, str) and v.strip())
        if not texts:
            return None
        if role == "problem":
            return f"--problem-field {texts[0][1]}"
        if role == "response":
            return f"--response-field {texts[-1][1]}"
        return None

    def take(self, key: str) -> Any:
        """Consume a key known to be present."""
        self.used.add(key)
        return self.data[key]

    def meta(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k not in self.used}


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TraceError(f"field '{name}' must be a string, got {_type_name(value)}", field=name)
    return value


def _problem_text(name: str, value: Any) -> str:
    """A problem is a string, or a chat prompt (list of messages) whose last user turn is the problem."""
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        messages = _normalise_messages(name, value)
        users = [m for m in messages if m["role"] in _USER_ROLES]
        if not users:
            raise TraceError(f"field '{name}' has no user message", field=name)
        value = users[-1]["content"]
    text = _text(name, value)
    if not text.strip():
        raise TraceError(f"field '{name}' is empty", field=name)
    return text


def _str_list(name: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise TraceError(f"field '{name}' must be a list of strings, got {_type_name(value)}", field=name)
    if not value:
        raise TraceError(f"field '{name}' is an empty list", field=name)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise TraceError(f"field '{name}' must be a list of strings, got {_type_name(item)} at index {i}",
                             field=name)
    return value


def _thinking_value(name: str, value: Any) -> tuple[str | None, list[str] | None]:
    """``(thinking, thinking_steps)`` from a thinking field: a string, or a list of step strings."""
    if isinstance(value, list):
        if not value:
            return None, None
        steps = _str_list(name, value)
        if len(steps) == 1:
            return steps[0], None
        return "\n\n".join(steps), steps
    return _text(name, value), None


def _label(name: str, value: Any) -> float | None:
    """One step label as a float: bool/``+``/``-``/numbers in [0, 1]; -1 (a PRM800K "bad") → 0.0."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str) and value in ("+", "-"):
        return 1.0 if value == "+" else 0.0
    if isinstance(value, (int, float)) and (0 <= value <= 1 or value == -1):
        return max(float(value), 0.0)
    raise TraceError(f"field '{name}' has label {value!r}; expected true/false, '+'/'-', a number in [0, 1] or null",
                     field=name)


def _record_id(rec: _Record, source: str, line: int) -> str:
    """The record's own id (stringified) or ``"<file name>:<line>"``."""
    key, value = rec.get("id", ID_FIELDS)
    if key is None or value is None:
        return f"{Path(source).name or 'record'}:{line}"
    if isinstance(value, (dict, list)):
        raise TraceError(f"field '{key}' must be a string or number, got {_type_name(value)}", field=key)
    return str(value)


def _peek_id(data: Any, fields: FieldMap | None) -> str | None:
    """The record's own id for an errors record, or ``None``; never raises."""
    if not isinstance(data, dict):
        return None
    keys = (fields.id,) if fields is not None and fields.id else ID_FIELDS
    for key in keys:
        value = data.get(key)
        if value is not None and not isinstance(value, (dict, list)):
            return str(value)
    return None


def _gold(rec: _Record) -> Any:
    return rec.get("gold", GOLD_FIELDS)[1]


_TRUTH_WORDS = {"true": True, "false": False, "yes": True, "no": False}


def truth_value(value: Any) -> bool | None:
    """A correctness flag as records spell it: a bool, 0/1, or true/false/yes/no in any case (files converted
    from CSV); None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _TRUTH_WORDS.get(value.strip().lower())
    return None


def _correct(rec: _Record) -> bool | None:
    """Outcome correctness from a correctness field (:func:`truth_value`), or from ``score`` when it is a bool.
    Other values stay in meta untouched."""
    for key in CORRECT_FIELDS + ("score",):
        value = rec.data.get(key)
        flag = truth_value(value) if key != "score" or isinstance(value, bool) else None
        if flag is not None:
            rec.used.add(key)
            return flag
    return None


# ----------------------------------------------------------------------------- detection


def detect_shape(data: dict, fields: FieldMap | None = None) -> str:
    """The record shape, from its keys: one of :data:`SHAPES` except ``r1``/``sky-t1``/``pool``.

    Those three are ``plain`` records refined while parsing (by the markers in the response text,
    or a response that is a list). Overrides steer detection: a ``steps`` override selects a step
    shape, a ``response`` override rules out the step and chat shapes.
    """
    f = fields or FieldMap()
    data = {k: v for k, v in data.items() if v is not None}  # columnar files (Parquet) hold nulls for absent keys
    if isinstance(data.get("question"), dict) and isinstance(data.get("label"), dict):
        return "prm800k"
    if f.problem is None and isinstance(data.get("input"), str) and _SHEPHERD_TAG in data["input"]:
        return "math-shepherd"
    if f.steps is None and isinstance(data.get("reasoning_steps"), list):
        return "math-aps"
    if f.steps in PRMBENCH_STEP_FIELDS or (f.steps is None and any(k in data for k in PRMBENCH_STEP_FIELDS)):
        return "prmbench"
    if f.steps is not None or (f.response is None and _has_steps(data)):
        return "steps"
    if f.response is None and ("messages" in data or "conversations" in data):
        return "messages"
    if "thinking_trajectories" in data or "attempt" in data:
        return "s1k"
    return "plain"


def _has_steps(data: dict) -> bool:
    """A ``steps`` list (or TRL ``completions`` + ``labels``); a non-list ``steps`` only without a response."""
    if isinstance(data.get("completions"), list) and isinstance(data.get("labels"), list):
        return True
    if "steps" not in data:
        return False
    return isinstance(data["steps"], list) or not any(data.get(k) is not None for k in RESPONSE_FIELDS)


# ----------------------------------------------------------------------------- parsers


@dataclass(slots=True)
class _Context:
    rec: _Record
    source: str
    line: int
    id: str
    meta: dict[str, Any] = field(default_factory=dict)  # what the problem field's chat template left (all traces)
    template: str | None = None  # the chat-template family of the problem field, if it held one
    open_thought: str | None = None  # the problem field ended inside a thought: the response starts inside it


def _finish(ctx: _Context, fmt: str, *, problem: str, response: str, response_field: str,
            thinking: str | None = None, **extra: Any) -> Trace:
    """Build the trace; the one check every shape shares: something must be left to score."""
    if not response.strip() and not (thinking and thinking.strip()) and not extra.get("steps"):
        raise TraceError(f"field '{response_field}' is empty", field=response_field, id=ctx.id)
    if "gold" not in extra:
        extra["gold"] = _gold(ctx.rec)
    if "correct" not in extra:
        extra["correct"] = _correct(ctx.rec)
    meta = ctx.rec.meta()
    meta.update(ctx.meta)
    meta.update(extra.pop("meta", {}))
    trace = Trace(id=ctx.id, problem=problem, response=response, thinking=thinking, source=ctx.source,
                  line=ctx.line, format=fmt, meta=meta, **extra)
    _check_unicode(trace)
    return trace


def _check_unicode(trace: Trace) -> None:
    """Every text a trace carries must be valid Unicode: a lone surrogate (``"\\ud800"`` in JSON) cannot be
    tokenized, embedded or written, and would otherwise fail a whole batch far from its record."""
    texts = [("id", trace.id), ("problem", trace.problem), ("response", trace.response), ("thinking", trace.thinking)]
    texts += [(f"steps[{i}]", t) for i, t in enumerate(trace.steps or [])]
    texts += [(f"thinking_steps[{i}]", t) for i, t in enumerate(trace.thinking_steps or [])]
    for name, text in texts:
        if text is None:
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TraceError(f"field '{name}' is not valid Unicode text: lone surrogate {text[e.start]!r} at "
                             f"position {e.start}", field=name, id=None if name == "id" else trace.id) from None


def _find_problem(ctx: _Context, candidates: Iterable[str] = PROBLEM_FIELDS) -> str:
    key, value = ctx.rec.find("problem", candidates)
    return _problem_from_template(ctx, key, _problem_text(key, value))


def _problem_from_template(ctx: _Context, name: str, text: str) -> str:
    """A problem field holding a rendered chat prompt gives its last user turn; other text is returned as is.

    The family, system prompt and any earlier turns go to ``ctx.meta``. A prompt ending in an assistant
    turn that opened a thought (DeepSeek-R1's ``<｜Assistant｜><think>\\n``) means the response field
    starts inside that thought: ``ctx.open_thought`` tells the response split so.
    """
    chat = read_chat_template(text)
    if chat is None:
        return text
    user = chat.last("user")
    if user is None:
        raise TraceError(f"field '{name}' holds a {chat.template} chat prompt without a user turn", field=name)
    problem = chat.turns[user][1]
    if not problem:
        raise TraceError(f"field '{name}': the last user turn of its {chat.template} chat prompt is empty",
                         field=name)
    generation_prompt = len(chat.turns) - 1 if chat.turns[-1][0] == "assistant" and user < len(chat.turns) - 1 \
        else None
    if generation_prompt is not None:
        ctx.open_thought = _open_thought(chat.turns[generation_prompt][1])
    ctx.template = chat.template
    ctx.meta.update(chat.meta(user, generation_prompt))
    return problem


def _read_reply(name: str, text: str, known: str | None) -> tuple[str, dict[str, Any], str | None]:
    """``(reply, meta, user_turn)`` of a response text that may hold a rendered chat transcript.

    Text without template markers is the reply unchanged (``meta`` empty, ``user_turn`` ``None``). A
    transcript's reply is its last assistant turn, end-of-turn markers removed; ``user_turn`` is the last
    user turn before it (the problem when the record has no problem field, dropped otherwise); ``meta``
    holds the family, system prompt and other turns (see :meth:`_ChatText.meta`). ``known``: the family
    of the record's problem field, if any (see :func:`read_chat_template`).
    """
    chat = read_chat_template(text, known)
    if chat is None:
        return text, {}, None
    reply = chat.last("assistant")
    if reply is None:
        raise TraceError(f"field '{name}' holds a {chat.template} chat transcript without an assistant turn",
                         field=name)
    user = chat.last("user", before=reply)
    return chat.turns[reply][1], chat.meta(user, reply), None if user is None else chat.turns[user][1]


def _split_reply(ctx: _Context, reply: str) -> tuple[str | None, str, str]:
    """:func:`_split_thinking`, knowing whether the problem field's prompt already opened the thought."""
    if ctx.open_thought is not None and ctx.open_thought not in reply:
        reply = ctx.open_thought + reply
    return _split_thinking(reply)


def _parse_plain(ctx: _Context) -> list[Trace | TraceError]:
    """``problem`` + ``response`` text (markers split out); a list response is a Best-of-N pool.

    A response text holding a rendered chat transcript (prompt and generation saved raw) is read for
    its last assistant turn; its last user turn is the problem when the record has no problem field.
    """
    problem: str | None = None
    if ctx.rec.get("problem", PROBLEM_FIELDS)[0] is not None or not isinstance(
            ctx.rec.get("response", RESPONSE_FIELDS)[1], str):
        problem = _find_problem(ctx)  # first: a record with neither field is told its problem is missing
    key, value = ctx.rec.find("response", RESPONSE_FIELDS)
    thinking_key, thinking_value = ctx.rec.get("thinking", THINKING_FIELDS)
    if problem is not None and isinstance(value, list):  # a list response always has a problem field here
        if value and all(isinstance(m, dict) for m in value):
            return [_parse_chat_reply(ctx, problem, key, _normalise_messages(key, value))]
        return _parse_pool(ctx, problem, key, value, thinking_key, thinking_value)
    reply, chat_meta, user_turn = _read_reply(key, _text(key, value), ctx.template)
    if problem is None:
        if not user_turn:
            _find_problem(ctx)  # raises: no problem field, and no user turn in the response to take it from
        problem = user_turn
    if thinking_key is not None:
        thinking, thinking_steps = _thinking_value(thinking_key, thinking_value)
        return [_finish(ctx, "plain", problem=problem, response=reply.strip(), response_field=key,
                        thinking=thinking, thinking_steps=thinking_steps, meta=chat_meta)]
    thinking, response, fmt = _split_reply(ctx, reply)
    return [_finish(ctx, fmt, problem=problem, response=response, response_field=key, thinking=thinking,
                    meta=chat_meta)]


def _parse_pool(ctx: _Context, problem: str, key: str, value: list, thinking_key: str | None,
                thinking_value: Any) -> list[Trace | TraceError]:
    """One trace per candidate of a Best-of-N record.

    Ids are ``f"{id}#{k}"`` (k 0-based), ``meta["candidate"] = k``, ``meta["group"] = id``. Any other
    list with one entry per candidate (``pred``, ``score``, ``pred_score``, …) is split too:
    a list of bools under ``score``/``correct`` gives each candidate's ``correct``, the rest lands
    in that candidate's meta. A bad candidate becomes its own error; its siblings still score.
    Candidates holding a chat transcript are read like a plain response (the problem field wins).
    """
    candidates = _str_list(key, value)
    n = len(candidates)
    per_candidate = {k: v for k, v in ctx.rec.data.items()
                     if k not in ctx.rec.used and isinstance(v, list) and len(v) == n}
    ctx.rec.used.update(per_candidate)
    per_candidate = {k: v for k, v in per_candidate.items() if v != candidates}  # `code` duplicating `response`
    correct_list = next((per_candidate[k] for k in ("correct", "score", "is_correct")
                         if k in per_candidate and all(isinstance(x, bool) for x in per_candidate[k])), None)
    gold = _gold(ctx.rec)
    out: list[Trace | TraceError] = []
    for k, text in enumerate(candidates):
        sub = replace(ctx, id=f"{ctx.id}#{k}")
        meta: dict[str, Any] = {name: values[k] for name, values in per_candidate.items()}
        meta.update(candidate=k, group=ctx.id)
        try:
            reply, chat_meta, _ = _read_reply(f"{key}[{k}]", text, ctx.template)
            meta.update(chat_meta)
            if isinstance(thinking_value, list) and len(thinking_value) == n:
                thinking, _ = _thinking_value(f"{thinking_key}[{k}]", thinking_value[k])
                response = reply.strip()
            else:
                thinking, response, _ = _split_reply(ctx, reply)
            correct = correct_list[k] if correct_list is not None else None
            out.append(_finish(sub, "pool", problem=problem, response=response, response_field=f"{key}[{k}]",
                               thinking=thinking, gold=gold, correct=correct, meta=meta))
        except TraceError as e:
            e.id = sub.id
            out.append(e)
    return out


def _normalise_messages(name: str, value: Any) -> list[dict[str, Any]]:
    """Messages as ``{"role", "content", "reasoning"}`` dicts, from OpenAI or ShareGPT shapes."""
    if not isinstance(value, list) or not value:
        raise TraceError(f"field '{name}' must be a non-empty list of messages, got {_type_name(value)}", field=name)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise TraceError(f"field '{name}' must be a list of message objects, got {_type_name(m)} at index {i}",
                             field=name)
        role = m.get("role", m.get("from"))
        if not isinstance(role, str):
            raise TraceError(f"field '{name}' message {i} has no 'role'", field=name)
        content = _message_text(f"{name}[{i}].content", m.get("content", m.get("value")))
        reasoning = m.get("reasoning_content", m.get("reasoning", m.get("thinking")))
        if reasoning is not None:
            reasoning = _text(f"{name}[{i}].reasoning_content", reasoning)
        out.append({"role": role.lower(), "content": content, "reasoning": reasoning})
    return out


def _message_text(name: str, content: Any) -> str:
    """Message content: a string, ``null`` (an assistant cut off while thinking), or OpenAI text parts."""
    if content is None:
        return ""
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str))
    return _text(name, content)


def _parse_messages(ctx: _Context) -> list[Trace | TraceError]:
    """Chat ``messages``/``conversations``: the final assistant turn is the trace."""
    key, value = ctx.rec.find("messages", ("messages", "conversations"))
    messages = _normalise_messages(key, value)
    _check_reply_role(key, messages[-1])
    if ctx.rec.fields.problem is not None:
        problem = _find_problem(ctx)
    else:
        users = [m for m in messages[:-1] if m["role"] in _USER_ROLES]
        if not users:
            raise TraceError(f"field '{key}' has no user message before the final assistant message", field=key)
        problem = users[-1]["content"]
        if not problem.strip():
            raise TraceError(f"field '{key}': the last user message is empty", field=key)
    system = [m["content"] for m in messages if m["role"] == "system"]
    trace = _parse_chat_reply(ctx, problem, key, messages, fmt="messages")
    if system:
        trace.meta["system"] = system[-1]
    return [trace]


def _check_reply_role(key: str, message: dict[str, Any]) -> None:
    if message["role"] not in _ASSISTANT_ROLES:
        raise TraceError(f"field '{key}': the last message has role '{message['role']}', expected 'assistant'",
                         field=key)


def _parse_chat_reply(ctx: _Context, problem: str, key: str, messages: list[dict[str, Any]],
                      fmt: str | None = None) -> Trace:
    """The final assistant message: ``reasoning_content`` is the thinking, else its content is split."""
    last = messages[-1]
    _check_reply_role(key, last)
    if last["reasoning"] is not None:
        thinking, response, text_fmt = last["reasoning"].strip() or None, last["content"].strip(), "plain"
    else:
        thinking, response, text_fmt = _split_thinking(last["content"])
    return _finish(ctx, fmt or text_fmt, problem=problem, response=response, response_field=key, thinking=thinking)


def _parse_s1k(ctx: _Context) -> list[Trace | TraceError]:
    """s1K: ``thinking_trajectories`` + ``attempt``; several trajectory strings are thinking steps."""
    problem = _find_problem(ctx, ("question",) + PROBLEM_FIELDS)
    key, value = ctx.rec.find("response", ("attempt",) + RESPONSE_FIELDS)
    response = _text(key, value).strip()
    thinking_key, thinking_value = ctx.rec.get("thinking", ("thinking_trajectories",) + THINKING_FIELDS)
    thinking, thinking_steps = (None, None)
    if thinking_key is not None:
        thinking, thinking_steps = _thinking_value(thinking_key, thinking_value)
    return [_finish(ctx, "s1k", problem=problem, response=response, response_field=key, thinking=thinking,
                    thinking_steps=thinking_steps)]


def _parse_steps(ctx: _Context) -> list[Trace | TraceError]:
    """An explicit step list; labels from ProcessBench ``label`` (first error) or a per-step list."""
    problem = _find_problem(ctx)
    key, value = ctx.rec.find("steps", ("steps", "completions"))
    steps = _str_list(key, value)
    labels = _steps_labels(ctx.rec, len(steps))
    thinking_key, thinking_value = ctx.rec.get("thinking", THINKING_FIELDS)
    thinking, thinking_steps = (None, None)
    if thinking_key is not None:
        thinking, thinking_steps = _thinking_value(thinking_key, thinking_value)
    if thinking_steps is None and isinstance(ctx.rec.data.get("thinking_steps"), list):
        thinking_steps = _str_list("thinking_steps", ctx.rec.take("thinking_steps"))
        thinking = thinking or "\n\n".join(thinking_steps)
    return [_finish(ctx, "steps", problem=problem, response="\n\n".join(steps), response_field=key,
                    thinking=thinking, thinking_steps=thinking_steps, steps=steps, step_labels=labels)]


def _steps_labels(rec: _Record, n: int) -> list[float | None] | None:
    """ProcessBench ``label`` = index of the first wrong step (-1: none): 1.0 before it, 0.0 at it,
    ``None`` after it (steps after the first error are not judged). Or a list with one label per step."""
    value = rec.data.get("label")
    if isinstance(value, int) and not isinstance(value, bool):
        if not -1 <= value < n:
            raise TraceError(f"field 'label' is {value}, but there are {n} steps (expected -1 or 0..{n - 1})",
                             field="label")
        rec.used.add("label")
        if value == -1:
            return [1.0] * n
        return [1.0] * value + [0.0] + [None] * (n - value - 1)
    for key in STEP_LABEL_FIELDS + ("label",):
        if isinstance(rec.data.get(key), list):
            labels = [_label(key, v) for v in rec.take(key)]
            if len(labels) != n:
                raise TraceError(f"field '{key}' has {len(labels)} labels but there are {n} steps", field=key)
            return labels
    return None


def _parse_prmbench(ctx: _Context) -> list[Trace | TraceError]:
    """PRMBench: ``modified_process`` (labels 0.0 at the 1-based ``error_steps``) or ``original_process``.

    Some upstream rows name error steps past the end of the process (52 of 2,804 train rows); those
    indices are ignored and reported in ``meta["label_warning"]`` rather than rejecting the row.
    """
    rec = ctx.rec
    steps_key = rec.fields.steps or next(k for k in PRMBENCH_STEP_FIELDS if rec.data.get(k) is not None)
    steps = _str_list(steps_key, rec.take(steps_key) if steps_key in rec.data else None)
    questions = ("modified_question", "original_question")
    if steps_key != "modified_process":
        questions = questions[::-1]
    problem = _find_problem(ctx, (questions[0], "question", questions[1]) + PROBLEM_FIELDS)
    meta: dict[str, Any] = {}
    if steps_key == "modified_process":
        labels, warning = _error_step_labels(rec.data.get("error_steps"), len(steps))
        if warning:
            meta["label_warning"] = warning
    else:
        labels = [1.0] * len(steps)
    return [_finish(ctx, "prmbench", problem=problem, response="\n\n".join(steps), response_field=steps_key,
                    steps=steps, step_labels=labels, meta=meta)]


def _error_step_labels(error_steps: Any, n: int) -> tuple[list[float | None], str | None]:
    if error_steps is None:
        return [None] * n, None
    if not isinstance(error_steps, list) or not all(isinstance(e, int) and not isinstance(e, bool)
                                                    for e in error_steps):
        raise TraceError(f"field 'error_steps' must be a list of 1-based step numbers, got {error_steps!r:.80}",
                         field="error_steps")
    labels: list[float | None] = [1.0] * n
    outside = [e for e in error_steps if not 1 <= e <= n]
    for e in error_steps:
        if 1 <= e <= n:
            labels[e - 1] = 0.0
    warning = f"error_steps {outside} outside 1..{n}; ignored" if outside else None
    return labels, warning


def _parse_prm800k(ctx: _Context) -> list[Trace | TraceError]:
    """Raw PRM800K: the path the labeler took through ``label.steps``.

    Step text: the chosen completion, else the human-written completion, else the first completion
    (a ``found_error`` record ends on a step with no choice: its first completion is the bad one);
    a step with no text at all (the labeler gave up) ends the trace. Ratings map to labels as
    PRM800K-trained PRMs usually binarise them: 1 → 1.0, **0 (neutral) → 1.0**, -1 → 0.0, and an
    unrated step (human completions have ``rating: null``) → ``None``. The raw ratings are kept in
    ``meta["ratings"]`` for callers that treat neutral differently.
    """
    rec = ctx.rec
    question = rec.take("question")
    problem = _problem_text("question.problem", question.get("problem"))
    label = rec.take("label")
    raw_steps = label.get("steps")
    if not isinstance(raw_steps, list):
        raise TraceError(f"field 'label.steps' must be a list, got {_type_name(raw_steps)}", field="label.steps")
    steps, ratings = [], []
    for i, step in enumerate(raw_steps):
        completion = _prm800k_completion(step, i)
        if completion is None:
            break
        steps.append(_text(f"label.steps[{i}].text", completion.get("text")))
        ratings.append(completion.get("rating"))
    if not steps:
        raise TraceError("field 'label.steps' has no step with text", field="label.steps")
    labels = [None if r is None else (0.0 if r < 0 else 1.0) for r in ratings]
    meta = {k: v for k, v in label.items() if k != "steps"}
    meta.update({k: v for k, v in question.items() if k not in ("problem", "ground_truth_answer")})
    meta["ratings"] = ratings
    gold = question.get("ground_truth_answer")
    return [_finish(ctx, "prm800k", problem=problem, response="\n\n".join(steps), response_field="label.steps",
                    steps=steps, step_labels=labels, gold=gold, meta=meta)]


def _prm800k_completion(step: Any, i: int) -> dict | None:
    if not isinstance(step, dict):
        raise TraceError(f"field 'label.steps[{i}]' must be an object, got {_type_name(step)}", field="label.steps")
    completions = step.get("completions") or []
    chosen = step.get("chosen_completion")
    if isinstance(chosen, int) and 0 <= chosen < len(completions):
        return completions[chosen]
    if isinstance(step.get("human_completion"), dict):
        return step["human_completion"]
    return completions[0] if completions else None


def _parse_math_shepherd(ctx: _Context) -> list[Trace | TraceError]:
    """Math-Shepherd: steps end with `` ки``; ``label`` repeats the text with ``+``/``-`` per tag.

    The problem is the text before ``Step 1:``; each step keeps its text as written (``Step k: …``)
    minus the tag. Text after the last tag, if any, is a final step without a label.
    """
    rec = ctx.rec
    text = rec.take("input")
    first = _SHEPHERD_FIRST_STEP.search(text)
    if first is None:
        raise TraceError("field 'input' has no 'Step 1:' marker (expected Math-Shepherd text)", field="input")
    problem = _problem_text("input", text[:first.start()].strip())
    pieces = text[first.start():].split(_SHEPHERD_TAG)
    steps = [p.strip() for p in pieces[:-1]]
    tail = pieces[-1].strip()
    labels: list[float | None] | None = None
    if isinstance(rec.data.get("label"), str):
        labels = _shepherd_labels(text, rec.take("label"))
    if tail:
        steps.append(tail)
        labels = labels + [None] if labels is not None else None
    if not steps or not all(steps):
        raise TraceError("field 'input' has an empty step between 'ки' tags", field="input")
    return [_finish(ctx, "math-shepherd", problem=problem, response="\n".join(steps), response_field="input",
                    steps=steps, step_labels=labels)]


def _shepherd_labels(text: str, label: str) -> list[float | None]:
    """Read ``+``/``-`` where each tag stood (every 2-char tag became 1 char, so positions shift by one)."""
    positions = [m.start() for m in re.finditer(_SHEPHERD_TAG, text)]
    expected_len = len(text) - len(positions) * (len(_SHEPHERD_TAG) - 1)
    marks = [label[p - i * (len(_SHEPHERD_TAG) - 1)] if len(label) == expected_len else "" for i, p in
             enumerate(positions)]
    if not all(m in ("+", "-") for m in marks):
        raise TraceError("field 'label' does not match 'input' (expected the input text with each 'ки' "
                         "replaced by '+' or '-')", field="label")
    return [1.0 if m == "+" else 0.0 for m in marks]


def _parse_math_aps(ctx: _Context) -> list[Trace | TraceError]:
    """OmegaPRM / MATH-APS: ``reasoning_steps`` are nodes of a search tree, flattened.

    Each node is a ``solution_prefix`` (question + partial solution) with the Monte-Carlo estimate
    ``mc_value`` that completions from it are correct. A node's ancestors are the other prefixes it
    extends, so every leaf is one full path: one trace per leaf (id ``f"{id}#{i}"``, i = the node's
    index, ``meta["candidate"]``/``meta["group"]`` as for pools), steps = the text each node adds to
    its parent, ``step_labels`` = the nodes' ``mc_value`` (soft labels in [0, 1]).
    """
    rec = ctx.rec
    question = _problem_text(*rec.find("problem", ("question",) + PROBLEM_FIELDS))  # raw: prefixes repeat it
    nodes = rec.take("reasoning_steps")
    prefixes: list[str] = []
    values: list[float | None] = []
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise TraceError(f"field 'reasoning_steps[{i}]' must be an object, got {_type_name(node)}",
                             field="reasoning_steps")
        prefixes.append(_text(f"reasoning_steps[{i}].solution_prefix", node.get("solution_prefix")))
        values.append(_label(f"reasoning_steps[{i}].mc_value", node.get("mc_value")))
    root = question if all(p.startswith(question) for p in prefixes) else ""
    root_values = [v for p, v in zip(prefixes, values, strict=True) if p.strip() == root.strip()]
    meta = {"root_mc_value": root_values[0]} if root_values else {}
    out: list[Trace | TraceError] = []
    for i in _leaves(prefixes):
        chain = sorted((j for j in range(len(prefixes)) if prefixes[i].startswith(prefixes[j])
                        and len(prefixes[j]) > len(root.rstrip())), key=lambda j: len(prefixes[j]))
        steps: list[str] = []
        labels: list[float | None] = []
        start = len(root)
        for j in chain:
            piece = prefixes[j][start:].strip()
            start = len(prefixes[j])
            if piece:
                steps.append(piece)
                labels.append(values[j])
        if not steps:
            continue
        sub = _Context(rec, ctx.source, ctx.line, f"{ctx.id}#{i}")
        out.append(_finish(sub, "math-aps", problem=question, response=prefixes[i][len(root):].strip(),
                           response_field="reasoning_steps", steps=steps, step_labels=labels,
                           meta={**meta, "candidate": i, "group": ctx.id}))
    if not out:
        raise TraceError("field 'reasoning_steps' has no solution beyond the question", field="reasoning_steps")
    return out


def _leaves(prefixes: list[str]) -> list[int]:
    """Indices of prefixes no other prefix extends (the first of identical duplicates only)."""
    leaves = []
    for i, p in enumerate(prefixes):
        if p in prefixes[:i]:
            continue
        if not any(len(q) > len(p) and q.startswith(p) for q in prefixes):
            leaves.append(i)
    return leaves


_PARSERS = {
    "plain": _parse_plain,
    "s1k": _parse_s1k,
    "messages": _parse_messages,
    "steps": _parse_steps,
    "prmbench": _parse_prmbench,
    "prm800k": _parse_prm800k,
    "math-shepherd": _parse_math_shepherd,
    "math-aps": _parse_math_aps,
}


# ----------------------------------------------------------------------------- entry points


def _parse(data: Any, source: str, line: int, fields: FieldMap | None) -> list[Trace | TraceError]:
    if not isinstance(data, dict):
        raise TraceError(f"expected a JSON object, got {_type_name(data)}")
    rec = _Record(data, fields or FieldMap())
    ctx = _Context(rec, source, line, _record_id(rec, source, line))
    try:
        traces = _PARSERS[detect_shape(data, rec.fields)](ctx)
        read = {k: data[k] for k in rec.used if isinstance(data.get(k), (str, int, float, bool))}
        for trace in traces:
            if isinstance(trace, Trace):
                trace.read_fields = read
        return traces
    except TraceError as e:
        e.id = e.id or _peek_id(data, fields)
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, RecursionError) as e:
        # A shape no parser anticipated is a bad record like any other, never an exception out of the parser.
        raise TraceError(f"unexpected record structure ({type(e).__name__}: {e})", id=_peek_id(data, fields)) from None


_ABSENT = object()


def record_field(trace: Trace, name: str, default: Any = None) -> Any:
    """The value of the record's field ``name`` for this trace: its own field (a pool candidate's share of a
    per-candidate list), else the raw value of a field the reader took for a role (``id``, ``correct``, ``gt``,
    …), else ``default``. What a user-named field (``--score-field``, ``--group-field``) reads."""
    value = trace.meta.get(name, _ABSENT)
    if value is _ABSENT:
        value = trace.read_fields.get(name, _ABSENT)
    return default if value is _ABSENT else value


def parse_record(data: Any, *, source: str = "", line: int = 0, fields: FieldMap | None = None) -> list[Trace]:
    """Turn one decoded record into its trace(s); raises :class:`TraceError` if it is not a usable trace.

    Normally one trace. Two shapes hold several: a Best-of-N *pool* record whose response field is
    a list of strings gives one trace per candidate (id ``f"{id}#{k}"``, k 0-based,
    ``meta["candidate"] = k``, ``meta["group"] = id``, per-candidate ``correct`` from a list of bools
    in ``score``/``correct``, and ``meta["pred"]`` etc. from other per-candidate lists), and a
    MATH-APS record gives one trace per leaf of its search tree. If any candidate is unusable this
    function raises; :func:`iter_traces` instead reports that candidate alone and keeps the rest.
    """
    results = _parse(data, source, line, fields)
    for r in results:
        if isinstance(r, TraceError):
            raise r
    return results  # type: ignore[return-value]


def iter_traces(paths: Iterable[str | os.PathLike], fields: FieldMap | None = None) -> Iterator[Trace | BadRecord]:
    """Stream traces from files; every unreadable or unusable record becomes a ``BadRecord``.

    A missing file raises ``FileNotFoundError`` at the call, before anything is read.
    """
    return _iter_traces(iter_records(paths), fields)


def _iter_traces(records: Iterator[RawRecord | BadRecord], fields: FieldMap | None) -> Iterator[Trace | BadRecord]:
    for rec in records:
        if isinstance(rec, BadRecord):
            yield rec
            continue
        try:
            results = _parse(rec.data, rec.source, rec.line, fields)
        except TraceError as e:
            yield BadRecord(rec.source, rec.line, str(e), id=e.id, hint=e.hint)
            continue
        for r in results:
            yield BadRecord(rec.source, rec.line, str(r), id=r.id, hint=r.hint) if isinstance(r, TraceError) else r
