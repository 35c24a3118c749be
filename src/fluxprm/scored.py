"""Traces paired with their scores, wherever the scores come from — the input side of ``select`` and ``bon``.

Three sources, one stream of ``(trace, score)`` pairs in input order:

- ``scores=[S.jsonl, ...]`` — score files written earlier by ``fluxprm score`` on the same inputs, joined by
  the ``(source, line, candidate)`` key (streaming when the files hold exactly these inputs' scores in input
  order, as ``score`` writes them; a file of more inputs or another order is indexed, keeping these inputs' scores);
- ``model=NAME`` — score now: ``fluxprm score`` runs into ``scores_out`` (resumable, like any score run), then
  the pairs stream from that file;
- ``score_field=FIELD`` — a number already in each record (a pool's own reward-model score, e.g. ``pred_score``;
  for a pool record with one value per candidate, each candidate's own value).

No model is loaded unless ``model`` is given (and only then is torch imported), so selecting from a scores
file starts instantly. With a cluster (``ScoreSource.cluster``, or :func:`scoring_cluster` around the whole
command) the scoring runs on a Ray actor pool instead of in this process and writes the same bytes
(docs/DISTRIBUTED.md). Rejected input records come through as ``BadRecord``s (paired with ``None``) so the
caller can send them to its errors file: nothing is lost.
"""

from __future__ import annotations

import contextlib
import math
import os
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from fluxprm.distributed import RayOptions, ray_session  # imports neither Ray nor torch
from fluxprm.records import BadRecord
from fluxprm.scores import TraceScore, join_key, join_scores, read_scores, scores_in_order
from fluxprm.traces import FieldMap, Trace, iter_traces, record_field

__all__ = ["ScoreSource", "scored_traces", "field_score", "field_score_problem", "scoring_cluster",
           "unmatched_source_hint"]

# The cluster (and torch threads per actor) that scoring with a model uses when its ScoreSource names none: set
# for a whole command by scoring_cluster, because some commands build their ScoreSource deep inside the library
# (``bon`` from BonOptions, ``eval bon`` once per model) where no caller could pass one.
_CLUSTER: ContextVar[tuple[RayOptions, int | None] | None] = ContextVar("fluxprm_scoring_cluster", default=None)


@contextlib.contextmanager
def scoring_cluster(cluster: RayOptions | None, threads: int | None = None) -> Iterator[None]:
    """Within the block, every model scoring of :func:`scored_traces` whose source names no cluster runs on
    ``cluster`` (when ``cluster.ray``; otherwise nothing changes), ``threads`` torch threads per actor.

    The Ray session is opened here, once for the block, so a command that scores several times (``eval`` with
    several models, ``select``'s passes) joins or starts the cluster once; a cluster that cannot be reached
    fails here, before any output is written (:class:`~fluxprm.distributed.DistributedError`).
    """
    if cluster is None or not cluster.ray:
        yield
        return
    with ray_session(cluster):
        token = _CLUSTER.set((cluster, threads))
        try:
            yield
        finally:
            _CLUSTER.reset(token)


@dataclass
class ScoreSource:
    """Where the scores come from: exactly one of ``scores``, ``model`` or ``score_field``."""

    scores: list[str] | None = None
    model: str | None = None
    score_field: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)  # load_prm keyword arguments (dtype, device, ...)
    score_options: Any = None  # a fluxprm.engine.options.ScoreOptions, when scoring with ``model``
    cluster: RayOptions | None = None  # score ``model`` on this Ray cluster  [default: scoring_cluster's, else here]

    def __post_init__(self) -> None:
        given = [name for name in ("scores", "model", "score_field") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"give one source of scores, not {' and '.join(given)}")


def _field_number(trace: Trace, name: str) -> Any:
    value = record_field(trace, name)
    if isinstance(value, list) and len(value) == 1:  # Qwen2.5-Math pools store each RM score as [x]
        value = value[0]
    return value


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def field_score(trace: Trace, name: str) -> TraceScore | None:
    """A score record made from a number in the trace's record (``None`` when the field is absent or not a number;
    :func:`field_score_problem` says which)."""
    value = _field_number(trace, name)
    if not _is_number(value):
        return None
    extra = {k: trace.meta[k] for k in ("group", "candidate") if k in trace.meta}
    if trace.correct is not None:
        extra["correct"] = trace.correct
    return TraceScore(id=trace.id, score=float(value), step_rewards=[], thinking_step_rewards=[],
                      response_step_rewards=[], trajectory_reward=None, num_steps=0, truncated=False,
                      model=f"field:{name}", source=trace.source, line=trace.line, extra=extra)


def field_score_problem(trace: Trace, name: str) -> str:
    """Why ``--score-field name`` gives ``trace`` no score (when :func:`field_score` gives None): the field is
    missing or null, or what it holds instead of a finite number."""
    value = _field_number(trace, name)
    if value is None and name in trace.meta:
        return f"no score: field '{name}' is null"
    if value is None:
        return f"no score: the record has no field '{name}'"
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"no score: field '{name}' is not a finite number (it holds {shown})"


def scored_traces(inputs: Sequence[str], source: ScoreSource, fields: FieldMap | None = None, *,
                  scores_out: Path | None = None, resume: bool = False,
                  on_progress: Callable[[int], None] | None = None) -> Iterator[tuple[Trace | BadRecord,
                                                                                      TraceScore | None]]:
    """Every input trace (or ``BadRecord``) in order, with its score or ``None``.

    With ``source.model``, the model scores the inputs into ``scores_out`` first (required); ``resume``
    continues an interrupted scoring run there. ``on_progress(n)`` reports scoring progress in records.
    """
    inputs = [str(p) for p in inputs]
    if source.score_field:
        for trace in iter_traces(inputs, fields):
            yield trace, None if isinstance(trace, BadRecord) else field_score(trace, source.score_field)
        return
    if source.model:
        if scores_out is None:
            raise ValueError("scoring with a model needs a path for the scores file")
        _score_now(inputs, source, fields, scores_out, resume, on_progress)
        paths = [str(scores_out)]
    elif source.scores:
        paths = [str(p) for p in source.scores]
    else:
        raise ValueError("no scores: give a scores file, a model, or a score field")
    ordered = scores_in_order(paths, inputs)
    wanted = {join_key(path, 0)[0] for path in inputs}  # a score file may cover more files than these inputs
    scores = (s for s in read_scores(paths) if isinstance(s, TraceScore) and s.key[0] in wanted)
    yield from join_scores(scores, iter_traces(inputs, fields), ordered=ordered)


def _score_now(inputs: list[str], source: ScoreSource, fields: FieldMap | None, scores_out: Path, resume: bool,
               on_progress: Callable[[int], None] | None) -> None:
    """Run ``fluxprm score`` on the inputs into ``scores_out`` (imports torch here, or Ray with a cluster).

    On a cluster the actors load the model and score the chunks; the driver writes ``scores_out`` as it
    would alone, so the bytes, the checkpoint and ``--resume`` are the same either way.
    """
    from fluxprm.distributed import scoring_model
    from fluxprm.engine.options import ScoreOptions
    from fluxprm.score_job import run_score_job

    cluster, threads = source.cluster, None
    if cluster is None and (ambient := _CLUSTER.get()) is not None:
        cluster, threads = ambient
    options = source.score_options or ScoreOptions(on_error="skip")
    with scoring_model(source.model, source.model_options, cluster, batching=options.batching,
                       threads=threads if cluster is not None and cluster.ray else None) as prm:
        run_score_job(prm, inputs, scores_out, None, options, fields, resume, on_progress=on_progress)


def unmatched_source_hint(inputs: Sequence[str], score_paths: Sequence[str], limit: int = 1000) -> str | None:
    """Why a score file pairs with none of ``inputs`` when it names one of them from another folder, else None.

    The join key is the input's path as ``fluxprm score`` was given it, resolved from the folder the command
    runs in: ``fluxprm score pool.jsonl`` run inside ``data/`` and ``fluxprm select data/pool.jsonl`` run above
    it name two different files. Looks at the first ``limit`` distinct sources of each file.
    """
    given = {join_key(str(p), 0)[0] for p in inputs}
    for path in score_paths:
        seen: set[str] = set()
        for rec in read_scores([path]):
            if not isinstance(rec, TraceScore) or rec.source in seen:
                continue
            seen.add(rec.source)
            resolved = join_key(rec.source, 0)[0]
            if resolved not in given:
                same = next((p for p in inputs if Path(p).name == Path(rec.source).name), None)
                if same is not None and os.path.isabs(rec.source):
                    return (f"{path} scored '{rec.source}', another file than '{same}' "
                            f"({join_key(same, 0)[0]}): scores join by the scored file's path, line and candidate; "
                            f"pass '{rec.source}' as the input")
                if same is not None:
                    return (f"{path} names its input '{rec.source}', which from this folder is {resolved}, not "
                            f"'{same}': scores join by the path fluxprm score was given, resolved from the folder "
                            "it ran in; run this command from that folder (or score again from here)")
            if len(seen) >= limit:
                break
    return None
