"""``fluxprm eval separation``: do a PRM's scores separate traces by a group field (e.g. the source ``model``)?

Per group: the score distribution (plot), mean and count; per pair of groups: AUROC (the probability that a
trace of the first group outscores one of the second) and the overlap of their distributions — the "strong vs
weak model traces" picture a data-selection PRM must show.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

from fluxprm.eval.context import TaskContext, TaskOutput, by_label, reject, trace_number
from fluxprm.eval.report import markdown_table, text_table, write_markdown
from fluxprm.figures import pyplot, save_figure
from fluxprm.metrics import auroc
from fluxprm.traces import record_field

__all__ = ["run_separation", "overlap"]


def overlap(a: Sequence[float], b: Sequence[float], bins: int = 20) -> float | None:
    """Overlap coefficient of two score histograms on a shared range: ``Σ min(p_a, p_b)`` over ``bins`` bins
    (1 = same distribution, 0 = disjoint); None when either is empty."""
    if not a or not b:
        return None
    low, high = min(min(a), min(b)), max(max(a), max(b))
    if high == low:
        return 1.0

    def hist(xs: Sequence[float]) -> list[float]:
        counts = [0] * bins
        for x in xs:
            counts[min(int((x - low) / (high - low) * bins), bins - 1)] += 1
        return [c / len(xs) for c in counts]

    return sum(min(p, q) for p, q in zip(hist(a), hist(b)))


def run_separation(ctx: TaskContext) -> TaskOutput:
    name = ctx.options.group_field
    models: dict[str, dict[str, Any]] = {}
    groups_by_model: dict[str, dict[str, list[float]]] = {}
    for src in ctx.sources:
        groups: dict[str, list[float]] = {}
        for trace, score in ctx.scored(src).pairs:
            value = record_field(trace, name)
            number, why = trace_number(score, ctx.options.by)
            if value is None or number is None:
                ctx.rejected.append(reject(trace, f"no group field {name!r}", "--group-field FIELD") if value is None
                                    else reject(trace, why, "--by score" if ctx.options.by != "score" else None))
                continue
            groups.setdefault(str(value), []).append(number)
        pairs = []
        for g, h in itertools.combinations(sorted(groups), 2):
            scores = groups[g] + groups[h]
            labels = [True] * len(groups[g]) + [False] * len(groups[h])
            pairs.append({"a": g, "b": h, "auroc": auroc(scores, labels), "overlap": overlap(groups[g], groups[h])})
        if len(groups) == 1:
            ctx.notes.append(f"{src.name}: every scored trace has {name} {next(iter(groups))!r}: no pair of groups to "
                             f"compare (--group-field picks another field)")
        models[src.name] = {"group_field": name, "groups": {g: {"n": len(v), "mean": sum(v) / len(v)}
                                                            for g, v in sorted(groups.items())}, "pairs": pairs}
        groups_by_model[src.name] = groups
    first = next(iter(models))
    metrics = {**models[first], "model": first, "models": models, "by": ctx.options.by}
    what = by_label(ctx.options.by)
    header = ["PRM", f"{name} A", f"{name} B", "AUROC(A>B)", "overlap"]
    rows = [[m, p["a"], p["b"], p["auroc"], p["overlap"]] for m, d in models.items() for p in d["pairs"]]
    g_header = ["PRM", name, "traces", f"mean {what}"]
    g_rows = [[m, g, v["n"], v["mean"]] for m, d in models.items() for g, v in d["groups"].items()]
    md = ctx.out_dir / "summary.md"
    write_markdown(md, f"Separation by {name}", [("Groups", markdown_table(g_header, g_rows)),
                                                 ("Pairs", markdown_table(header, rows))])
    table = text_table(g_header, g_rows) + "\n\n" + text_table(header, rows)
    return TaskOutput(metrics, table, {"summary": md, "plot": _plot(ctx, groups_by_model)})


def _plot(ctx: TaskContext, groups_by_model: dict[str, dict[str, list[float]]]):
    plt = pyplot()
    n = len(groups_by_model)
    fig, axes = plt.subplots(1, n, figsize=(max(6.0, 5.0 * n), 4.2), squeeze=False)
    for ax, (model, groups) in zip(axes[0], groups_by_model.items()):
        names = sorted(groups, key=lambda g: sum(groups[g]) / len(groups[g]))  # highest mean on top
        if names:
            ax.boxplot([groups[g] for g in names], orientation="horizontal", showfliers=False)
            for k, g in enumerate(names, start=1):
                ys = [k + ((i * 0.618) % 1 - 0.5) * 0.35 for i in range(len(groups[g]))]
                ax.scatter(groups[g], ys, s=6, alpha=0.35)
            ax.set_yticks(range(1, len(names) + 1))
            ax.set_yticklabels([f"{g} (n={len(groups[g])})" for g in names], fontsize=8)
        ax.set_xlabel(by_label(ctx.options.by))
        ax.set_title(model, fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"{by_label(ctx.options.by).capitalize()}s by {ctx.options.group_field}", fontsize=10)
    return save_figure(fig, ctx.out_dir / "separation.png", dpi=110)
