#!/usr/bin/env bash
# Create .venv (if missing) and install l2s, the shapes world (shapes/) and the CPU test environment into it.
# CUDA kernels are built too when nvcc is found (L2S_CUDA=0 to skip, =1 to require).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# torch==2.13.0 is the CPU build on these machines; other versions pull multi-GB CUDA wheels.
.venv/bin/python -m pip install -q "torch==2.13.0" numpy pytest safetensors tqdm \
    "diffusers==0.42.1" "transformers==5.24.0" pillow "matplotlib==3.11.2" \
    "nbclient==0.11.0" "nbformat==5.11.1" "ipykernel==7.4.0" "ipywidgets==8.1.9" "nbmake==1.5.5" \
    "accelerate==1.15.0"
# the web app and its browser test: gradio, Playwright (driving Debian's chromium, not a downloaded one)
.venv/bin/python -m pip install -q "gradio==6.31.0" "playwright==1.65.2"
if ! command -v chromium > /dev/null && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null) \
        || echo "install.sh: chromium could not be installed: the app's browser test will be skipped" >&2
fi
.venv/bin/python -m pip install -q --no-build-isolation -e .
# the shapes world (its own distribution, optional for the library; the README's main command uses it)
.venv/bin/python -m pip install -q --no-build-isolation -e ./shapes
.venv/bin/python -m l2s info
