#!/usr/bin/env bash
# Creates .venv and installs lame with the exact versions in constraints.txt (CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and alone, so pip takes the pinned CPU build instead of resolving a CUDA one.
.venv/bin/python -m pip install -q "torch==$(sed -n 's/^torch==//p' constraints.txt)"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
