#!/usr/bin/env bash
# Create .venv (if missing) and install fq_plugin with its test dependencies into it.
# torch is installed first on its own so that pip takes the CPU wheel where one is provided locally
# (with numpy and cython, which fairseq-fixed needs to build from its source distribution without isolation)
# and never builds in an isolated environment that would download another torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}" setuptools wheel numpy cython
.venv/bin/python -m pip install -q --no-build-isolation ".[test]"
# The tests import the checkout: put the kernels pip just compiled (fq_plugin._C) next to the sources as well,
# instead of compiling them a second time. After editing cuda/: .venv/bin/python setup.py build_ext --inplace
rm -f fq_plugin/_C*.so
for so in .venv/lib/python*/site-packages/fq_plugin/_C*.so; do
    if [ -e "$so" ]; then cp "$so" fq_plugin/; fi
done
echo "fq_plugin installed in $(pwd)/.venv"
