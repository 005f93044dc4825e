#!/usr/bin/env bash
# Regenerates the PyTorch reference fixtures. Creates its own virtual environment with pinned
# PyTorch/torchvision/safetensors (large: ~5.5 GB with the CUDA runtime wheels PyPI's torch pulls in; CPU is used).
# Only needed to regenerate; the tests read the committed fixtures and need no Python.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${PYTHON:-}" ] && [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -r requirements-fixtures.txt
fi
# PYTHON may name another interpreter that has torch, torchvision and safetensors.
"${PYTHON:-.venv/bin/python}" make_fixtures.py "$@"
