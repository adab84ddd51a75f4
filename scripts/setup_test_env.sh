#!/usr/bin/env bash
# Creates a virtualenv (default .venv) with jaxpool, its test extra (flax, equinox, the compare tool's rich),
# its dev extra (ruff, pyright) and its example extra (the example smoke tests
# run the examples) and the PyTorch CPU oracle.
# torch is pinned to 2.13.0: that version installs a CPU build; an unpinned torch would download
# several GB of CUDA packages. If the pinned build cannot be installed, the torch tests skip.
set -euo pipefail
venv="${1:-.venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e ".[test,dev,examples]"
"$venv/bin/python" -m pip install --quiet "torch==2.13.0" || echo "torch==2.13.0 unavailable: PyTorch parity tests will skip"
