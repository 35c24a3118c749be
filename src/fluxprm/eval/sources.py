"""Where an evaluation's scores come from — one :class:`EvalSource` per model compared — and the score cache.

Several models side by side is how a user chooses a PRM, so every task takes a list of sources: each
``-m MODEL`` (scored now, cached in ``REPORT_DIR/scores/``), each ``--scores`` file, or one ``--score-field``.
A model's scores are written to the report folder with a marker of what was scored, so a re-run with another
threshold (or another task on the same inputs) reads them instead of rescoring.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from fluxprm.jobs import report_resumed
from fluxprm.outputs import default_errors_path, resume_or_restart
from fluxprm.records import BadRecord, RawRecord, count_records, iter_records, json_text
from fluxprm.scored import ScoreSource, field_score_problem, scored_traces, unmatched_source_hint
from fluxprm.scores import TraceScore, join_key
from fluxprm.traces import FieldMap, Trace

# fluxprm.models.resolve.DEFAULT_MODEL, repeated: importing fluxprm.models pulls in torch, and eval on a scores
# file must start instantly.
DEFAULT_MODEL = "fluxprm-mini"

__all__ = ["EvalError", "EvalSource", "Scored", "sources_from", "load_scored", "write_errors"]


class EvalError(ValueError):
    """Input that cannot be evaluated honestly (e.g. a scores file missing traces); the message says which."""


@dataclass
class EvalSource:
    """One model in the comparison: a display ``name`` and where its scores come from."""

    name: str
    source: ScoreSource

    @property
    def scored_now(self) -> bool:
        return bool(self.source.model)


def model_slug(text: str) -> str:
    """A file or folder name for a model: ``./my-prm`` gives ``my-prm`` (not ``._my-prm``, which `ls` would hide).

    Every per-model file of a report is named by it: the score cache and ``bon/<model>/``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def recorded_model(path: str) -> str | None:
    """The model a scores file names (its first record's ``model``); None when it names none."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = json.loads(fh.readline() or "{}")
        if isinstance(first, dict) and isinstance(first.get("model"), str) and first["model"]:
            return first["model"]
    except (OSError, ValueError):
        pass
    return None


def _model_name_of(path: str) -> str:
    """A scores file's model name (its first record's ``model``), else the file's stem."""
    return recorded_model(path) or Path(path).stem


def sources_from(models: Sequence[str] | None, scores: Sequence[str] | None, score_field: str | None,
                 model_options: dict[str, Any] | None = None, score_options: Any = None) -> list[EvalSource]:
    """The sources of one run, in the order given; the default model when nothing is given.

    Names are made unique (``name``, ``name#2``) so two score files of one model stay two columns.
    """
    out: list[EvalSource] = []
    for m in models or []:
        out.append(EvalSource(m, ScoreSource(model=m, model_options=dict(model_options or {}),
                                             score_options=score_options)))
    for s in scores or []:
        out.append(EvalSource(_model_name_of(str(s)), ScoreSource(scores=[str(s)])))
    if score_field:
        out.append(EvalSource(f"field:{score_field}", ScoreSource(score_field=score_field)))
    if not out:
        out.append(EvalSource(DEFAULT_MODEL, ScoreSource(model=DEFAULT_MODEL, model_options=dict(model_options or {}),
                                                         score_options=score_options)))
    seen: dict[str, int] = {}
    for src in out:
        seen[src.name] = seen.get(src.name, 0) + 1
        if seen[src.name] > 1:
            src.name = f"{src.name}#{seen[src.name]}"
    return out


@dataclass
class Scored:
    """One source's traces with their scores; what could not be read or scored is kept, not lost."""

    name: str
    pairs: list[tuple[Trace, TraceScore]] = field(default_factory=list)
    rejected: list[BadRecord] = field(default_factory=list)
    unscored: list[Trace] = field(default_factory=list)  # while reading; load_scored moves them to rejected
    scores_file: str | None = None


def _identity(inputs: Sequence[str], src: EvalSource, fields: FieldMap | None) -> str:
    """What a cached scores file was made from: resolved inputs with size and mtime, the model and what its
    folder holds (a checkpoint retrained in place is another model), fields."""
    files = []
    for p in inputs:
        st = os.stat(p)
        files.append([str(Path(p).resolve()), st.st_size, int(st.st_mtime)])
    blob = json.dumps({"inputs": files, "model": src.source.model, "weights": _model_fingerprint(src.source.model),
                       "model_options": src.source.model_options,
                       "fields": asdict(fields) if fields else None}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _model_fingerprint(spec: str | None) -> str | None:
    """:func:`fluxprm.outputs.folder_fingerprint` of the folder ``spec`` resolves to, without loading it; None
    when it does not resolve here (scoring it then fails with the loader's own message)."""
    if not spec:
        return None
    from fluxprm.models.resolve import resolve_model
    from fluxprm.models.identity import folder_fingerprint

    try:
        folder, _ = resolve_model(spec)
    except Exception:  # noqa: BLE001 - any failure to resolve is reported by the load that follows
        return None
    return folder_fingerprint(folder)


def load_scored(inputs: Sequence[str], src: EvalSource, fields: FieldMap | None, out_dir: Path, *,
                tag: str = "", on_progress: Callable[[int], None] | None = None,
                on_status: Callable[[str], None] | None = None) -> Scored:
    """Read (or score, then read) one source's scores for ``inputs``.

    A model's scores go to ``out_dir/scores/<model><tag>.jsonl``; a ``.done`` marker beside it records what
    was scored, and a later run with the same inputs, model and fields reuses the file. A ``--scores`` file
    must cover every readable trace: otherwise :class:`EvalError` names the missing ids (an evaluation on
    the subset that happens to be scored would be a different benchmark).
    """
    status = on_status or (lambda message: None)
    source = src.source
    scores_out: Path | None = None
    ident = ""
    scoring = False
    if source.model:
        cache = out_dir / "scores"
        cache.mkdir(parents=True, exist_ok=True)
        scores_out = cache / f"{model_slug(src.name)}{tag}.jsonl"
        marker = scores_out.with_name(scores_out.name + ".done")
        ident = _identity(inputs, src, fields)
        if scores_out.exists() and marker.exists() and marker.read_text().strip() == ident:
            status(f"{src.name}: reusing cached scores {scores_out}")
            source = ScoreSource(scores=[str(scores_out)])
            if on_progress is not None:  # the progress total counts this model's records
                report_resumed(on_progress, sum(count_records(p) or 0 for p in inputs))
        else:
            marker.unlink(missing_ok=True)
            scoring = True

    def read(resume: bool) -> Scored:
        result = Scored(src.name, scores_file=str(scores_out) if scores_out else (source.scores or [None])[0])
        for trace, score in scored_traces(inputs, source, fields, scores_out=scores_out, resume=resume,
                                          on_progress=on_progress):
            if isinstance(trace, BadRecord):
                result.rejected.append(trace)
            elif score is None or score.score is None and not score.step_rewards:
                result.unscored.append(trace)
            else:
                result.pairs.append((trace, score))
        return result

    # an interrupted run's partial scores are continued; a foreign or damaged cache is scored afresh
    result = resume_or_restart(scores_out, read, on_status) if scoring and scores_out is not None else read(False)
    if source.model and scores_out is not None:
        # what was scored, as checked before scoring (the model folder's fingerprint is not taken twice)
        scores_out.with_name(scores_out.name + ".done").write_text(ident + "\n")
    given = src.source.scores  # a user's --scores file (not the cache of a model scored earlier)
    if given and result.unscored:
        ids = [t.id for t in result.unscored]
        shown = ", ".join(ids[:10]) + (f", … ({len(ids) - 10} more)" if len(ids) > 10 else "")
        hint = unmatched_source_hint(inputs, given) if not result.pairs else None
        raise EvalError(f"scores {', '.join(given)} do not match the traces: no score for {len(ids)} of "
                        f"{len(ids) + len(result.pairs)} traces (ids {shown}); "
                        + (hint or "score these inputs with `fluxprm score` or pass -m"))
    # A trace the model rejected, or whose record holds no number in --score-field, goes to the errors file
    # with its reason: an evaluation silently smaller than its input would be a different benchmark.
    if src.source.score_field:
        name = src.source.score_field
        result.rejected += [BadRecord(t.source, t.line, field_score_problem(t, name), id=t.id,
                                      hint="--score-field FIELD") for t in result.unscored]
    elif scores_out is not None:
        why = _scoring_errors(default_errors_path(scores_out))
        result.rejected += [BadRecord(t.source, t.line, why.get((join_key(t.source, t.line)[0], t.line, t.id),
                                                               f"{src.name} gave no score"), id=t.id)
                            for t in result.unscored]
    result.unscored = []
    return result


def _scoring_errors(path: Path) -> dict[tuple[str, int, str | None], str]:
    """``{(resolved source, line, id): "rejected when scoring: why"}`` from a score run's errors file."""
    out: dict[tuple[str, int, str | None], str] = {}
    for rec in iter_records([path]) if path.exists() else []:
        data = rec.data if isinstance(rec, RawRecord) else None
        if isinstance(data, dict) and isinstance(data.get("line"), int):
            key = (join_key(str(data.get("source", "")), data["line"])[0], data["line"], data.get("id"))
            out[key] = f"rejected when scoring: {data.get('error')} ({path})"
    return out


def write_errors(path: Path, rejected: Sequence[BadRecord]) -> Path | None:
    """Rejected records, one JSON line each with file and line; nothing written (and None) when there are none."""
    if not rejected:
        return None
    seen: set[tuple[str, int, str]] = set()
    with open(path, "w", encoding="utf-8") as fh:
        for bad in rejected:
            key = (bad.source, bad.line, bad.error)
            if key in seen:  # the same bad line met by each of several models
                continue
            seen.add(key)
            fh.write(json_text(bad.to_json()) + "\n")
    return path
