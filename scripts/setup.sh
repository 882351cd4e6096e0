#!/usr/bin/env bash
# Create (or reuse) .venv and install medprune with everything its demo and tests need.
# torch/torchvision are pinned to the releases this project is tested with; pip takes them from a local
# wheel store where one is configured, else from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.medprune-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install -q -e ".[all]" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import torch, torchvision, medprune" || { echo "setup failed: see pip output above" >&2; exit 1; }
    echo "$want" > "$stamp"
fi
# Real MedMNIST data: ../shared/data beside the repository unless MEDPRUNE_DATA says otherwise.
export MEDPRUNE_DATA="${MEDPRUNE_DATA:-$(cd .. && pwd)/shared/data}"
