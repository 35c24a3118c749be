"""The loss curve of a training run (``loss.png`` next to the checkpoint), drawn from ``train_log.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fluxprm.figures import pyplot, save_figure
from fluxprm.train.objective import HEAD_TERMS

__all__ = ["kept_epochs", "plot_losses"]


def kept_epochs(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Head name -> the optimizer step that ended the epoch whose weights that head kept (``best_<head>_step``
    entries of a frozen-mode log, one per head of ``HEAD_TERMS``; empty for a log without them)."""
    return {head: row[f"best_{head}_step"] for row in rows for head in HEAD_TERMS if f"best_{head}_step" in row}


def plot_losses(log_path: Path, png: Path) -> None:
    """Training loss per logged step and held-out loss per epoch; nothing is drawn if nothing was logged.

    In frozen mode each head keeps the epoch of its own best held-out terms (``best_<head>_step`` in the log), so
    the shipped heads may come from different epochs than the last one plotted: a dotted line marks each kept
    epoch, otherwise the picture suggests the final weights are the ones at the end of the curve."""
    plt = pyplot()
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_loss" in r]
    if not train_rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, losses = [r["step"] for r in train_rows], [r["loss"] for r in train_rows]
    # mini-batch losses are noisy enough to hide the trend: draw them faint, with a running mean over them
    ax.plot(steps, losses, color="C0", alpha=0.25, linewidth=0.8, label="train loss (per logged batch)")
    window = max(1, len(losses) // 40)
    if window > 1:
        means = [sum(part) / len(part) for part in (losses[max(0, i - window + 1):i + 1] for i in range(len(losses)))]
        ax.plot(steps, means, color="C0", label=f"train loss (mean of last {window})")
    if val_rows:
        ax.plot([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows], "o-", color="C1",
                label="held-out loss")
    for (head, at), style in zip(sorted(kept_epochs(rows).items()), ("C2", "C3", "C4", "C5")):
        ax.axvline(at, color=style, linestyle=":", label=f"{head} head kept (step {at})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("joint loss")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, png, dpi=100)
