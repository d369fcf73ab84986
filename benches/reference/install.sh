#!/usr/bin/env bash
# Creates benches/reference/.venv with the pinned PyTorch reference stack (from PyPI).
# Idempotent: does nothing when the venv already has exactly these versions.
#
# The default PyPI torch wheel for Linux x86_64 pulls in CUDA runtime packages (a few GB);
# that is expected, the benchmark runs on the CPU.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

pins=(
    "torch==2.15.0"
    "torchvision==0.29.2"
    "numpy==2.4.6"
    "safetensors==0.8.0"
    "pillow==13.0.0"
)

check() {
    "$venv/bin/python" - "$@" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(1)
EOF
}

if [ -x "$venv/bin/python" ] && check "${pins[@]}"; then
    echo "reference venv ready: $venv"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "${pins[@]}"
check "${pins[@]}" || { echo "install.sh: installed versions differ from the pins" >&2; exit 1; }
"$venv/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
echo "reference venv ready: $venv"
