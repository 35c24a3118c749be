"""``fluxprm eval prmbench``: PRMBench's PRMScore, overall and per error class, exactly as its authors compute it.

Matched to ssmisya/PRMBench ``mr_eval/tasks/prmtest_classified/task.py`` (``load_data_function``,
``evaluate_function``, ``eval_on_hallucination_step``) with step labels from ``mr_eval/models/qwen_prm.py``
(``reward > validity_threshold``):

- samples are the ``modified_process`` of each row, deduplicated by ``(classification, idx)``;
- one all-correct sample per problem (``original_process``, ``error_steps = []``, class ``correct``) for each
  ``idx`` that has a ``redundency`` row — it is reported in ``per_class["correct"]`` only: upstream leaves the
  correct samples out of the overall counts;
- TP/FP/TN/FN are summed over all steps of all samples (correct step = positive), then ``f1`` and
  ``negative_f1`` are taken once; PRMScore = 0.5·f1 + 0.5·negative_f1.

Deviations, each deliberate: an undefined F1 is ``None`` (upstream prints -1, and mixes a -1 precision into an
F1); a row whose ``error_steps`` point past its steps is rejected to the errors file (upstream's loop silently
ignores such indices, so its gold is wrong); upstream strips "Step k:" prefixes before its models score
(``remove_step_prefix``) — fluxprm scores the steps as the record gives them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fluxprm.eval.context import (DEFAULT_THRESHOLD, TaskContext, TaskOutput, label_problem, prmbench_original_file,
                                  reject)
from fluxprm.eval.report import markdown_table, text_table, write_markdown
from fluxprm.figures import pyplot, save_figure
from fluxprm.metrics import StepCounts, prmbench_step_counts, prmscore

__all__ = ["run_prmbench", "CORRECT_CLASS"]

CORRECT_CLASS = "correct"
REDUNDANCY_CLASS = "redundency"  # upstream's spelling, as in the data


def _model_metrics(ctx: TaskContext, src: Any, threshold: float) -> dict[str, Any]:
    scored = ctx.scored(src)
    per_class: dict[str, StepCounts] = {}
    samples: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    for trace, score in scored.pairs:
        why = label_problem(trace)
        error_steps = trace.meta.get("error_steps")
        if why is None and not isinstance(error_steps, list):
            why = "not a PRMBench record: no error_steps list"
        if why is not None:
            ctx.rejected.append(reject(trace, why))
            continue
        cls = str(trace.meta.get("classification", "unclassified"))
        if (cls, trace.id) in seen:  # upstream keeps the first row of each (classification, idx)
            continue
        seen.add((cls, trace.id))
        counts = prmbench_step_counts(error_steps, score.step_rewards, threshold)
        per_class[cls] = per_class.get(cls, StepCounts()) + counts
        samples[cls] = samples.get(cls, 0) + 1
    total = StepCounts()
    for counts in per_class.values():
        total = total + counts
    n_total = sum(samples.values())

    if src.scored_now:
        path, classes = prmbench_original_file(ctx.inputs, ctx.out_dir)
        if path is not None:
            originals = ctx.scored(src, [str(path)], replace(ctx.fields, steps="original_process"), tag=".original")
            for trace, score in originals.pairs:
                if REDUNDANCY_CLASS not in classes.get(trace.id, "").split(","):
                    continue
                counts = prmbench_step_counts([], score.step_rewards, threshold)
                per_class[CORRECT_CLASS] = per_class.get(CORRECT_CLASS, StepCounts()) + counts
                samples[CORRECT_CLASS] = samples.get(CORRECT_CLASS, 0) + 1
    elif not any(n == CORRECT_CLASS for n in per_class):
        ctx.notes.append(f"{src.name}: no 'correct' class (original_process is scored only with -m)")

    overall = prmscore(total, n_total)
    return {**overall.as_dict(), "threshold": threshold,
            "per_class": {cls: prmscore(per_class[cls], samples[cls]).as_dict() for cls in sorted(per_class)}}


def run_prmbench(ctx: TaskContext) -> TaskOutput:
    threshold = DEFAULT_THRESHOLD if ctx.options.threshold is None else ctx.options.threshold
    models = {src.name: _model_metrics(ctx, src, threshold) for src in ctx.sources}
    first = next(iter(models))
    metrics = {**models[first], "model": first, "models": models}

    names = list(models)
    header = ["model", "PRMScore", "F1 correct", "F1 error", "samples"]
    rows = [[n, m["prmscore"], m["f1_correct"], m["f1_error"], m["samples"]] for n, m in models.items()]
    classes = sorted({c for m in models.values() for c in m["per_class"]})
    class_rows = [[c] + [models[n]["per_class"].get(c, {}).get("prmscore") for n in names]
                  + [models[names[0]]["per_class"].get(c, {}).get("samples")] for c in classes]
    class_header = ["class"] + [f"PRMScore {n}" for n in names] + ["samples"]
    undefined = any(v is None for row in rows + class_rows for v in row)
    why_blank = (" – is an undefined F1 (upstream's -1): no step of that kind was labelled, none was predicted, "
                 "or none was right; PRMScore needs both F1s." if undefined else "")
    table = (text_table(header, rows) + "\n\n" + text_table(class_header, class_rows)
             + f"\n(threshold {threshold}: a step is valid when its reward > threshold.{why_blank})")

    files = {}
    md = ctx.out_dir / "summary.md"
    write_markdown(md, "PRMBench", [
        ("Overall (correct samples excluded, as upstream)", markdown_table(header, rows)),
        ("PRMScore per class", markdown_table(class_header, class_rows)),
        ("Method", f"Threshold {threshold}; a step is predicted valid when its reward > threshold. "
                   "Counts summed over steps (micro), PRMScore = 0.5·F1(correct steps) + 0.5·F1(error steps), "
                   "as ssmisya/PRMBench mr_eval/tasks/prmtest_classified/task.py." + why_blank),
    ])
    files["summary"] = md
    files["plot"] = _plot(ctx, models, classes)
    return TaskOutput(metrics, table, files)


def _plot(ctx: TaskContext, models: dict[str, dict[str, Any]], classes: list[str]):
    plt = pyplot()
    labels = ["overall"] + classes
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(labels) + 2), 4.2))
    for k, (name, m) in enumerate(models.items()):
        values = [m["prmscore"]] + [m["per_class"].get(c, {}).get("prmscore") for c in classes]
        xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, [v if v is not None else 0 for v in values], width, label=name)
        for x, v in zip(xs, values):
            if v is None:  # undefined (e.g. no error step in the "correct" class): say so, not 0
                ax.text(x, 0.01, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylabel("PRMScore")
    ax.set_title(f"PRMBench PRMScore (threshold {next(iter(models.values()))['threshold']}; "
                 "dashed: 0.5, a coin flip on balanced steps)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, ctx.out_dir / "prmscore.png", dpi=110)
