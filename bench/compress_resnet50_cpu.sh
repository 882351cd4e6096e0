#!/usr/bin/env bash
# Issue 23: `medprune compress` of a ResNet50 at 224 px timed on this CPU with a bounded budget. Random init (timing
# only: its accuracy figures mean nothing), BreastMNIST upsampled from 28 px, 1 torch thread, a fixed rate of 0.5 (no
# search: one candidate), compress's default recovery (2 fine-tuning epochs of distillation on the 546 training
# images), 20 scoring images, 128 recalibration images, 5 latency repeats. Results: bench/compress_results.md.
#
#     MEDPRUNE_DATA=/path/to/data bash bench/compress_resnet50_cpu.sh /tmp/r50
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-/tmp/r50}" && cd "${1:-/tmp/r50}" && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
DATA=${MEDPRUNE_DATA:?set MEDPRUNE_DATA to the folder holding breastmnist}
export OMP_NUM_THREADS=1
"$PY" - "$OUT/ckpt/model" <<'P'
import sys
from medprune.checkpoint import save_checkpoint
from medprune.models import create_model
from medprune.runtime import seed_everything
seed_everything(0)
model = create_model("resnet50", num_classes=2, image_size=224)
save_checkpoint(sys.argv[1], model, {"class_names": ["malignant", "normal, benign"], "dataset": {"name": "breastmnist"}})
P
/usr/bin/time -v "$PY" -m medprune.cli.main compress "$OUT/ckpt/model.safetensors" --out "$OUT/out" --data-root "$DATA" \
  --rate 0.5 --accept-uncertified --set recalibration_samples=128 --set latency_repeats=5 2>&1 | tee "$OUT/log.txt"
"$PY" -c "import json, sys; c = json.load(open(sys.argv[1])); print('stage seconds', c['timings'])" "$OUT/out/card.json"
