"""``fluxprm eval bon``: ``fluxprm bon``'s evaluator (:func:`fluxprm.bon.run_bon`) for each model, one table.

Each model's full Best-of-N output (metrics.json, accuracy_vs_n.png, picks) goes to ``REPORT_DIR/bon/<model>/``;
the report compares the models' accuracy of every rule at the largest N.
"""

from __future__ import annotations

import re
from typing import Any

from fluxprm.eval.context import TaskContext, TaskOutput
from fluxprm.eval.report import markdown_table, text_table, write_markdown

__all__ = ["run_bon_task"]


def run_bon_task(ctx: TaskContext) -> TaskOutput:
    from fluxprm.bon import BonOptions, run_bon

    models: dict[str, dict[str, Any]] = {}
    files = {}
    for src in ctx.sources:
        s = src.source
        options = BonOptions(model=s.model, scores=s.scores, score_field=s.score_field, threads=ctx.options.threads)
        folder = ctx.out_dir / "bon" / (re.sub(r"[^A-Za-z0-9._-]+", "_", src.name) or "model")
        result = run_bon(ctx.inputs, folder, options, ctx.fields, resume=(folder / "scores.jsonl").exists(),
                         on_progress=ctx.on_progress, on_status=ctx.on_status)
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
