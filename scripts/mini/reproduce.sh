#!/usr/bin/env bash
# Rebuild the embedded fluxprm-mini from ../shared/data: data splits, teacher labels, backbone features,
# training, dev evaluation. Every stage is resumable: rerun the script after an interruption and finished work
# is reused (label files resume with --resume, features are cached per example, training takes ~3.5 min).
# The trained heads land in build/fluxprm-mini; copy fluxprm_config.json, heads.safetensors, train_config.yaml,
# train_summary.json, loss.png, kfold_threshold.json and dev_metrics.json into src/fluxprm/data/fluxprm-mini/ to ship them (the model
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
# Teacher step rewards for the long Sky-T1 training traces (their records keep `correct`), with all three
# components: alignment, the prefix-cached SmolLM2 judge and coherence (7,742 thinking steps: 79 min with 2
# threads for v2.4; see docs/LABEL.md). Since v2.4 the three are fused with
# --coherence-fusion logp (docs/LABEL.md, "Which components"); v2.3's files, fused the paper's way, were
# labels_skythought{,_rest}_judged.jsonl. Up to v2.2 only the first 16 traces had the judge.
label $OUT/train_skythought_long_judged.jsonl $OUT/labels_skythought_judged_logp.jsonl --coherence-fusion logp
label $OUT/train_skythought_long_rest.jsonl $OUT/labels_skythought_rest_judged_logp.jsonl --coherence-fusion logp

TRAIN=($OUT/train_prmbench.jsonl $OUT/labels_skythought_judged_logp.jsonl $OUT/labels_skythought_rest_judged_logp.jsonl
       $OUT/train_skythought_short.jsonl $OUT/train_qwen_pool.jsonl $OUT/train_pool3.jsonl $OUT/train_pool3_more.jsonl)
DEV=($OUT/dev_pool3.jsonl $OUT/dev_skythought.jsonl $OUT/dev_qwen_pool.jsonl $OUT/dev_prmbench_subset400.jsonl)
# Backbone features of every training and dev example (the slow part: ~2.5-3 h on 2 cores from a cold cache;
# cached per example, resumable)
$PY scripts/mini/features.py "${TRAIN[@]}" "${DEV[@]}" --originals $OUT/dev_prmbench_subset400.jsonl
$PY -m fluxprm train "${TRAIN[@]}" --config src/fluxprm/configs/fluxprm-mini.yaml -o build/fluxprm-mini
# The first-error threshold, chosen out-of-fold on the training PRMBench file and recorded in the checkpoint:
# 5 more trainings, each without one fold (~3.5 min each; resumable under build/kfold). evaluate.py and
# `fluxprm eval processbench` then use it.
$PY scripts/mini/kfold_threshold.py "${TRAIN[@]}" --dev $OUT/dev_prmbench_subset400.jsonl -m build/fluxprm-mini \
    --record | tee build/fluxprm-mini/kfold_threshold.json
$PY scripts/mini/evaluate.py -m build/fluxprm-mini --data $OUT | tee build/fluxprm-mini/dev_metrics.json
