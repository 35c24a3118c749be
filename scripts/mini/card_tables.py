"""Print the model card's dev tables (markdown) from ``evaluate.py`` outputs, so the card's figures are copied by a
program rather than by hand.

Usage: ``python scripts/mini/card_tables.py NEW.json [--old NAME=OLD.json ...]``: the AUROC table (NEW with its
interval, then each OLD's AUROC), the Best-of-N table of NEW, and the PRMBench first-error F1 line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SLICES = {"skythought_amc23": "Sky-T1 AMC23", "qwen25math_math": "Qwen2.5-Math MATH",
          "math500": "MATH500 (6 models)", "olympiadbench": "OlympiadBench (3 models)",
          "minerva_math": "Minerva (5 models)", "long_thinking": "long thinking traces only"}


def ci(pair: list[float]) -> str:
    return f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("new", type=Path)
    ap.add_argument("--name", default="new", help="column name of NEW")
    ap.add_argument("--old", action="append", default=[], help="NAME=FILE of an earlier model's evaluate.py output")
    args = ap.parse_args()
    new = json.loads(args.new.read_text())
    olds = [(name, json.loads(Path(path).read_text())) for name, path in (o.split("=", 1) for o in args.old)]
    n_all = sum(p["n"] for k, p in new["pools"].items() if k != "long_thinking")
    head = "| " + " | ".join(["dev slice", "responses / problems", "correct", f"AUROC {args.name} [95% CI]"]
                             + [f"AUROC {name}" for name, _ in olds] + ["target"]) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    olds_pooled = "".join(f"{o['pooled_auroc']:.3f} | " for _, o in olds)
    print(f"| **pooled** (every dev response once) | {n_all} | | **{new['pooled_auroc']:.3f}** "
          f"{ci(new['pooled_auroc_ci'])} | {olds_pooled}≥ 0.80 |")
    for key, label in SLICES.items():
        p = new["pools"][key]
        olds_auroc = "".join(f"{o['pools'][key]['auroc']:.3f} | " for _, o in olds)
        print(f"| {label} | {p['n']} / {p['problems']} | {p['correct_rate']:.2f} | {p['auroc']:.3f} "
              f"{ci(p['auroc_ci'])} | {olds_auroc}≥ 0.72 |")
    print()
    spearman_names = " / ".join([args.name] + [name for name, _ in olds])
    print("| dev slice | PRM argmax | random | majority | PRM-weighted vote | oracle | argmax − random [CI] | "
          f"weighted − majority [CI] | score~length Spearman {spearman_names} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, label in SLICES.items():
        p = new["pools"][key]
        rho = " / ".join(f"{m['pools'][key]['score_length_spearman']:.2f}" for m in [new] + [o for _, o in olds])
        print(f"| {label} | {p['bon_prm']:.3f} | {p['bon_random']:.3f} | {p['bon_majority']:.3f} | "
              f"{p['bon_weighted_majority']:.3f} | {p['bon_oracle']:.3f} | {ci(p['prm_minus_random_ci'])} | "
              f"{ci(p['weighted_minus_majority_ci'])} | {rho} |")
    print()
    f1 = new["prmbench_subset400"]
    olds_f1 = ", ".join(f"{name} {o['prmbench_subset400']['f1']:.3f} {ci(o['prmbench_subset400']['f1_ci'])}"
                        for name, o in olds)
    print(f"PRMBench subset400 first-error F1: {args.name} {f1['f1']:.3f} {ci(f1['f1_ci'])} (acc erroneous "
          f"{f1['acc_erroneous']:.3f}, correct {f1['acc_correct']:.3f}, threshold {f1['threshold']:.4f})"
          + (f", {olds_f1}" if olds else ""))


if __name__ == "__main__":
    main()
