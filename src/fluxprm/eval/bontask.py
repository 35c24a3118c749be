"""``fluxprm eval bon``: ``fluxprm bon``'s evaluator (:func:`fluxprm.bon.run_bon`) for each model, one table.

Each model's full Best-of-N output (metrics.json, accuracy_vs_n.png, picks) goes to ``REPORT_DIR/bon/<model>/``;
the report compares the models' accuracy of every rule at the largest N.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxprm.eval.context import TaskContext, TaskOutput
from fluxprm.eval.report import markdown_table, text_table, write_markdown
from fluxprm.eval.sources import EvalSource, model_slug
from fluxprm.outputs import resume_or_restart

if TYPE_CHECKING:
    from fluxprm.bon import BonResult

__all__ = ["run_bon_task"]


def _run_bon(ctx: TaskContext, src: EvalSource, folder: Path) -> BonResult:
    """``fluxprm bon`` for one source, continuing the scores an earlier run left in ``folder`` when they are
    this run's (same inputs, model and options) and scoring afresh when they are another's: a rerun of
    ``eval -o DIR`` on an edited pool ended in ResumeMismatch's traceback. The other tasks' score cache
    (:func:`fluxprm.eval.sources.load_scored`) decides by the same rule (:func:`resume_or_restart`)."""
    from fluxprm.bon import BonOptions, run_bon

    s = src.source
    options = BonOptions(model=s.model, scores=s.scores, score_field=s.score_field, threads=ctx.options.threads)
    said: set[str] = set()

    def once(message: str) -> None:  # a restart would repeat "scoring with M → F" after "starting afresh"
        if message not in said and ctx.on_status is not None:
            said.add(message)
            ctx.on_status(message)

    return resume_or_restart(
        folder / "scores.jsonl",
        lambda resume: run_bon(ctx.inputs, folder, options, ctx.fields, resume=resume, on_progress=ctx.on_progress,
                               on_status=once), once)


def run_bon_task(ctx: TaskContext) -> TaskOutput:
    models: dict[str, dict[str, Any]] = {}
    files = {}
    for src in ctx.sources:
        folder = ctx.out_dir / "bon" / model_slug(src.name)
        result = _run_bon(ctx, src, folder)
        ctx.rejected.extend(result.rejected)
        ctx.notes.extend(f"{src.name}: {note}" for note in result.notes)
        largest = max((r["n"] for r in result.rows), default=None)
        models[src.name] = {"problems": result.problems, "candidates": result.candidates, "n": largest,
                            "accuracy": {r["rule"]: r["accuracy"] for r in result.rows if r["n"] == largest},
                            "dir": str(folder)}
        if "plot" in result.files:
            files[f"plot {src.name}"] = result.files["plot"]
    rules = list(dict.fromkeys(rule for m in models.values() for rule in m["accuracy"]))
    header = ["model", "N"] + rules
    rows = [[n, m["n"]] + [m["accuracy"].get(r) for r in rules] for n, m in models.items()]
    first = next(iter(models))
    md = ctx.out_dir / "summary.md"
    write_markdown(md, "Best-of-N", [("Accuracy at the largest N", markdown_table(header, rows))])
    files["summary"] = md
    return TaskOutput({**models[first], "model": first, "models": models}, text_table(header, rows), files)
