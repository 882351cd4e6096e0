#!/usr/bin/env bash
# Build .oracle-venv/: the dl-backtrace 0.1.24 package as a *test oracle* for medprune's native DLB (docs/dlb.md).
# The package's own pins (torch 2.6 + TensorFlow, CUDA-12 extensions) are not installed: --no-deps, then only the
# light modules it imports, and scripts/dlb_shims.py (stubs the CUDA-only extensions; docs/dlb.md, "The oracle").
# Usage: bash scripts/build_dlb_oracle.sh   (about 4 min; idempotent; then: pytest -m oracle tests/test_dlb_oracle.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.oracle-venv
SHIMS="${DLB_SHIMS:-scripts/dlb_shims.py}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.oracle-installed"
want="$(cat scripts/build_dlb_oracle.sh scripts/dlb_shims.py | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/python" -m pip install -q --no-deps "dl-backtrace==0.1.24"
    "$VENV/bin/python" -m pip install -q graphviz lz4 zstandard seaborn ipython "transformers<5" safetensors timm \
        numpy matplotlib pandas tqdm psutil
    cp "$SHIMS" "$VENV/dlb_shims.py"
    "$VENV/bin/python" -c "import sys; sys.path.insert(0, '$VENV'); import dlb_shims; from dl_backtrace import DLBacktrace"
    echo "$want" > "$stamp"
fi
echo "oracle venv ready: $VENV"
