"""``fluxprm eval processbench``: ProcessBench's first-error F1, as QwenLM/ProcessBench computes it.

A sample's label is the index of its earliest wrong step (-1: none); the prediction is the first step whose
reward is below the threshold (:func:`fluxprm.metrics.first_error_index`); ``acc_error`` and ``acc_correct``
are the exact-match rates on erroneous and on correct samples and F1 is their harmonic mean
(:func:`fluxprm.metrics.first_error_f1`, matched to ``code/run_eval_prm_trl.py``).

Inputs: ProcessBench records (``steps``, ``label``) or any record with step labels; PRMBench rows convert by
their earliest ``error_steps`` entry, and with ``-m`` each problem's ``original_process`` joins as a correct
sample (label -1) — without it a PRMBench file has almost no correct samples and F1 means little.
The threshold, per model: ``--calibrate FILE`` picks the one maximising F1 on another labelled file
(:func:`fluxprm.metrics.best_threshold`, an exact search) and applies it unchanged here; else ``--threshold``;
else the one a fluxprm checkpoint records (``error_threshold``: chosen by whoever trained it on rows its heads
never fitted, as fluxprm-mini's out-of-fold one); else 0.5. A PRM's reward scale is its own, so one fixed
threshold for every model would compare their scales as much as their error finding.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from fluxprm.eval.context import (DEFAULT_THRESHOLD, TaskContext, TaskOutput, label_problem, prmbench_original_file,
                                  reject, sample_file)
from fluxprm.eval.report import markdown_table, text_table, write_markdown
from fluxprm.figures import pyplot, save_figure
from fluxprm.eval.sources import EvalError, EvalSource, recorded_model
from fluxprm.metrics import best_threshold, first_error_of_labels, threshold_f1
from fluxprm.models.fluxprm_config import recorded_error_threshold
from fluxprm.models.registry import lookup
from fluxprm.outputs import completed_run_meta
from fluxprm.traces import Trace

__all__ = ["run_processbench", "first_error_label", "samples_for"]


def first_error_label(trace: Trace) -> int | None:
    """The index of the first step labelled bad (0.0), -1 when every step is labelled good; None if unknown."""
    return first_error_of_labels(trace.step_labels)


def samples_for(ctx: TaskContext, src: EvalSource, inputs: Sequence[str], tag: str,
                record_errors: bool = True) -> tuple[list[list[float]], list[int]]:
    """``(step rewards, first-error label)`` per usable sample of ``inputs`` (plus PRMBench originals with -m)."""
    rewards: list[list[float]] = []
    labels: list[int] = []
    scored = ctx.scored(src, inputs, tag=tag)
    for trace, score in scored.pairs:
        why = label_problem(trace)
        label = first_error_label(trace) if why is None else None
        if why is None and label is None:
            why = "no step labels to place a first error (ProcessBench 'label', PRMBench 'error_steps', or per-step labels)"
        if why is not None:
            if record_errors:
                ctx.rejected.append(reject(trace, why))
            continue
        rewards.append(list(score.step_rewards))
        labels.append(label)
    if src.scored_now:
        path, _ = prmbench_original_file(inputs, ctx.out_dir if tag == "" else ctx.out_dir / "calibration")
        if path is not None:
            originals = ctx.scored(src, [str(path)], replace(ctx.fields, steps="original_process"),
                                   tag=tag + ".original")
            for _, score in originals.pairs:
                rewards.append(list(score.step_rewards))
                labels.append(-1)
    return rewards, labels


def _recorded_threshold(src: EvalSource) -> float | None:
    """The first-error threshold the source's model records: the model scored now (``-m``), a registry model a
    scores file names (``fluxprm-mini``), or the one ``fluxprm score`` noted in the scores file's checkpoint
    (``F.progress.json``, trusted only while ``F`` is the bytes it describes). A score record's model name alone
    is only a folder's name, which may not be the folder here, so nothing is read for it."""
    if src.scored_now:
        return recorded_error_threshold(src.source.model)
    if src.source.scores:
        named = {recorded_model(path) for path in src.source.scores}
        if len(named) == 1 and (name := named.pop()) and lookup(name) is not None:
            return recorded_error_threshold(name)
        noted = {(completed_run_meta(Path(path)) or {}).get("error_threshold") for path in src.source.scores}
        if len(noted) == 1 and isinstance(value := noted.pop(), (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def run_processbench(ctx: TaskContext) -> TaskOutput:
    opts = ctx.options
    calibration = None
    if opts.calibrate:
        (ctx.out_dir / "calibration").mkdir(parents=True, exist_ok=True)
        calibration = sample_file(opts.calibrate, opts.calibrate_limit, opts.seed, ctx.out_dir / "calibration")
    models: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[list[list[float]], list[int]]] = {}
    for src in ctx.sources:
        threshold, chosen_by = opts.threshold, "--threshold"
        calibrated: dict[str, Any] | None = None
        if calibration is not None:
            cal_rewards, cal_labels = samples_for(ctx, src, [calibration], ".calibrate", record_errors=False)
            n_error, n_correct = sum(label >= 0 for label in cal_labels), cal_labels.count(-1)
            if not n_error or not n_correct:
                raise EvalError(f"--calibrate {opts.calibrate}: {n_error} erroneous and {n_correct} correct samples "
                                f"for {src.name}; a threshold needs both (PRMBench rows bring their original "
                                "processes as the correct samples only when scored now, with -m)")
            threshold = best_threshold(cal_rewards, cal_labels)
            fit = threshold_f1(cal_rewards, cal_labels, threshold)
            calibrated = {"file": opts.calibrate, "samples": len(cal_labels), "f1": fit.f1,
                          "limit": opts.calibrate_limit, "seed": opts.seed if opts.calibrate_limit else None}
            chosen_by = "--calibrate"
        rewards, labels = samples_for(ctx, src, ctx.inputs, "")
        if threshold is None:  # read after scoring: the model has resolved by now
            recorded = _recorded_threshold(src)
            threshold, chosen_by = (DEFAULT_THRESHOLD, "default") if recorded is None else (recorded, "checkpoint")
            if recorded is None and src.source.scores:
                ctx.notes.append(f"{src.name}: threshold {DEFAULT_THRESHOLD} (default): a scores file names its model "
                                 "but not where it is, and no checkpoint of `fluxprm score` beside it (F.progress.json "
                                 "for F unchanged) notes a threshold; give --threshold (or score with -m to use the "
                                 "threshold a fluxprm checkpoint records)")
        result = threshold_f1(rewards, labels, threshold)
        models[src.name] = {"f1": result.f1, "acc_error": result.acc_erroneous, "acc_correct": result.acc_correct,
                            "threshold": threshold, "threshold_from": chosen_by, "n_error": result.n_erroneous,
                            "n_correct": result.n_correct, "calibrated_on": calibrated}
        curves[src.name] = (rewards, labels)
        if result.f1 is None:
            ctx.notes.append(f"{src.name}: F1 undefined — the inputs need both erroneous and correct samples "
                             f"({result.n_erroneous} erroneous, {result.n_correct} correct)")
    first = next(iter(models))
    metrics = {**models[first], "model": first, "models": models}

    header = ["model", "F1", "acc error", "acc correct", "threshold", "from", "erroneous", "correct"]
    rows = [[n, m["f1"], m["acc_error"], m["acc_correct"], m["threshold"], m["threshold_from"], m["n_error"],
             m["n_correct"]] for n, m in models.items()]
    if opts.calibrate:
        how = f"threshold calibrated per model on {opts.calibrate}"
        if calibration != opts.calibrate:
            how += f" (seeded sample of {opts.calibrate_limit}, seed {opts.seed})"
        elif opts.calibrate_limit:  # sample_file keeps a file no longer than the limit whole
            how += f" (all of it: it has no more than --calibrate-limit {opts.calibrate_limit} records)"
    elif opts.threshold is not None:
        how = f"threshold {opts.threshold}"
    else:
        how = ("threshold per model: the one its checkpoint records, chosen on its own training data, "
               f"else {DEFAULT_THRESHOLD}")
    table = text_table(header, rows) + f"\n({how}; first error = first step with reward < threshold)"
    md = ctx.out_dir / "summary.md"
    write_markdown(md, "ProcessBench", [("First-error identification", markdown_table(header, rows)),
                                        ("Method", how + ". Accuracies are exact-match rates on erroneous and on "
                                         "correct samples; F1 is their harmonic mean (QwenLM/ProcessBench).")])
    return TaskOutput(metrics, table, {"summary": md, "plot": _plot(ctx, models, curves)})


def _plot(ctx: TaskContext, models: dict[str, dict[str, Any]], curves: dict[str, tuple[list, list]]):
    """F1 (solid), acc error (dashed), acc correct (dotted) against the threshold; the chosen threshold marked."""
    plt = pyplot()
    grid = [k / 100 for k in range(101)]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for k, (name, (rewards, labels)) in enumerate(curves.items()):
        color = f"C{k}"
        results = [threshold_f1(rewards, labels, t) for t in grid]
        ax.plot(grid, [r.f1 or 0 for r in results], color=color, label=f"{name} F1")
        ax.plot(grid, [r.acc_erroneous or 0 for r in results], color=color, linestyle="--", linewidth=0.9,
                label=f"{name} acc error")
        ax.plot(grid, [r.acc_correct or 0 for r in results], color=color, linestyle=":", linewidth=0.9,
                label=f"{name} acc correct")
        chosen = models[name]
        ax.axvline(chosen["threshold"], color=color, linewidth=0.6, alpha=0.6)
        if chosen["f1"] is not None:
            ax.plot([chosen["threshold"]], [chosen["f1"]], "o", color=color)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.04)  # a curve at 0 or 1 stays visible
    ax.set_xlabel("threshold (first step with reward < threshold = predicted first error)")
    ax.set_ylabel("ProcessBench metric")
    ax.set_title("ProcessBench F1 vs threshold (dot: the threshold used)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, ctx.out_dir / "f1_vs_threshold.png", dpi=110)
