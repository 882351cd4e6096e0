#!/usr/bin/env bash
# Set up (venv + dependencies) and run the whole test suite: lint, format check, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
.venv/bin/python -m ruff check src tests bench
.venv/bin/python -m ruff format --check src tests bench
.venv/bin/python -m pytest -q "$@"
