#!/usr/bin/env bash
# Create .venv and install trmlm into it (editable). Usage: bash scripts/setup.sh [EXTRAS]
#   bash scripts/setup.sh        # the package and its dependencies
#   bash scripts/setup.sh dev    # + test dependencies (pytest, matplotlib)
# Torch: TRM_TORCH (default torch==2.13.0) is installed first, so pip does not resolve the
# open range in pyproject to a multi-GB CUDA build where a CPU wheel is available locally.
# On a GPU machine set TRM_TORCH to the build you want (e.g. TRM_TORCH="torch==2.13.0").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  pip install "${TRM_TORCH:-torch==2.13.0}"
fi
if [ -n "$extras" ]; then
  pip install -e ".[$extras]"
else
  pip install -e .
fi
