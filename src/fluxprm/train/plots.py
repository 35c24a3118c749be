"""The loss curve of a training run (``loss.png`` next to the checkpoint), drawn from ``train_log.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_losses"]


def plot_losses(log_path: Path, png: Path) -> None:
    """Training loss per logged step and held-out loss per epoch; nothing is drawn if nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: the plot is only written to a file
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_loss" in r]
    if not train_rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train loss")
    if val_rows:
        ax.plot([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows], "o-", label="held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("joint loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
