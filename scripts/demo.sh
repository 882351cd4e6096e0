#!/usr/bin/env bash
# Set up (venv + dependencies) and run the whole pipeline on PneumoniaMNIST: train, score, sweep, prune, report.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
.venv/bin/medprune demo --config configs/demo.yaml --data-root "$MEDPRUNE_DATA" --out runs/demo "$@"
