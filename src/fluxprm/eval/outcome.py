"""``fluxprm eval outcome``: how well a trace's score predicts its correctness — AUROC, AUPRC, ECE, the ROC curve
and a reliability diagram. Records need a correctness flag (``correct``/``is_correct``, or a pool's list).

The ROC curve is drawn for every source: it is the picture of the AUROC in the table and means the same on any
score scale. The reliability diagram only has points for sources whose scores are probabilities (all in
[0, 1]); one whose scores are not (fluxprm-mini's lie in 0–2) is named in the diagram instead, so the picture
is never an unexplained empty frame. ``--by`` evaluates another number of each score record (``trace_number``):
fluxprm-mini's trajectory reward is a correctness probability, which the diagram can draw."""

from __future__ import annotations

from typing import Any

from fluxprm.eval.context import TaskContext, TaskOutput, by_label, reject, trace_number
from fluxprm.eval.report import markdown_table, text_table, write_markdown
from fluxprm.figures import pyplot, save_figure
from fluxprm.metrics import auprc, auroc, ece, reliability_bins, roc_points

__all__ = ["run_outcome"]


def run_outcome(ctx: TaskContext) -> TaskOutput:
    what = by_label(ctx.options.by)
    models: dict[str, dict[str, Any]] = {}
    bins_by_model: dict[str, list | None] = {}  # None: not probabilities, no diagram
    roc_by_model: dict[str, list[tuple[float, float]]] = {}
    for src in ctx.sources:
        scores: list[float] = []
        labels: list[bool] = []
        for trace, score in ctx.scored(src).pairs:
            value, why = trace_number(score, ctx.options.by)
            if trace.correct is None:
                ctx.rejected.append(reject(trace, "no correctness flag (correct / is_correct) for the outcome task"))
            elif value is None:
                ctx.rejected.append(reject(trace, why, "--by score" if ctx.options.by != "score" else None))
            else:
                scores.append(value)
                labels.append(bool(trace.correct))
        in_unit = bool(scores) and all(0.0 <= s <= 1.0 for s in scores)
        bins = reliability_bins(scores, labels, ctx.options.bins) if in_unit else []
        models[src.name] = {"auroc": auroc(scores, labels), "auprc": auprc(scores, labels),
                            "ece": ece(scores, labels, ctx.options.bins) if in_unit else None,
                            "base_rate": sum(labels) / len(labels) if labels else None,
                            "n": len(labels), "bins": [{
                                "low": b.low, "high": b.high, "count": b.count, "mean_score": b.mean_score,
                                "accuracy": b.accuracy} for b in bins]}
        bins_by_model[src.name] = bins if in_unit or not scores else None
        roc_by_model[src.name] = roc_points(scores, labels)
        if scores and not in_unit:
            ctx.notes.append(f"{src.name}: {what}s outside [0, 1]; no calibration (ECE) for a non-probability"
                             + (" (--by trajectory evaluates the trajectory reward, a probability)"
                                if ctx.options.by == "score" else ""))
    first = next(iter(models))
    metrics = {**models[first], "model": first, "models": models, "by": ctx.options.by}
    header = ["model", "AUROC", "AUPRC", "base rate", "ECE", "traces"]
    rows = [[n, m["auroc"], m["auprc"], m["base_rate"], m["ece"], m["n"]] for n, m in models.items()]
    md = ctx.out_dir / "summary.md"
    write_markdown(md, "Outcome", [(f"{what.capitalize()} vs correctness", markdown_table(header, rows)),
                                   ("Method", f"Each trace's {what} (--by {ctx.options.by}). "
                                    "AUROC (Mann–Whitney), AUPRC as average precision (sklearn's), "
                                    f"ECE over {ctx.options.bins} equal-width bins; the base rate is a random "
                                    "scorer's AUPRC.")])
    return TaskOutput(metrics, text_table(header, rows), {"summary": md, "plot": _plot(ctx, bins_by_model, what),
                                                          "roc": _roc_plot(ctx, roc_by_model, models, what)})


def _unit_square(diagonal: str) -> tuple[Any, Any]:
    """``(fig, ax)``: the [0, 1]² frame both outcome plots draw on, with its dashed diagonal labelled
    ``diagonal``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label=diagonal)
    return fig, ax


def _save(fig: Any, ax: Any, path: Any, xlabel: str, ylabel: str, title: str, legend: str):
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc=legend)
    return save_figure(fig, path, dpi=110)


def _roc_plot(ctx: TaskContext, roc_by_model: dict[str, list[tuple[float, float]]],
              models: dict[str, dict[str, Any]], what: str):
    fig, ax = _unit_square("random (AUROC 0.5)")
    for k, (name, points) in enumerate(roc_by_model.items()):
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], "-", color=f"C{k}", linewidth=1.4,
                    label=f"{name} (AUROC {models[name]['auroc']:.3f}, {models[name]['n']} traces)")
    return _save(fig, ax, ctx.out_dir / "roc.png", "false positive rate (wrong traces ranked above the cut)",
                 "true positive rate (correct traces above the cut)", f"ROC: {what} vs correctness", "lower right")


def _plot(ctx: TaskContext, bins_by_model: dict[str, list | None], what: str):
    fig, ax = _unit_square("perfectly calibrated")
    for k, (name, bins) in enumerate(bins_by_model.items()):
        used = [b for b in bins or [] if b.count]
        if used:
            ax.plot([b.mean_score for b in used], [b.accuracy for b in used], "o-", color=f"C{k}", label=name)
    if unplotted := [name for name, bins in bins_by_model.items() if bins is None]:
        hint = ";\n--by trajectory draws the trajectory reward." if what == "trace score" else "."
        ax.text(0.5, 0.5, f"Not drawn ({what}s outside [0, 1], not probabilities):\n" + "\n".join(unplotted)
                + "\nSee roc.png for their ranking" + hint, ha="center", va="center", fontsize=9, color="0.35",
                transform=ax.transAxes, bbox={"facecolor": "white", "edgecolor": "0.8", "boxstyle": "round,pad=0.5"})
    return _save(fig, ax, ctx.out_dir / "reliability.png", f"mean {what} in bin", "fraction correct in bin",
                 f"Reliability diagram: {what}", "upper left")
