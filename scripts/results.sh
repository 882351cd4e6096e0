#!/usr/bin/env bash
# The multi-seed sweeps, setting search, default choice, recovered curves and reports behind docs/results.md.
# Long (hours on 2 CPU cores): pass --set device=cuda to the sweeps on a GPU machine. Resumable: re-run after a kill.
#   CKPT_ROOT=/path/to/ckpt MEDPRUNE_DATA=/path/to/data scripts/results.sh [--set device=cuda]
# CKPT_ROOT holds <dataset>-s0/model.safetensors and <dataset>-s1/model.safetensors (two training seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CKPT_ROOT:?set CKPT_ROOT to the folder holding <dataset>-s0/ and <dataset>-s1/ checkpoints}"
: "${MEDPRUNE_DATA:?set MEDPRUNE_DATA to the data folder}"
OUT=${OUT:-runs/results}
for dataset in pneumoniamnist breastmnist; do
  checkpoints="$CKPT_ROOT/$dataset-s0/model.safetensors,$CKPT_ROOT/$dataset-s1/model.safetensors"
  .venv/bin/medprune sweep --config "configs/results-$dataset.yaml" --data-root "$MEDPRUNE_DATA" \
    --out "$OUT/$dataset/sweep" --set checkpoints="$checkpoints" "$@"
  .venv/bin/medprune sweep --config configs/results-search.yaml --data-root "$MEDPRUNE_DATA" \
    --out "$OUT/$dataset/search" --set checkpoints="$checkpoints" "$@"
  .venv/bin/medprune report --results "$OUT/$dataset/sweep" --out "$OUT/$dataset/report" --data-root "$MEDPRUNE_DATA"
  .venv/bin/medprune report --results "$OUT/$dataset/search" --out "$OUT/$dataset/search-report" \
    --data-root "$MEDPRUNE_DATA" --no-efficiency --no-heatmaps --set paired_metrics=balanced_accuracy
done
# The product default's choice (validation only; rule in scripts/choose_default.py).
.venv/bin/python scripts/choose_default.py "$OUT/pneumoniamnist/search" "$OUT/breastmnist/search" \
  --csv docs/results/setting-choice.csv > "$OUT/setting-choice.md"
# Recovered curves beside the paper protocol (BreastMNIST only: fine-tuning every rate is affordable there).
checkpoints="$CKPT_ROOT/breastmnist-s0/model.safetensors,$CKPT_ROOT/breastmnist-s1/model.safetensors"
.venv/bin/medprune sweep --config configs/results-recovery.yaml --data-root "$MEDPRUNE_DATA" \
  --out "$OUT/breastmnist/recovery" --set checkpoints="$checkpoints" "$@"
.venv/bin/medprune report --results "$OUT/breastmnist/recovery" --out "$OUT/breastmnist/recovery-report" \
  --data-root "$MEDPRUNE_DATA" --no-efficiency --no-heatmaps
# The generated tables; docs/results.md is written by hand from them (and copies the CSVs into docs/results/).
.venv/bin/python scripts/results_md.py "$OUT" pneumoniamnist breastmnist > "$OUT/results-generated.md"
echo "generated tables in $OUT/results-generated.md and $OUT/*/report/; docs/results.md cites them"
