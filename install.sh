#!/usr/bin/env bash
# Install pivq and its dependencies into ./.venv (idempotent: a second run only checks).
#   PYTHON=python3.11 bash install.sh       choose the interpreter
#   TORCH="torch==2.14.1 torchvision==0.29.1"   the torch build to install first (a CUDA build from PyPI
#                                               by default; pass a CPU or other build for your machine)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-"torch==2.14.1 torchvision==0.29.1"}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first, pinned: an unpinned torch pulled in by another package would fetch the newest CUDA build
.venv/bin/pip install -q --disable-pip-version-check $TORCH
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
echo "pivq installed in $(pwd)/.venv: activate it with '. .venv/bin/activate'"
