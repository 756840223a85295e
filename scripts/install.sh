#!/usr/bin/env bash
# Create .venv (if missing) and install fq_plugin with its test dependencies into it.
# torch is installed first on its own so that pip takes the CPU wheel where one is provided locally
# and never builds in an isolated environment that would download another torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}" setuptools wheel
.venv/bin/python -m pip install -q --no-build-isolation ".[test]"
echo "fq_plugin installed in $(pwd)/.venv"
