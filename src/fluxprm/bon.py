"""``fluxprm bon``: reward-guided Best-of-N with an honest evaluator.

A pool holds N candidate responses per problem, in either layout: one record per problem with a list of
responses (Qwen2.5-Math pools; one trace per candidate, see :mod:`fluxprm.traces`), or one record per
candidate naming its problem (Sky-T1 pools: ``idx`` + ``dataset``). With ``generate`` the pool is sampled
first from a policy (:func:`fluxprm.llm.load_llm`, seeded) into ``DIR/candidates.jsonl``. Scores come from a
scores file, a model run now, or a number already in the records (:mod:`fluxprm.scored`).

Rules (one problem's choice among the candidates it is shown):

- ``argmax``: the candidate with the highest ``score``; ``min``/``last``/``mean``/``prod``: the highest
  aggregate of its step rewards (the score record's ``step_rewards``);
- ``majority``: the most frequent answer; ``weighted_vote``: the answer whose candidates' rewards sum
  highest. Answers are grouped into equivalence classes by :mod:`fluxprm.grading` (math-verify), so
  ``27`` and ``27.0`` vote together;
- references: ``pass@1`` (mean correctness: one random candidate) and ``oracle`` (pass@N: any correct).

Evaluation (:func:`evaluate`), where correctness is known: the accuracy of every rule at N = 1, 2, 4, …
and the largest pool size, each problem's N candidates sub-sampled without replacement — every subset
when there are at most ``samples`` (exact), else ``samples`` seeded random ones — with the standard
deviation of the accuracy over such draws (:func:`fluxprm.metrics.subset_accuracy`). A problem with
fewer than N candidates takes part with all it has.

Ties, always deterministic: in the accuracies a tie is credited with the mean correctness of the tied
candidates (or answers) — what random tie-breaking achieves on average, so a constant-score PRM scores
exactly pass@1. The single pick written to ``picks.jsonl`` is the earliest of the tied candidates, and
a vote's answer the earliest-seen of the tied answers (:mod:`fluxprm.metrics`).

This module imports no torch: a run on a scores file or a record field starts instantly. Torch loads only
to score with a model or to generate with a local policy.
"""

from __future__ import annotations

import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from fluxprm import metrics
from fluxprm.figures import pyplot, save_figure
from fluxprm.grading import Grader, extract_answer
from fluxprm.jobs import check_folder_outputs, check_inputs, report_folder
from fluxprm.records import BadRecord, iter_records, json_text
from fluxprm.scored import ScoreSource, scored_traces, unmatched_source_hint
from fluxprm.scores import TraceScore, aggregate, join_key, trace_key
from fluxprm.traces import (CORRECT_FIELDS, GOLD_FIELDS, ID_FIELDS, PROBLEM_FIELDS, RESPONSE_FIELDS, FieldMap,
                            Trace, iter_traces, truth_value)

__all__ = ["BonOptions", "BonResult", "BonError", "Candidate", "Problem", "RULES", "run_bon", "evaluate",
           "generate_candidates", "format_table", "plot_curves", "n_values"]

RULES = ("pass@1", "argmax", "min", "last", "mean", "prod", "majority", "weighted_vote", "oracle")
STEP_RULES = ("min", "last", "mean", "prod")
GROUP_BY = ("auto", "problem")
VOTE_WEIGHTS = ("auto", "score", "sigmoid")
QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
DEFAULT_SCORER = "fluxprm-mini"  # fluxprm.models.resolve.DEFAULT_MODEL, named here so no model code is imported


class BonError(ValueError):
    """Records were read but nothing can be reported (no candidate has a score); the message says why."""


@dataclass
class BonOptions:
    """Every option of ``fluxprm bon`` (the command line is generated from these fields; ``model`` is ``-m``)."""

    model: str | None = field(default=None, metadata={
        "help": "PRM that scores the candidates now, into DIR/scores.jsonl.  [default: fluxprm-mini when no "
                "--scores or --score-field is given]"})
    scores: list[str] | None = field(default=None, metadata={
        "help": "Score files written earlier by `fluxprm score` on these same inputs, given by the same paths "
                "(joined by source, line and candidate)."})
    score_field: str | None = field(default=None, metadata={
        "help": "Rank by a number already in each record (one per candidate in a pool record), e.g. a pool's "
                "own reward-model score `pred_score`; no model runs."})
    correct_field: str | None = field(default=None, metadata={
        "help": "Record field holding each candidate's correctness (bool or 0/1).  [default: `correct`, "
                "`is_correct`, or a pool's list of bools under `score`; else graded against the gold answer]"})
    grade: bool = field(default=False, metadata={
        "help": "Ignore the pool's correctness flags and grade every answer against the gold answer with "
                "math-verify."})
    group_by: str = field(default="auto", metadata={
        "help": "How candidates are grouped into problems. auto: a pool record's candidates; else the record's "
                "id (with its `dataset` field when it has one: Sky-T1's idx + dataset); else, or when every id "
                "is unique, the problem text (whitespace collapsed). problem: always the problem text.",
        "choices": GROUP_BY})
    vote_weight: str = field(default="auto", metadata={
        "help": "What a candidate adds to its answer in weighted_vote. score: its score (must be >= 0); "
                "sigmoid: sigmoid(score), for rewards on a logit scale; auto: score when no score is negative, "
                "else sigmoid.", "choices": VOTE_WEIGHTS})
    samples: int = field(default=1000, metadata={
        "help": "Subsets of N candidates per problem: all of them when there are at most this many (exact), "
                "else this many drawn at random (seeded).", "min": 1})
    seed: int = field(default=0, metadata={"help": "Seed of the sub-sampling and of --generate's sampling."})
    grading_timeout: float = field(default=5.0, metadata={
        "help": "Seconds math-verify gets per comparison; a timeout counts as wrong (or not equivalent) and "
                "is reported."})
    threads: int | None = field(default=None, metadata={
        "help": "CPU threads for torch when a model scores or a local policy generates (1 on a shared "
                "machine).  [default: all cores]", "min": 1})
    generate: bool = field(default=False, metadata={
        "help": "Sample the candidates first: --n responses per problem of INPUT from --policy, written to "
                "DIR/candidates.jsonl, then scored."})
    policy: str | None = field(default=None, metadata={
        "help": "Policy for --generate: http://host:port/v1#model (OpenAI-compatible server), openai:MODEL, "
                "smollm2 or a local model folder."})
    n: int = field(default=8, metadata={"help": "Candidates per problem with --generate.", "min": 1})
    max_tokens: int = field(default=1024, metadata={"help": "Tokens per generated candidate.", "min": 1})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of --generate.", "min": 0})
    system_prompt: str = field(default=QWEN_MATH_SYSTEM, metadata={
        "help": "System message of --generate's chat prompts ('' for none)."})
    cache: str | None = field(default=None, metadata={
        "help": "LLM cache file (SQLite) of --generate; a rerun is answered from it.  "
                "[default: ~/.cache/fluxprm/llm-cache.sqlite]"})

    def __post_init__(self) -> None:
        given = [flag for flag, value in (("--model", self.model), ("--scores", self.scores),
                                          ("--score-field", self.score_field)) if value]
        if len(given) > 1:
            raise ValueError(f"give one source of scores, not {' and '.join(given)}")
        if self.generate and (self.scores or self.score_field):
            raise ValueError("--generate makes new candidates: they can only be scored by a model (-m), "
                             "not by --scores or --score-field")
        if self.generate and not self.policy:
            raise ValueError("--generate needs --policy (an LLM spec, e.g. http://127.0.0.1:8000/v1#model)")
        for name, allowed in (("group_by", GROUP_BY), ("vote_weight", VOTE_WEIGHTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("samples", "n", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not self.grading_timeout > 0:
            raise ValueError(f"grading_timeout must be > 0, got {self.grading_timeout}")

    def score_source(self, model_options: dict[str, Any] | None = None) -> ScoreSource:
        """Where the scores come from; with none named, the default model scores now (loaded with
        ``model_options``: ``load_prm`` keyword arguments such as dtype and device)."""
        if self.scores:
            return ScoreSource(scores=list(self.scores))
        if self.score_field:
            return ScoreSource(score_field=self.score_field)
        return ScoreSource(model=self.model or DEFAULT_SCORER, model_options=dict(model_options or {}))

    def describe_source(self) -> str:
        if self.scores:
            return "scores " + ", ".join(self.scores)
        if self.score_field:
            return f"field {self.score_field}"
        return f"model {self.model or DEFAULT_SCORER}"


# ----------------------------------------------------------------------------------------------- candidates

@dataclass(slots=True)
class Candidate:
    """What Best-of-N needs of one candidate (its text is read again only for the picks)."""

    id: str
    source: str
    line: int
    index: int | None  # position inside a pool record (the join key's candidate)
    problem: str  # the problem text, whitespace collapsed
    pool: str | None  # the pool record's id, for candidates of a list pool
    own_id: str | None  # the record's own id (with its dataset), None when the id is the FILE:LINE fallback
    score: float | None
    step_scores: dict[str, float | None]
    answer: str | None
    gold: Any
    flag: bool | None  # the pool's own correctness flag
    graded: bool | None = None  # math-verify against the gold answer (None: no gold)
    correct: bool | None = None  # what the evaluation uses
    cls: int | None = None  # answer class inside the problem (None: no answer)
    recovered: bool = False  # rejected by the reader, kept as an unscored candidate
    unread_flag: Any = None  # a correctness field's value that is no true/false (e.g. "maybe"): said in a note

    @property
    def key(self) -> tuple[str, int, int | None]:
        return join_key(self.source, self.line, self.index)


@dataclass
class Problem:
    """One problem's candidates, in input order."""

    key: str
    candidates: list[Candidate]

    @property
    def evaluable(self) -> bool:
        return all(c.correct is not None for c in self.candidates)


def _usable(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _answer_text(value: Any) -> str | None:
    """A pool's extracted answer (``pred``) as one string: lists of one item unwrapped, several joined."""
    if isinstance(value, list):
        items = [_answer_text(v) for v in value]
        items = [v for v in items if v]
        return items[0] if len(items) == 1 else (", ".join(items) if items else None)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return value.strip() or None if isinstance(value, str) else None


def _own_id(record_id: str, source: str, line: int, dataset: Any) -> str | None:
    if record_id == f"{Path(source).name or 'record'}:{line}":
        return None  # no id in the record: the FILE:LINE fallback names no problem
    return f"{dataset}/{record_id}" if isinstance(dataset, str) and dataset else record_id


def _candidate(trace: Trace, score: TraceScore | None, options: BonOptions) -> Candidate:
    meta = trace.meta
    index = meta.get("candidate") if isinstance(meta.get("candidate"), int) else None
    pool = str(meta["group"]) if index is not None and meta.get("group") is not None else None
    answer = _answer_text(meta.get("pred"))
    if answer is None:  # no extracted answer in the pool: the response's, else (cut off) the thinking's last
        answer = extract_answer(trace.response) or (extract_answer(trace.thinking) if trace.thinking else None)
    flag = trace.correct
    if options.correct_field and options.correct_field in meta:
        flag = truth_value(meta[options.correct_field])
    elif options.correct_field and options.correct_field not in CORRECT_FIELDS + ("score",):
        flag = None  # the named field is absent: no flag (an outcome field the reader took is trace.correct)
    unread = None if flag is not None else next(
        (meta[k] for k in ((options.correct_field,) if options.correct_field else CORRECT_FIELDS)
         if meta.get(k) is not None), None)
    value = score.score if score is not None and _usable(score.score) else None
    steps = score.step_rewards if score is not None else []
    return Candidate(id=trace.id, source=trace.source, line=trace.line, index=index,
                     problem=_collapse(trace.problem), pool=pool,
                     own_id=None if pool else _own_id(trace.id, trace.source, trace.line, meta.get("dataset")),
                     score=value, step_scores={how: aggregate(steps, how) for how in STEP_RULES} if steps else {},
                     answer=answer, gold=trace.gold, flag=flag, unread_flag=unread)


def _first(data: dict, override: str | None, names: Sequence[str]) -> Any:
    if override:
        return data.get(override)
    return next((data[k] for k in names if data.get(k) is not None), None)


def _recover(bad: BadRecord, data: Any, fields: FieldMap, options: BonOptions) -> Candidate | None:
    """A candidate the reader rejected (an empty or unreadable response) rebuilt from its raw record, so that
    it still counts in its problem's pool: unscored (never picked) but in pass@1, oracle and the votes.

    Only when its problem can be named and it is one candidate (a row with a response text, or one entry of a
    pool's list of texts); a record that is wrong as a whole (a candidate list of the wrong type, a response
    that is not text) stays an error and nothing more.
    """
    if not isinstance(data, dict):
        return None
    problem = _first(data, fields.problem, PROBLEM_FIELDS)
    if not isinstance(problem, str) or not problem.strip():
        return None
    record_id = _first(data, fields.id, ID_FIELDS)
    record_id = f"{Path(bad.source).name or 'record'}:{bad.line}" if record_id is None or isinstance(
        record_id, (dict, list)) else str(record_id)
    responses = _first(data, fields.response, RESPONSE_FIELDS)
    index: int | None = None
    if isinstance(responses, list):
        match = re.fullmatch(re.escape(record_id) + r"#(\d+)", bad.id or "")
        if match is None or not all(isinstance(r, str) for r in responses):
            return None
        index = int(match.group(1))

        def pick(value: Any) -> Any:
            return value[index] if isinstance(value, list) and len(value) == len(responses) else None
    elif isinstance(responses, str):
        def pick(value: Any) -> Any:
            return value
    else:
        return None  # no response text at all: not a candidate
    if options.correct_field:
        flag = truth_value(pick(data.get(options.correct_field)))
    else:
        flag = next((f for f in (truth_value(pick(data.get(k))) for k in CORRECT_FIELDS) if f is not None), None)
        if flag is None and isinstance(pick(data.get("score")), bool):
            flag = pick(data.get("score"))
    pool = record_id if index is not None else None
    return Candidate(id=bad.id or record_id, source=bad.source, line=bad.line, index=index,
                     problem=_collapse(problem), pool=pool,
                     own_id=None if pool else _own_id(record_id, bad.source, bad.line, data.get("dataset")),
                     score=None, step_scores={}, answer=_answer_text(pick(data.get("pred"))),
                     gold=_first(data, fields.gold, GOLD_FIELDS), flag=flag, recovered=True)


def _recover_all(bad: list[BadRecord], inputs: Sequence[str], fields: FieldMap,
                 options: BonOptions) -> list[Candidate]:
    """Second pass over the raw records of the rejected ones (only when there are any)."""
    wanted: dict[tuple[str, int, None], list[BadRecord]] = {}
    for b in bad:
        wanted.setdefault(join_key(b.source, b.line), []).append(b)
    out: list[Candidate] = []
    for raw in iter_records(inputs):
        if isinstance(raw, BadRecord):
            continue
        for b in wanted.get(join_key(raw.source, raw.line), []):
            cand = _recover(b, raw.data, fields, options)
            if cand is not None:
                out.append(cand)
    return out


# ----------------------------------------------------------------------------------------------- grouping

def group_problems(candidates: Sequence[Candidate], group_by: str = "auto") -> tuple[list[Problem], str]:
    """Candidates grouped into problems (first-seen order), and the rule that was used, in words.

    ``auto``: a pool record's candidates form a problem; a row names its problem by its own id (with its
    ``dataset`` field, as Sky-T1 pools number problems per data set); a row without an id by its problem
    text. If that leaves every problem with one candidate (ids unique per row), the problem text decides.
    ``problem``: the problem text (whitespace collapsed) always.
    """
    def by_text(c: Candidate) -> str:
        return "problem:" + c.problem

    def by_id(c: Candidate) -> str:
        if c.pool is not None:
            return c.pool
        return c.own_id if c.own_id is not None else by_text(c)

    rule = "problem text"
    if group_by == "auto":
        groups = metrics.group(candidates, by_id)
        rule = "pool records, else record id (+ dataset), else problem text"
        if len(candidates) > 1 and all(len(g) == 1 for g in groups.values()):
            text_groups = metrics.group(candidates, by_text)
            if len(text_groups) < len(groups):
                groups, rule = text_groups, "problem text (every record id was unique)"
    else:
        groups = metrics.group(candidates, by_text)
    problems = []
    for key, members in groups.items():
        name = members[0].id if key.startswith("problem:") else key
        problems.append(Problem(name, members))
    return problems, rule


# ------------------------------------------------------------------------------------------------ grading

@dataclass
class GradingReport:
    """What grading found: how correctness was decided, math-verify's disagreements with the pool, timeouts."""

    from_flags: int = 0
    from_grading: int = 0
    unknown: int = 0
    graded: int = 0
    no_answer: int = 0
    comparisons: int = 0
    timeouts: int = 0
    disagreements: int = 0
    compared: int = 0  # candidates with both a flag and a grade
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def grade_problems(problems: Sequence[Problem], grader: Grader, options: BonOptions) -> GradingReport:
    """Grade every candidate with a gold answer and sort each problem's answers into equivalence classes.

    Classes: each answer joins the first earlier class whose first answer math-verify finds equivalent
    (identical strings share a class without asking). Correctness: the pool's flag, unless ``grade`` or
    there is none; then math-verify's verdict on the answer (no answer is wrong). Problems run in
    threads so every grading worker process is busy.
    """
    report = GradingReport()
    before = dict(grader.stats)
    timeout = options.grading_timeout

    def one(problem: Problem) -> None:
        texts: dict[str, int] = {}
        representatives: list[str] = []
        for c in problem.candidates:
            if c.gold is not None:
                c.graded = grader.is_equivalent(c.answer, c.gold, timeout=timeout) if c.answer else False
            if not c.answer:
                continue
            if c.answer in texts:
                c.cls = texts[c.answer]
                continue
            cls = next((k for k, rep in enumerate(representatives)
                        if grader.is_equivalent(c.answer, rep, timeout=timeout)), len(representatives))
            if cls == len(representatives):
                representatives.append(c.answer)
            texts[c.answer] = c.cls = cls

    with ThreadPoolExecutor(max_workers=max(1, grader.pool.max_workers)) as pool:
        list(pool.map(one, problems))
    for problem in problems:
        for c in problem.candidates:
            if c.graded is not None:
                report.graded += 1
                report.no_answer += not c.answer
            if c.flag is not None and c.graded is not None:
                report.compared += 1
                if c.flag != c.graded:
                    report.disagreements += 1
                    if len(report.examples) < 10:
                        report.examples.append({"id": c.id, "source": c.source, "line": c.line, "answer": c.answer,
                                                "gold": c.gold, "flag": c.flag, "math_verify": c.graded})
            c.correct = c.graded if options.grade or c.flag is None else c.flag
            if c.correct is None:
                report.unknown += 1
            elif c.flag is not None and not options.grade:
                report.from_flags += 1
            else:
                report.from_grading += 1
    report.comparisons = grader.stats["calls"] - before["calls"]
    report.timeouts = (grader.stats["timeouts"] - before["timeouts"]) + (grader.stats["killed"] - before["killed"])
    return report


# --------------------------------------------------------------------------------------------- evaluation

def n_values(largest: int) -> list[int]:
    """1, 2, 4, … below the largest pool size, then the largest pool size itself."""
    ns, n = [], 1
    while n < largest:
        ns.append(n)
        n *= 2
    return ns + [largest] if largest >= 1 else []


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def vote_weights(candidates: Iterable[Candidate], how: str) -> tuple[Callable[[Candidate], float | None], str]:
    """The weight function of ``weighted_vote`` and the rule used (``auto`` resolved by the scores' signs)."""
    scores = [c.score for c in candidates if c.score is not None]
    negative = any(s < 0 for s in scores)
    if how == "score" and negative:
        raise ValueError("--vote-weight score needs scores >= 0 (a negative weight would vote against its answer); "
                       "use --vote-weight sigmoid for rewards on a logit scale")
    if how == "sigmoid" or (how == "auto" and negative):
        return (lambda c: None if c.score is None else _sigmoid(c.score)), "sigmoid"
    return (lambda c: c.score), "score"


def available_rules(candidates: Sequence[Candidate]) -> list[str]:
    """The rules the scores allow: step-reward rules need step rewards, score rules need a score."""
    scored = any(c.score is not None for c in candidates)
    stepped = any(c.step_scores for c in candidates)
    return [r for r in RULES if (r not in STEP_RULES or stepped) and (r not in ("argmax", "weighted_vote") or scored)]


def evaluate(problems: Sequence[Problem], rules: Sequence[str], weight: Callable[[Candidate], float | None], *,
             samples: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Rows ``{"n", "rule", "accuracy", "std", "exact"}`` for every N and rule, over problems whose every
    candidate's correctness is known (see the module docstring for the method and the tie rule)."""
    groups = [p.candidates for p in problems if p.candidates and p.evaluable]
    if not groups:
        return []

    def correct(c: Candidate) -> bool:
        return bool(c.correct)

    def answer(c: Candidate) -> int | None:
        return c.cls

    def oracle(s: Sequence[Candidate]) -> float:
        return metrics.oracle_value(s, correct)

    def step_rule(how: str) -> Callable[[Sequence[Candidate]], float]:
        return lambda s: metrics.pick_value(s, lambda c: c.step_scores.get(how), correct)

    by_name: dict[str, Callable[[Sequence[Candidate]], float]] = {
        "argmax": lambda s: metrics.pick_value(s, lambda c: c.score, correct),
        **{how: step_rule(how) for how in STEP_RULES},
        "majority": lambda s: metrics.vote_value(s, answer, correct),
        "weighted_vote": lambda s: metrics.vote_value(s, answer, correct, weight),
        "oracle": oracle,
    }
    chosen = {name: by_name[name] for name in rules if name in by_name}
    # pass@1: one random candidate, i.e. any rule at N = 1 over every candidate; exact, the same at every N
    pass1 = metrics.subset_accuracy(groups, 1, {"pass@1": oracle}, samples=samples, seed=seed)["pass@1"]
    rows: list[dict[str, Any]] = []
    for n in n_values(max(len(g) for g in groups)):
        result = metrics.subset_accuracy(groups, n, chosen, samples=samples, seed=seed)
        result["pass@1"] = pass1
        for name in rules:
            r = result[name]
            rows.append({"n": n, "rule": name, "accuracy": round(r.accuracy, 6), "std": round(r.std, 6),
                         "exact": r.exact})
    return rows


def format_table(rows: Sequence[dict[str, Any]], samples: int | None = None) -> str:
    """Rules down, N across: ``accuracy ±std``; a footnote names the N whose values are sampled estimates."""
    if not rows:
        return ""
    ns = sorted({r["n"] for r in rows})
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    cell = {(r["n"], r["rule"]): r for r in rows}
    width = max(len(name) for name in rules) + 2
    lines = ["rule".ljust(width) + "".join(f"N={n}".rjust(14) for n in ns)]
    for name in rules:
        values = []
        for n in ns:
            r = cell.get((n, name))
            values.append("" if r is None else f"{r['accuracy']:.3f} ±{r['std']:.3f}")
        lines.append(name.ljust(width) + "".join(v.rjust(14) for v in values))
    sampled = [n for n in ns if not all(cell[(n, name)]["exact"] for name in rules if (n, name) in cell)]
    if sampled:
        per = f"{samples} " if samples else ""
        lines.append(f"N={', '.join(map(str, sampled))}: estimated from {per}random subsets per problem; "
                     "all other values are exact")
    return "\n".join(lines)


_STYLE = {
    "pass@1": {"color": "0.45", "linestyle": "--", "marker": ""},
    "oracle": {"color": "black", "linestyle": ":", "marker": ""},
    "majority": {"color": "tab:blue", "linewidth": 2.2, "marker": "s"},
    "weighted_vote": {"color": "tab:purple", "linewidth": 2.2, "marker": "D"},
    "argmax": {"color": "tab:red", "linewidth": 2.2, "marker": "o"},
    "min": {"color": "tab:orange", "marker": "v"},
    "last": {"color": "tab:green", "marker": "^"},
    "mean": {"color": "tab:brown", "marker": "<"},
    "prod": {"color": "tab:olive", "marker": ">"},
}


def plot_curves(rows: Sequence[dict[str, Any]], png: Path, title: str) -> None:
    """Accuracy vs N per rule (log2 axis), ±std as error bars (nudged sideways so they do not hide each other);
    the references pass@1 (dashed) and oracle (dotted) without bars."""
    plt = pyplot()
    ns = sorted({r["n"] for r in rows})
    names = list(dict.fromkeys(r["rule"] for r in rows))
    barred = [name for name in names if name not in ("pass@1", "oracle")]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name in names:
        mine = sorted((r for r in rows if r["rule"] == name), key=lambda r: r["n"])
        ys = [r["accuracy"] for r in mine]
        style = {"linewidth": 1.4, "markersize": 5, **_STYLE.get(name, {})}
        if name in barred:
            nudge = 2 ** (0.025 * (barred.index(name) - (len(barred) - 1) / 2))
            ax.errorbar([r["n"] * nudge for r in mine], ys, yerr=[r["std"] for r in mine], label=name, capsize=2.5,
                        elinewidth=0.9, **style)
        else:
            ax.plot([r["n"] for r in mine], ys, label=name, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("N (candidates per problem)")
    ax.set_ylabel("accuracy (±std over draws of N)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    save_figure(fig, png, dpi=110)


# ---------------------------------------------------------------------------------------------- generation

@dataclass
class GenerationResult:
    problems: int
    candidates: int
    policy: str
    rejected: list[BadRecord]


def _problems_to_generate(inputs: Sequence[str], fields: FieldMap) -> Iterator[tuple[str, str, Any] | BadRecord]:
    """``(id, problem, gold)`` per distinct problem text of the inputs (a pool names each problem many times)."""
    seen: set[str] = set()
    for raw in iter_records(inputs):
        if isinstance(raw, BadRecord):
            yield raw
            continue
        data = raw.data
        if not isinstance(data, dict):
            yield BadRecord(raw.source, raw.line, f"expected a JSON object, got {type(data).__name__}")
            continue
        problem = _first(data, fields.problem, PROBLEM_FIELDS)
        if not isinstance(problem, str) or not problem.strip():
            looked = fields.problem or ", ".join(PROBLEM_FIELDS)
            yield BadRecord(raw.source, raw.line, f"no problem text found (looked for {looked})",
                            hint="--problem-field FIELD")
            continue
        if _collapse(problem) in seen:
            continue
        seen.add(_collapse(problem))
        record_id = _first(data, fields.id, ID_FIELDS)
        if record_id is None or isinstance(record_id, (dict, list)):
            record_id = f"{Path(raw.source).name or 'record'}:{raw.line}"
        yield str(record_id), problem, _first(data, fields.gold, GOLD_FIELDS)


def generate_candidates(inputs: Sequence[str], out: Path, options: BonOptions, fields: FieldMap | None = None,
                        *, llm: Any = None, chunk: int = 16) -> GenerationResult:
    """Sample ``options.n`` responses per problem from ``options.policy`` into a pool file at ``out``.

    One record per problem: ``{"id", "problem", "gold", "response": [n texts], "policy", "seed",
    "temperature", "max_tokens"}`` — the list-pool layout every command reads. Sampling is seeded
    (``options.seed``; servers that ignore ``n`` get seeds seed, seed+1, …) and every call goes through the
    LLM cache, so a rerun costs nothing.
    """
    from fluxprm.llm import GenParams, load_llm

    fields = fields or FieldMap()
    if llm is None:
        if options.threads:
            _set_threads(options.threads)
        llm = load_llm(options.policy, cache=options.cache or True)
    params = GenParams(max_tokens=options.max_tokens, temperature=options.temperature, n=options.n, seed=options.seed)
    rejected: list[BadRecord] = []
    problems = candidates = 0
    pending: list[tuple[str, str, Any]] = []

    def flush(handle: Any) -> None:
        nonlocal problems, candidates
        prompts = [([{"role": "system", "content": options.system_prompt}] if options.system_prompt else [])
                   + [{"role": "user", "content": problem}] for _, problem, _ in pending]
        for (pid, problem, gold), texts in zip(pending, llm.generate(prompts, params)):
            handle.write(json_text({"id": pid, "problem": problem, "gold": gold, "response": list(texts),
                                    "policy": llm.name, "seed": options.seed, "temperature": options.temperature,
                                    "max_tokens": options.max_tokens}) + "\n")
            problems += 1
            candidates += len(texts)
        handle.flush()
        pending.clear()

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        for item in _problems_to_generate(inputs, fields):
            if isinstance(item, BadRecord):
                rejected.append(item)
                continue
            pending.append(item)
            if len(pending) >= chunk:
                flush(handle)
        if pending:
            flush(handle)
    return GenerationResult(problems, candidates, llm.name, rejected)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ the run

@dataclass
class BonResult:
    """What ``run_bon`` made: rows of metrics.json, counts, notes worth telling the user, and the files."""

    out_dir: Path
    rows: list[dict[str, Any]]
    problems: int
    candidates: int
    evaluated: int
    rejected: list[BadRecord]
    notes: list[str]
    summary: dict[str, Any]
    files: dict[str, Path]


def _picks(problems: Sequence[Problem], inputs: Sequence[str], fields: FieldMap | None,
           weight: Callable[[Candidate], float | None]) -> list[dict[str, Any]]:
    """Per problem: the argmax candidate over all its candidates (earliest of the tied), with its text, and
    the answers majority and weighted vote would give."""
    chosen: dict[tuple[str, int, int | None], Candidate] = {}
    picks: list[tuple[Problem, Candidate | None]] = []
    for p in problems:
        best = metrics.pick_best(p.candidates, lambda c: c.score)
        picks.append((p, best))
        if best is not None:
            chosen[best.key] = best
    texts: dict[tuple[str, int, int | None], Trace] = {}
    if chosen:
        for trace in iter_traces(inputs, fields):
            if not isinstance(trace, BadRecord) and trace_key(trace) in chosen:
                texts[trace_key(trace)] = trace

    def answer_of(cands: list[Candidate], cls: int | None) -> str | None:
        return next((c.answer for c in cands if c.cls == cls), None) if cls is not None else None

    out = []
    for p, best in picks:
        majority = metrics.majority_vote([c.cls for c in p.candidates])
        weighted = metrics.weighted_vote([c.cls for c in p.candidates], [weight(c) for c in p.candidates])
        trace = texts.get(best.key) if best is not None else None
        out.append({
            "problem_id": p.key, "problem": trace.problem if trace else p.candidates[0].problem,
            "candidates": len(p.candidates), "id": best.id if best else None,
            "source": best.source if best else None, "line": best.line if best else None,
            "candidate": best.index if best else None, "score": best.score if best else None,
            "answer": best.answer if best else None, "correct": best.correct if best else None,
            "gold": p.candidates[0].gold, "thinking": trace.thinking if trace else None,
            "response": trace.response if trace else None,
            "majority_answer": answer_of(p.candidates, majority),
            "weighted_vote_answer": answer_of(p.candidates, weighted),
            **({} if best else {"note": "no candidate of this problem has a score"}),
        })
    return out


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    _replace(path, lambda handle: handle.writelines(json_text(rec) + "\n" for rec in records))


def _write_json(path: Path, value: Any) -> None:
    _replace(path, lambda handle: handle.write(json_text(value, indent=1) + "\n"))


def _replace(path: Path, write: Callable[[Any], Any]) -> None:
    """Write ``path`` through ``path.tmp`` so a reader never sees half a file; a failed write leaves neither."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# what run_bon writes into its folder (besides accuracy_vs_n.png): no file it reads may be one of them
BON_FILES = ("picks.jsonl", "metrics.json", "summary.json", "errors.jsonl", "candidates.jsonl", "scores.jsonl",
             "scores.jsonl.progress.json", "accuracy_vs_n.png")


def run_bon(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, options: BonOptions | None = None,
            fields: FieldMap | None = None, *, resume: bool = False, grader: Grader | None = None,
            on_progress: Callable[[int], None] | None = None,
            on_status: Callable[[str], None] | None = None, model_options: dict[str, Any] | None = None) -> BonResult:
    """``fluxprm bon`` as a function: pick per problem, evaluate every rule where correctness is known.

    Writes into ``out_dir``: ``metrics.json`` (rows ``{"n", "rule", "accuracy", "std", "exact"}``, accuracies
    rounded to 6 decimals; empty without correctness), ``accuracy_vs_n.png``, ``picks.jsonl`` (one record per
    problem: the argmax pick with its text), ``summary.json`` (counts, grouping rule, grading report, notes),
    ``errors.jsonl`` when records were rejected, ``scores.jsonl`` when a model scored, ``candidates.jsonl``
    with ``generate``. ``resume`` continues an interrupted scoring run in ``scores.jsonl``. ``model_options`` are
    the ``load_prm`` keyword arguments (dtype, device, ...) of the model that scores, when one does.
    """
    options = options or BonOptions()
    fields = fields or FieldMap()
    status = on_status or (lambda message: None)
    paths = [str(p) for p in inputs]
    check_inputs(paths)  # before the output folder is made: a missing file or a pipe is refused, not drained
    out = Path(out_dir)
    check_folder_outputs(paths + list(options.scores or []), out, BON_FILES)
    with report_folder(out):
        return _bon_into(out, paths, options, fields, resume, grader, on_progress, status, model_options)


def _bon_into(out: Path, paths: list[str], options: BonOptions, fields: FieldMap, resume: bool, grader: Grader | None,
              on_progress: Callable[[int], None] | None, status: Callable[[str], None],
              model_options: dict[str, Any] | None) -> BonResult:
    """:func:`run_bon`'s work once its inputs are checked and its folder ``out`` exists."""
    files: dict[str, Path] = {}
    rejected: list[BadRecord] = []
    notes: list[str] = []

    if options.generate:
        status(f"generating {options.n} candidates per problem with {options.policy}")
        gen = generate_candidates(paths, out / "candidates.jsonl", options, fields)
        rejected += gen.rejected
        files["candidates"] = out / "candidates.jsonl"
        paths, fields = [str(out / "candidates.jsonl")], FieldMap()
        status(f"{gen.candidates} candidates for {gen.problems} problems → {files['candidates']}")

    source = options.score_source(model_options)
    if source.model:
        files["scores"] = out / "scores.jsonl"
        if options.threads:
            _set_threads(options.threads)
        status(f"scoring with {source.model} → {files['scores']}")
    candidates: list[Candidate] = []
    unreadable: list[BadRecord] = []
    scorers: set[str] = set()  # the models named by the score records (a scores file says who scored it)
    for trace, score in scored_traces(paths, source, fields, scores_out=files.get("scores"), resume=resume,
                                      on_progress=on_progress):
        if isinstance(trace, BadRecord):
            unreadable.append(trace)
        else:
            candidates.append(_candidate(trace, score, options))
            if score is not None and score.model:
                scorers.add(score.model)
    rejected += unreadable
    recovered = _recover_all(unreadable, paths, fields, options) if unreadable else []
    if recovered:
        one = len(recovered) == 1
        notes.append(f"{len(recovered)} rejected candidate{'' if one else 's'} (e.g. an empty response) "
                     f"{'stays' if one else 'stay'} in {'its' if one else 'their'} problem's pool unscored: never "
                     "picked, but counted in pass@1, oracle and the votes")
    if not candidates and not recovered:
        return _finish(out, files, paths, options, [], [], rejected, notes, {})
    scored = sum(c.score is not None for c in candidates)
    if not scored:
        if options.scores:
            why = (unmatched_source_hint(paths, options.scores)
                   or "the score files must come from `fluxprm score` on these inputs, given by the same paths")
        elif options.score_field:
            why = f"no record has a number in field {options.score_field!r}"
        else:
            why = "the model scored none of them (see scores.errors.jsonl)"
        raise BonError(f"no candidate has a score: {why}")
    if scored < len(candidates):
        notes.append(f"{len(candidates) - scored} of {len(candidates)} readable candidates have no score: "
                     "they are never picked")

    problems, rule = group_problems(candidates + recovered, options.group_by)
    mixed = sum(len({c.problem for c in p.candidates}) > 1 for p in problems)
    if mixed:
        notes.append(f"{mixed} problem{'s' * (mixed != 1)} group candidates with different problem texts "
                     "(check --group-by)")
    status(f"grading {len(candidates) + len(recovered)} answers with math-verify")
    own_grader = grader is None
    grader = grader or Grader()
    try:
        report = grade_problems(problems, grader, options)
    finally:
        if own_grader:
            grader.shutdown()
    weight, weight_rule = vote_weights(candidates, options.vote_weight)
    rules = available_rules(candidates)
    if not any(c.step_scores for c in candidates):
        notes.append("min, last, mean and prod need step rewards; these scores have none"
                     + (" (a record field)" if options.score_field else ""))
    rows = evaluate(problems, rules, weight, samples=options.samples, seed=options.seed)
    evaluated = sum(p.evaluable for p in problems)
    if unread := [c.unread_flag for c in candidates if c.unread_flag is not None]:
        have = "s have" if len(unread) != 1 else " has"
        notes.append(f"{len(unread)} candidate{have} a correctness field that is not true/false, 1/0 or yes/no "
                     f"(e.g. {unread[0]!r}): counted as of unknown correctness")
    if not evaluated:
        notes.append("no gold answers or correctness flags: nothing evaluated; picks only")
    elif evaluated < len(problems):
        notes.append(f"{len(problems) - evaluated} of {len(problems)} problems have a candidate of unknown "
                     "correctness (no flag, no gold answer) and are not evaluated")
    if report.timeouts:
        notes.append(f"{report.timeouts} math-verify comparison{'s' * (report.timeouts != 1)} timed out "
                     f"(> {options.grading_timeout:g} s): counted as wrong / not equivalent")
    if report.disagreements:  # full agreement is no news: summary.json's "correctness" records the check either way
        notes.append(f"math-verify and the pool's correctness flags disagree on {report.disagreements} of "
                     f"{report.compared} candidates (examples in summary.json)")
    picks = _picks(problems, paths, fields, weight)
    facts = {"scored_by": sorted(scorers), "grouping": rule, "vote_weight": weight_rule,
             "correctness": report.as_dict()}
    return _finish(out, files, paths, options, problems, rows, rejected, notes, facts, picks)


def _finish(out: Path, files: dict[str, Path], paths: Sequence[str], options: BonOptions, problems: list[Problem],
            rows: list[dict[str, Any]], rejected: list[BadRecord], notes: list[str], facts: dict[str, Any],
            picks: list[dict[str, Any]] | None = None) -> BonResult:
    """Write every output file and build the result (``facts``: the summary's scorer, grouping, vote weight and
    correctness entries)."""
    candidates = sum(len(p.candidates) for p in problems)
    evaluated = sum(p.evaluable for p in problems)
    errors = out / "errors.jsonl"
    if rejected:
        _write_jsonl(errors, (b.to_json() for b in rejected))
        files["errors"] = errors
    elif errors.exists():
        errors.unlink()  # a clean run leaves no errors file, even over an earlier run's
    files["metrics"] = out / "metrics.json"
    _write_json(files["metrics"], rows)
    files["picks"] = out / "picks.jsonl"
    _write_jsonl(files["picks"], picks or [])
    plot = out / "accuracy_vs_n.png"
    if rows:
        scorer = ", ".join(facts.get("scored_by") or []) or options.describe_source()
        plot_curves(rows, plot, f"Best-of-N · {evaluated} problems · {candidates} candidates · scores: {scorer}")
        files["plot"] = plot
    elif plot.exists():
        plot.unlink()
    sizes = sorted({len(p.candidates) for p in problems})
    summary = {
        "inputs": list(paths), "scores": options.describe_source(), "scored_by": facts.get("scored_by", []),
        "problems": len(problems), "candidates": candidates, "candidates_per_problem": sizes,
        "evaluated_problems": evaluated,
        "recovered_candidates": sum(c.recovered for p in problems for c in p.candidates),
        "rejected_records": len(rejected), "grouping": facts.get("grouping"), "vote_weight": facts.get("vote_weight"),
        "rules": list(dict.fromkeys(r["rule"] for r in rows)), "n": sorted({r["n"] for r in rows}),
        "samples": options.samples, "seed": options.seed, "correctness": facts.get("correctness", {}),
        "notes": notes,
    }
    files["summary"] = out / "summary.json"
    _write_json(files["summary"], summary)
    return BonResult(out, rows, len(problems), candidates, evaluated, rejected, notes, summary, files)
