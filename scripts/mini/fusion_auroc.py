"""How well each teacher component, and each way of fusing them, ranks correct over wrong traces.

Reads `fluxprm label` records that carry `correct` (e.g. the long Sky-T1 training traces that
`scripts/mini/build_data.py` writes) and prints, per variant, the AUROC of each trace's mean step value
against correctness, plus a paired bootstrap over problems of the two fusions of coherence
(`--coherence-fusion logp` against the default `probability`). The fusions are recomputed from the
recorded components with `fluxprm.labels.fuse.fuse_steps`, exactly as `fluxprm label` fuses them, so one
label file answers for both. Used for docs/LABEL.md ("Which components").

    .venv/bin/python scripts/mini/fusion_auroc.py build/mini/labels_skythought_*judged_logp.jsonl

(the files reproduce.sh writes since v2.4; v2.3's, `labels_skythought_*judged.jsonl`, give the same figures
but for the judge's last bits: the fusion a file was labelled with does not matter here).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

from fluxprm.labels.fuse import fuse_steps

Variant = Callable[[dict], list]


def _component(record: dict, name: str | None) -> list:
    values = record["components"].get(name) if name else None
    return values if values is not None else [None] * len(record["thinking_steps"])


def _fused(*names: str | None) -> Variant:
    """Step rewards fused from the recorded components ``names`` (alignment, quality, coherence slot)."""
    return lambda r: fuse_steps(*(_component(r, n) for n in names))[0]


VARIANTS: dict[str, Variant] = {
    "alignment": lambda r: _component(r, "alignment"),
    "quality (judge)": lambda r: _component(r, "quality"),
    "coherence, exp(r_coh)": lambda r: _component(r, "coherence"),
    "coherence, r_coh": lambda r: _component(r, "coherence_logp"),
    "fused, coherence as probability (default)": _fused("alignment", "quality", "coherence"),
    "fused, coherence as logp": _fused("alignment", "quality", "coherence_logp"),
    "fused, no coherence": _fused("alignment", "quality", None),
}
PAIR = ("fused, coherence as logp", "fused, coherence as probability (default)")


def trace_means(records: list[dict], variant: Variant) -> np.ndarray:
    """Each trace's mean over the steps where the variant has a value (NaN where it has none)."""
    out = []
    for record in records:
        values = [v for v in variant(record) if v is not None]
        out.append(float(np.mean(values)) if values else math.nan)
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels", nargs="+", type=Path, help="label files (JSONL) whose records carry `correct`")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    records = [json.loads(line) for path in args.labels for line in path.read_text().splitlines()]
    records = [r for r in records if r.get("correct") is not None and r["thinking_steps"]]
    y = np.array([bool(r["correct"]) for r in records])
    problems = sorted({r["problem"] for r in records})
    print(f"{len(records)} traces ({int(y.sum())} correct) of {len(problems)} problems")
    means = {name: trace_means(records, variant) for name, variant in VARIANTS.items()}
    result: dict[str, object] = {"traces": len(records), "correct": int(y.sum()), "problems": len(problems)}
    for name, m in means.items():
        ok = ~np.isnan(m)
        auroc = roc_auc_score(y[ok], m[ok]) if ok.sum() >= len(m) / 2 and len(set(y[ok])) == 2 else None
        result[name] = None if auroc is None else round(float(auroc), 3)
        print(f"  {name:45s} {'n/a' if auroc is None else f'{auroc:.3f}'}")
    a, b = (means[name] for name in PAIR)
    if not (np.isnan(a).any() or np.isnan(b).any()):
        rows = {p: [i for i, r in enumerate(records) if r["problem"] == p] for p in problems}
        rng = random.Random(args.seed)
        diffs = []
        for _ in range(args.resamples):
            idx = [i for p in rng.choices(problems, k=len(problems)) for i in rows[p]]
            if len(set(y[idx])) == 2:
                diffs.append(roc_auc_score(y[idx], a[idx]) - roc_auc_score(y[idx], b[idx]))
        low, high = np.percentile(diffs, [2.5, 97.5])
        result["logp_minus_probability_ci95"] = [round(float(low), 3), round(float(high), 3)]
        print(f"  logp − probability, 95% bootstrap over problems: [{low:+.3f}, {high:+.3f}]")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
