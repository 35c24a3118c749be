"""Write a seeded sample of a Best-of-N pool by *problem*: every candidate of a sampled problem is kept.

For pools too large to score whole on a CPU: the 5,885-record SkyThought pool takes ~4.5 h with fluxprm-mini on
2 cores. A problem is (dataset, question text): ids alone collide in that pool (OlympiadBench `idx` values name
several problems). fluxprm-mini v1's figures in docs/SELECT.md and docs/BON.md (now in their git history) came
from such a sample; fluxprm-mini v2 and later train on three quarters of that pool's problems, so their figures
use the problems they never saw instead (``build/mini/dev_pool3.jsonl`` from scripts/mini/build_data.py).

    python scripts/sample_pool.py POOL.jsonl OUT.jsonl --fraction 0.1 --seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pool")
    ap.add_argument("out")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    kept = problems = 0
    seen: set[str] = set()
    with open(args.pool, encoding="utf-8") as src, open(args.out, "w", encoding="utf-8") as dst:
        for line in src:
            rec = json.loads(line)
            problem = f"{rec.get('dataset', '')}\x00{rec.get('question', rec.get('problem', ''))}"
            digest = hashlib.sha256(f"{args.seed}\x00{problem}".encode()).digest()
            if problem not in seen:
                seen.add(problem)
                problems += 1
            if int.from_bytes(digest[:8], "big") / 2**64 < args.fraction:
                dst.write(line)
                kept += 1
    print(json.dumps({"problems": problems, "records_kept": kept}))


if __name__ == "__main__":
    main()
