#!/usr/bin/env bash
# The study grid of a config on a lent GPU machine, split into one `medprune study` process per (training seed,
# dataset) so the machine's cores and its GPU work at once, under a wall-time budget; what finished is packed for
# the CPU side, where `medprune study --config CONFIG --out runs/study-cpu` resumes it (finished checkpoints and
# sweeps are reused by key; the device is not part of either key).
#
#   bash bench/study_gpu.sh CONFIG DATA_ROOT WORK OUT BUDGET_SECONDS
#
# OUT receives: checkpoints-s<seed>.tar (weights + training records), runs.tar.xz (every split's sweeps without
# their score caches, rows, study.json, logs), env.txt (cores, GPU, versions). Unpack on the CPU side with
# `python bench/study_merge.py OUT runs/study-cpu`.
set -u
py=${PY:-python3}  # the interpreter with torch (the GPU image's python3)
config=$1 data=$2 work=$3 out=$4 budget=$5
mkdir -p "$work" "$out"
{
  echo "nproc $(nproc); affinity $($py -c 'import os; print(len(os.sched_getaffinity(0)))')"
  cat /sys/fs/cgroup/cpu.max 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
  $py -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
} >"$out/env.txt" 2>&1
cat "$out/env.txt"
$py - "$config" "$work" <<'EOF'
import sys
from pathlib import Path

import yaml

config, work = Path(sys.argv[1]), Path(sys.argv[2])
base = yaml.safe_load(config.read_text())
for seed in base["seeds"]:
    for dataset in base["datasets"]:
        names = {dataset, *base["architectures"], *(f"{a}/{dataset}" for a in base["architectures"])}
        part = {**base, "seeds": [seed], "datasets": [dataset], "device": "cuda"}
        part["recipes"] = {k: v for k, v in (base.get("recipes") or {}).items() if k in names}
        (work / f"part-s{seed}-{dataset}.yaml").write_text(yaml.safe_dump(part, sort_keys=False))
EOF
pids=()
for part in "$work"/part-*.yaml; do
  name=$(basename "$part" .yaml)
  timeout --signal=KILL "$budget" $py -m medprune.cli.main study ${STUDY_ARGS:-} --config "$part" --data-root "$data" \
    --out "$work/$name" -q >"$work/$name.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
echo "parts finished or stopped at the budget:"
for part in "$work"/part-*/; do
  $py -c 'import json,sys; d=json.load(open(sys.argv[1]))["tasks"]; print(sys.argv[1], len(d), "tasks:", sorted(d))' \
    "$part/study.json" 2>/dev/null || echo "$part: no study.json"
done
for seed in $($py -c "import yaml,sys; print(*yaml.safe_load(open(sys.argv[1]))['seeds'])" "$config"); do
  (cd "$work" && tar -cf "$out/checkpoints-s$seed.tar" part-s"$seed"-*/checkpoints 2>/dev/null)
done
(cd "$work" && tar --exclude='*/scores' --exclude='*/report' -cJf "$out/runs.tar.xz" part-*.yaml part-*.log \
  part-*/study.json part-*/rows part-*/sweeps part-*/rows.jsonl part-*/results.csv part-*/claims.csv 2>/dev/null)
ls -la "$out"
