#!/usr/bin/env bash
# Which trajectory signals the dev slices confirm: train fluxprm-mini's heads without signals, with all four, and
# with each one left out, then evaluate each on the dev slices (scripts/mini/evaluate.py). Run after
# reproduce.sh has built the data, labels and feature cache (each variant then costs ~2 min: heads + evaluation).
# Results: build/ablate/<variant>/dev_metrics.json, and a one-line summary per variant on stdout.
# The data is v2's, on which the model card's ablation rows were measured, and reproduce.sh no longer writes its two
# label files (since v2.3 and v2.4): labels_skythought_rest.jsonl is the 137 long traces labelled --no-judge, and
# labels_skythought_judged.jsonl the other 16 labelled with the judge of the time, the v1 prompt. Make them first:
#   fluxprm label build/mini/train_skythought_long_rest.jsonl -o build/mini/labels_skythought_rest.jsonl --no-judge
#   fluxprm label build/mini/train_skythought_long_judged.jsonl -o build/mini/labels_skythought_judged.jsonl \
#       --judge-prompt v1
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
OUT=build/mini
TRAIN=($OUT/train_prmbench.jsonl $OUT/labels_skythought_judged.jsonl $OUT/labels_skythought_rest.jsonl
       $OUT/train_skythought_short.jsonl $OUT/train_qwen_pool.jsonl $OUT/train_pool3.jsonl)
ALL=(answer_stated unfinished_thinking hesitation_rate log_chars)
declare -A VARIANTS=([none]="[]" [all]="[$(IFS=,; echo "${ALL[*]}")]")
for drop in "${ALL[@]}"; do
    keep=(); for s in "${ALL[@]}"; do [ "$s" != "$drop" ] && keep+=("$s"); done
    VARIANTS["without_$drop"]="[$(IFS=,; echo "${keep[*]}")]"
done
for name in ${1:-none all without_answer_stated without_unfinished_thinking without_hesitation_rate without_log_chars}; do
    dir=build/ablate/$name
    if [ ! -f $dir/dev_metrics.json ]; then
        $PY -m fluxprm train "${TRAIN[@]}" --config src/fluxprm/configs/fluxprm-mini.yaml -o $dir \
            --set "trajectory_signals=${VARIANTS[$name]}" >/dev/null
        $PY scripts/mini/evaluate.py -m $dir --data $OUT --check 0 > $dir/dev_metrics.json.tmp
        mv $dir/dev_metrics.json.tmp $dir/dev_metrics.json
    fi
    $PY - "$name" "$dir/dev_metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[2]))
pools = " ".join(f"{k}={v['auroc']}" for k, v in m["pools"].items())
print(f"{sys.argv[1]:<28} pooled={m['pooled_auroc']} {pools} f1={m['prmbench_subset400']['f1']}")
PY
done
