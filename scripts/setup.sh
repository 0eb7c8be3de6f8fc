#!/usr/bin/env bash
# Create .venv and install posteval with its dev tools. torch goes in first, and as a CPU build
# wherever there is no NVIDIA GPU, so pip never pulls a multi-GB CUDA build onto a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "${PIP[@]}" "torch==${TORCH_VERSION}"
else
  # A local or mirrored CPU wheel first; else PyTorch's CPU index. Never the CUDA default.
  "${PIP[@]}" "torch==${TORCH_VERSION}+cpu" 2>/dev/null \
    || "${PIP[@]}" --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
fi
"${PIP[@]}" -e ".[dev]"
echo "posteval installed in .venv"
