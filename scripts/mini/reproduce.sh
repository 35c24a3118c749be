#!/usr/bin/env bash
# Rebuild the embedded fluxprm-mini from ../shared/data: data splits, training, dev evaluation.
# The trained heads land in build/fluxprm-mini; copy fluxprm_config.json, heads.safetensors and
# train_config.yaml into src/fluxprm/data/fluxprm-mini/ to ship them (the model card is edited by hand).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
$PY scripts/mini/build_data.py --out build/mini
$PY -m fluxprm train build/mini/train_prmbench.jsonl build/mini/train_skythought.jsonl build/mini/train_qwen_pool.jsonl \
    --config src/fluxprm/configs/fluxprm-mini.yaml -o build/fluxprm-mini
$PY scripts/mini/evaluate.py -m build/fluxprm-mini --data build/mini | tee build/fluxprm-mini/dev_metrics.json
