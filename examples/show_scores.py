"""Print a score file as a table: one row per trace, best first (used by `make demo`)."""

import sys

import orjson
from rich.console import Console
from rich.table import Table

rows = [orjson.loads(line) for line in open(sys.argv[1], "rb") if line.strip()]
table = Table(title=f"{sys.argv[1]}: {len(rows)} traces, best first")
for col in ("id", "score", "steps", "thinking mean", "response mean", "trajectory", "truncated"):
    table.add_column(col, justify="right" if col != "id" else "left")


def mean(xs):
    return f"{sum(xs) / len(xs):.3f}" if xs else "-"


for r in sorted(rows, key=lambda r: -(r["score"] or 0)):
    traj = r.get("trajectory_reward")
    table.add_row(str(r["id"]), f"{r['score']:.3f}", str(r["num_steps"]), mean(r.get("thinking_step_rewards") or []),
                  mean(r.get("response_step_rewards") or []), "-" if traj is None else f"{traj:.3f}",
                  str(r["truncated"]))
Console(width=120).print(table)
