#!/usr/bin/env bash
# Fetch, on a machine with network, every wheel scripts/gpu_check.sh installs on a GPU machine that
# has none: CPython 3.12, x86-64, a CUDA build of torch (with numpy) and nvcc already there. Lands in
# an ignored folder (default .gpu-wheels, carried to the device machine: about 43 MB, which with the
# ~11 MB working tree stays under the 64 MiB carry limit). GPU_WHEELS_NUMPY=1 keeps numpy (+16 MB)
# for a machine without it.
#   bash scripts/gpu_wheels.sh [DEST]
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.gpu-wheels}
PYVER=${GPU_PYTHON_VERSION:-3.12}
mkdir -p "$DEST"
python3 -m pip download -q --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$DEST" \
    "diffusers==0.42.1" "transformers==5.24.0" safetensors huggingface_hub tqdm pillow pytest \
    "setuptools>=68" wheel
[ "${GPU_WHEELS_NUMPY:-0}" = 1 ] || rm -f "$DEST"/numpy-*.whl
du -sh "$DEST"
