"""Build the training and dev files of the embedded ``fluxprm-mini`` from ``../shared/data``.

Splits are by *problem*, so no dev problem is ever trained on:

- Best-of-N pools: Sky-T1 AMC23 (problem ``idx % 4 == 3`` → dev) and Qwen2.5-Math MATH
  (``idx % 5 == 4`` → dev); everything else → train.
- SkyThought MATH500 / OlympiadBench / Minerva pool (5,885 responses of 6 models): a problem is dev when
  the SHA-256 of its whitespace-normalised text is 0 mod 4 — except the few MATH500 problems that are
  also in the Qwen2.5-Math pool, which follow that pool's split. Training takes a seeded sample of the
  training problems' responses (``--pool3-long`` long thinking traces, ``--pool3-short`` others: prefixes
  of a fixed seeded draw; ``--pool3-more-long``/``--pool3-more-short`` add responses from a second seeded
  draw of the rest, into ``train_pool3_more.jsonl``); the dev
  file keeps every long thinking trace of the dev problems and the other responses of a quarter of them
  (hash 0 mod 16), to bound feature extraction.
- PRMBench: ``prmbench_train.jsonl`` → train (every modified process with its error steps, and every
  original, error-free process with step labels only; questions of any dev set removed);
  ``prmbench_subset400.jsonl`` is the dev set, never trained on. fluxprm-mini v2 was built with
  ``--prmbench-train 1600 --prmbench-original 500 --prmbench-original-outcome``; v2.1 did not train on
  ``train_pool3_more.jsonl``.

Usage: ``python scripts/mini/build_data.py [--shared ../shared/data] [--out build/mini]``.
Pool sizes are capped (see the flags) to bound feature extraction on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as JSONL, leaving an identical file untouched: its modification time is part of how
    ``fluxprm label --resume`` recognises its input, so rewriting the same bytes would make
    ``reproduce.sh`` refuse to resume an interrupted label run."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        print(f"{path}: {len(rows)} records (unchanged)")
        return
    path.write_text(text)
    print(f"{path}: {len(rows)} records")


#: Responses drawn (seeded) from the MATH500/Olympiad/Minerva pool's training problems: long traces, others.
POOL3_DRAW = (300, 900)


def norm(text: str) -> str:
    return " ".join(text.split())


def bucket(text: str, mod: int) -> int:
    """A stable pseudo-random bucket of a problem's text (the same problem lands in the same bucket everywhere)."""
    return int(hashlib.sha256(norm(text).encode()).hexdigest(), 16) % mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("build/mini"))
    ap.add_argument("--prmbench-train", type=int, default=None, help="modified processes to train on (default: all)")
    ap.add_argument("--prmbench-original", type=int, default=None,
                    help="error-free processes to train on, step labels only (rows after the modified ones first, "
                         "then their own; default: all)")
    ap.add_argument("--prmbench-original-outcome", action="store_true",
                    help="also give the error-free processes an outcome label (fluxprm-mini v2 did; it pulled the "
                         "trajectory head toward PRMBench's short clean processes: pooled dev AUROC 0.82 vs 0.85)")
    ap.add_argument("--sky-per-problem", type=int, default=8, help="Sky-T1 pool responses per training problem")
    ap.add_argument("--qwen-problems", type=int, default=40, help="Qwen2.5-Math pool training problems")
    ap.add_argument("--pool3-long", type=int, default=300,
                    help=f"long thinking traces of the MATH500/Olympiad/Minerva pool's training problems to train on "
                         f"(at most {POOL3_DRAW[0]})")
    ap.add_argument("--pool3-short", type=int, default=900,
                    help=f"other responses of that pool's training problems to train on (at most {POOL3_DRAW[1]})")
    ap.add_argument("--pool3-more-long", type=int, default=None,
                    help="long thinking traces of that pool's training problems not in the first draw, drawn "
                         "with a generator of their own into train_pool3_more.jsonl (default: all of them)")
    ap.add_argument("--pool3-more-short", type=int, default=1200,
                    help="other responses not in the first draw, into train_pool3_more.jsonl")
    ap.add_argument("--judged-long", type=int, default=16,
                    help="long Sky-T1 training traces in the first of two label runs (up to v2.2 only these had the "
                         "judge; since v2.3 both runs use it, and the split keeps earlier label files valid)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    sky = read(args.shared / "bon_pools" / "skythought_amc23.jsonl")
    for i, r in enumerate(sky):  # idx is the problem; give each response its own id
        r["id"] = f"amc23-{r['idx']}-{i % 15}-{r['model'].split('/')[-1]}"
    # 8 of the 15 responses per training problem (seeded), to bound feature-extraction time
    train_sky = []
    for idx in sorted({r["idx"] for r in sky if r["idx"] % 4 != 3}):
        group = [r for r in sky if r["idx"] == idx]
        train_sky += rng.sample(group, min(args.sky_per_problem, len(group)))
    write(args.out / "train_skythought.jsonl", train_sky)
    # long thinking traces get teacher labels from `fluxprm label` (see reproduce.sh); short ones train as is
    long_sky = [r for r in train_sky if r["long_cot"]]
    write(args.out / "train_skythought_long.jsonl", long_sky)
    # two label runs (reproduce.sh), both with all three teacher components since v2.3; up to v2.2 the second one
    # ran without the judge
    write(args.out / "train_skythought_long_judged.jsonl", long_sky[: args.judged_long])
    write(args.out / "train_skythought_long_rest.jsonl", long_sky[args.judged_long:])
    write(args.out / "train_skythought_short.jsonl", [r for r in train_sky if not r["long_cot"]])
    write(args.out / "dev_skythought.jsonl", [r for r in sky if r["idx"] % 4 == 3])

    qwen = read(args.shared / "bon_pools" / "qwen25math_math_cot_100_x8.jsonl")
    write(args.out / "train_qwen_pool.jsonl", [r for r in qwen if r["idx"] % 5 != 4][: args.qwen_problems])
    write(args.out / "dev_qwen_pool.jsonl", [r for r in qwen if r["idx"] % 5 == 4])

    qwen_split = {norm(r["question"]): r["idx"] % 5 == 4 for r in qwen}
    pool3 = read(args.shared / "bon_pools" / "skythought_math500_olympiad_minerva.jsonl")
    for i, r in enumerate(pool3):
        r["id"] = f"{r['dataset']}-{r['idx']}-{r['model']}-{i}"
        r["group"] = f"{r['dataset']}-{r['idx']}"  # the problem, for Best-of-N grouping

    def pool3_dev(r: dict) -> bool:
        return qwen_split.get(norm(r["question"]), bucket(r["question"], 4) == 0)

    train3 = [r for r in pool3 if not pool3_dev(r)]
    long3 = [r for r in train3 if r["long_cot"]]
    short3 = [r for r in train3 if not r["long_cot"]]
    # a fixed-size seeded draw, trained on by prefix: a smaller run's data is part of a larger one's, and the
    # sizes never change what the other files draw from the same generator
    long_draw = rng.sample(long3, min(POOL3_DRAW[0], len(long3)))
    short_draw = rng.sample(short3, min(POOL3_DRAW[1], len(short3)))
    write(args.out / "train_pool3.jsonl", long_draw[: args.pool3_long] + short_draw[: args.pool3_short])
    # more of the pool from its own generator: the files above stay byte-identical whatever these sizes are
    more_rng = random.Random(f"pool3-more-{args.seed}")
    drawn = {id(r) for r in long_draw + short_draw}
    rest_long = [r for r in long3 if id(r) not in drawn]
    more_long = more_rng.sample(rest_long, len(rest_long) if args.pool3_more_long is None
                                else min(args.pool3_more_long, len(rest_long)))
    rest_short = [r for r in short3 if id(r) not in drawn]
    more_short = more_rng.sample(rest_short, min(args.pool3_more_short, len(rest_short)))
    write(args.out / "train_pool3_more.jsonl", more_long + more_short)
    write(args.out / "dev_pool3.jsonl", [r for r in pool3 if pool3_dev(r)
                                         and (r["long_cot"] or bucket(r["question"], 16) == 0)])

    prm = read(args.shared / "step_labels" / "prmbench_train.jsonl")
    dev_questions = {r["original_question"] for r in read(args.shared / "step_labels" / "prmbench_subset400.jsonl")}
    dev_questions |= {r["question"] for r in pool3 if pool3_dev(r)}
    dev_norm = {norm(q) for q in dev_questions}
    prm = [r for r in prm if norm(r["original_question"]) not in dev_norm]
    rng.shuffle(prm)
    n_modified = len(prm) if args.prmbench_train is None else args.prmbench_train
    modified = prm[:n_modified]
    # error-free processes from the rows after the modified ones, then (when those run out) from the modified
    # rows themselves: the same question's correct and flawed process, a pair that shows where the error is.
    # Step labels only by default: every step correct (label -1), no outcome (see --prmbench-original-outcome).
    after = prm[n_modified:] + prm[:n_modified]
    outcome = {"final_answer_correct": True} if args.prmbench_original_outcome else {}
    original = [{"id": f"{r['idx']}-original", "problem": r["original_question"], "steps": r["original_process"],
                 "label": -1, **outcome}
                for r in after[: len(prm) if args.prmbench_original is None else args.prmbench_original]]
    write(args.out / "train_prmbench.jsonl", modified + original)
    write(args.out / "dev_prmbench_subset400.jsonl", read(args.shared / "step_labels" / "prmbench_subset400.jsonl"))


if __name__ == "__main__":
    main()
