#!/usr/bin/env bash
# Rebuild the embedded fluxprm-mini from ../shared/data: data splits, teacher labels, backbone features,
# training, dev evaluation. Every stage is resumable: rerun the script after an interruption and finished work
# is reused (label files resume with --resume, features are cached per example, training takes ~1 min).
# The trained heads land in build/fluxprm-mini; copy fluxprm_config.json, heads.safetensors, train_config.yaml,
# train_summary.json, loss.png and dev_metrics.json into src/fluxprm/data/fluxprm-mini/ to ship them (the model
# card is edited by hand). Set THREADS=1 on a machine shared with other CPU work.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${THREADS:-${OMP_NUM_THREADS:-2}}
OUT=build/mini
$PY scripts/mini/build_data.py --out $OUT

label() {  # label IN OUT [flags]: resume an interrupted run, skip a finished one
    local in=$1 out=$2; shift 2
    if [ -f "$out.done" ]; then return; fi
    local resume=(); [ -f "$out" ] && resume=(--resume)
    $PY -m fluxprm label "$in" -o "$out" "${resume[@]}" "$@"
    touch "$out.done"
}
# Teacher step rewards for the long Sky-T1 training traces (their records keep `correct`): all three
# components (alignment, the cached SmolLM2 judge, coherence) on the first traces, the encoder components
# on the rest — the judge is ~2 steps/s on this CPU (see docs/LABEL.md).
label $OUT/train_skythought_long_judged.jsonl $OUT/labels_skythought_judged.jsonl
label $OUT/train_skythought_long_rest.jsonl $OUT/labels_skythought_rest.jsonl --no-judge

TRAIN=($OUT/train_prmbench.jsonl $OUT/labels_skythought_judged.jsonl $OUT/labels_skythought_rest.jsonl
       $OUT/train_skythought_short.jsonl $OUT/train_qwen_pool.jsonl $OUT/train_pool3.jsonl $OUT/train_pool3_more.jsonl)
DEV=($OUT/dev_pool3.jsonl $OUT/dev_skythought.jsonl $OUT/dev_qwen_pool.jsonl $OUT/dev_prmbench_subset400.jsonl)
# Backbone features of every training and dev example (the slow part: ~1 h on 2 cores; cached, resumable)
$PY scripts/mini/features.py "${TRAIN[@]}" "${DEV[@]}" --originals $OUT/dev_prmbench_subset400.jsonl
$PY -m fluxprm train "${TRAIN[@]}" --config src/fluxprm/configs/fluxprm-mini.yaml -o build/fluxprm-mini
$PY scripts/mini/evaluate.py -m build/fluxprm-mini --data $OUT | tee build/fluxprm-mini/dev_metrics.json
