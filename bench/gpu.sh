#!/usr/bin/env bash
# Issue 23's GPU checks in one script that fits in 10 minutes of a lent GPU machine (one H200, 16 cores, no internet):
#   1. scoring cost ratios (each scorer's seconds per image / one forward of one image) on vgg19, resnet50, vit_b_16
#      at 224 px, random init, IG at trapezoid 20 and Gauss-Legendre 8;
#   2. compress of resnet50 and vit_b_16 at 224 px (random init) on BreastMNIST upsampled, with a tiny budget.
# Every step runs under its own `timeout`, so a slow one cannot eat the others' time; what finished is in OUT.
#
#   bash bench/gpu.sh DATA_ROOT OUT [WHEELS]
#
# DATA_ROOT holds breastmnist.npz (or breastmnist/breastmnist.npz); WHEELS (optional, an ignored folder carried with
# the repo, e.g. .wheels) holds wheels of what the GPU image lacks (zennit, torch-pruning, ...), installed offline.
# Environment: PY (interpreter, default python3), DEVICE (default cuda), SIZE (default 224), SCORE_MODELS,
# COMPRESS_MODELS, SCORE_TIMEOUT (s per model, default 100), COMPRESS_TIMEOUT (s per model, default 150).
# CPU check of the same steps on tiny models:
#   PY=.venv/bin/python DEVICE=cpu SIZE=28 SCORE_MODELS=vgg_small COMPRESS_MODELS=resnet_small \
#     bash bench/gpu.sh /work/shared/data /tmp/gpu-out
set -u
py=${PY:-python3}
data=$1 out=$2 wheels=${3:-}
device=${DEVICE:-cuda} size=${SIZE:-224}
score_models=${SCORE_MODELS:-vgg19 resnet50 vit_b_16}
compress_models=${COMPRESS_MODELS:-resnet50 vit_b_16}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" MEDPRUNE_DATA="$data"
if [ -n "$wheels" ] && [ -d "$wheels" ]; then
  timeout 120 $py -m pip install --quiet --no-index --find-links "$wheels" "$wheels"/*.whl >"$out/pip.txt" 2>&1 \
    || echo "pip install from $wheels failed (see pip.txt)"
fi
{
  echo "nproc $(nproc); load $(cut -d' ' -f1-3 /proc/loadavg)"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
  $py -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

# 1. scoring cost ratios, one process per model
for model in $score_models; do
  echo "== scoring $model ($device, $size px)"
  timeout --signal=KILL "${SCORE_TIMEOUT:-100}" $py - "$model" "$device" "$size" >"$out/scoring-$model.md" 2>"$out/scoring-$model.log" <<'EOF'
import statistics
import sys
import time

import torch

from medprune.models import create_model
from medprune.scoring.registry import available_scorers, score

name, device, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
model = create_model(name, num_classes=2, image_size=size).to(device).eval()
x, y = torch.randn(4, 3, size, size, device=device), torch.tensor([0, 1, 0, 1], device=device)


def timed(fn, repeats=3):
    fn()  # warm-up (kernels, autotuning)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


with torch.no_grad():
    forward = timed(lambda: model(x[:1]), repeats=10)
runs = [(m, {}) for m in available_scorers() if m != "ig"]
runs += [("ig", {"rule": "trapezoid", "steps": 20}), ("ig", {"rule": "gauss_legendre", "steps": 8})]
print(f"{name}, {size} px, {device}: one forward of one image {forward * 1e3:.2f} ms\n")
print("| model | method | options | s / image | x forward |\n| --- | --- | --- | ---: | ---: |")
for method, options in runs:
    try:
        seconds = timed(lambda: score(model, x, y, method, **options), repeats=1) / len(x)
        print(f"| {name} | {method} | {options or ''} | {seconds:.4f} | {seconds / forward:.1f} |", flush=True)
    except Exception as error:  # one scorer's failure must not hide the others' numbers
        print(f"| {name} | {method} | {options or ''} | failed: {type(error).__name__}: {error} | |", flush=True)
EOF
  echo "rc $?" >>"$out/scoring-$model.log"
  cat "$out/scoring-$model.md"
done

# 2. compress at 224 px on BreastMNIST upsampled, random-init checkpoints, tiny budget
for model in $compress_models; do
  echo "== compress $model ($device, $size px)"
  work="$out/compress-$model"
  mkdir -p "$work"
  $py - "$model" "$size" "$work/train/model" <<'EOF' >"$work/checkpoint.log" 2>&1 || { echo "checkpoint failed"; continue; }
import sys

import torch

from medprune.checkpoint import save_checkpoint
from medprune.models import create_model

torch.manual_seed(0)
model = create_model(sys.argv[1], num_classes=2, image_size=int(sys.argv[2]))
print(save_checkpoint(sys.argv[3], model, {"class_names": ["malignant", "normal, benign"], "dataset": {"name": "breastmnist"}}))
EOF
  start=$(date +%s)
  timeout --signal=KILL "${COMPRESS_TIMEOUT:-150}" $py -m medprune.cli.main compress "$work/train/model" \
    --device "$device" --data-root "$data" --out "$work/out" --finetune-epochs 1 --rates 0.3,0.5 \
    --set max_train_samples=64 --set n_per_class=4 --set recalibration_samples=64 --set latency_repeats=3 \
    --set decision_rule=point --set max_class_recall_drop=1.0 >"$work/compress.log" 2>&1
  rc=$?
  echo "| $model | compress | rc $rc | $(($(date +%s) - start)) s |" | tee -a "$out/compress.md"
  rm -rf "$work/train" "$work/out"/*.safetensors "$work/out"/*.onnx  # weights: too large to bring back
done
echo "done; results in $out"
