#!/usr/bin/env bash
# Full-size torchvision parity check (PyTorch needed; not part of CI): real torchvision ResNets with
# random weights and batch-norm statistics, saved by the safetensors library, run through
# `swift run -c release resnet infer`, logits compared within 1e-4. See check_torchvision.py.
# Uses scripts/.venv (created with the pinned requirements, as make_fixtures.sh does) unless
# PYTHON names another interpreter that has torch, torchvision and safetensors.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q -r requirements-fixtures.txt
  fi
  PYTHON=.venv/bin/python
fi
exec "$PYTHON" check_torchvision.py "$@"
