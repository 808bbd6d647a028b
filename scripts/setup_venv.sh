#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install svrt into it with the given extras.
# Usage: scripts/setup_venv.sh VENV_DIR EXTRAS        e.g. scripts/setup_venv.sh .venv dev,synth
# On a machine without an NVIDIA GPU, torch==2.13.0 (a CPU build) is installed FIRST: any other torch
# request would make pip resolve a multi-GB CUDA build.
set -euo pipefail
venv=${1:-.venv}
extras=${2:-}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found; torch will come with svrt's requirements (CUDA build)"
  else
    echo "setup: no NVIDIA GPU; installing the CPU build torch==2.13.0 first"
    "$venv/bin/python" -m pip install -q torch==2.13.0
  fi
fi
spec="$here"
[ -n "$extras" ] && spec="$here[$extras]"
"$venv/bin/python" -m pip install -q -e "$spec"
echo "setup: $venv ready ($("$venv/bin/python" -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'))"
