#!/usr/bin/env bash
# Rebuild the embedded fluxprm-mini from ../shared/data: data splits, training, dev evaluation.
# The trained heads land in build/fluxprm-mini; copy fluxprm_config.json, heads.safetensors and
# train_config.yaml into src/fluxprm/data/fluxprm-mini/ to ship them (the model card is edited by hand).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
$PY scripts/mini/build_data.py --out build/mini
# Teacher step rewards (alignment + coherence; the SmolLM2 judge is skipped: one forward per step over
# ~150 long traces is hours on a CPU) for the long Sky-T1 traces; their records keep `correct`.
$PY -m fluxprm label build/mini/train_skythought_long.jsonl -o build/mini/labels_skythought.jsonl --no-judge
$PY -m fluxprm train build/mini/train_prmbench.jsonl build/mini/labels_skythought.jsonl \
    build/mini/train_skythought_short.jsonl build/mini/train_qwen_pool.jsonl \
    --config src/fluxprm/configs/fluxprm-mini.yaml -o build/fluxprm-mini
$PY scripts/mini/evaluate.py -m build/fluxprm-mini --data build/mini | tee build/fluxprm-mini/dev_metrics.json
