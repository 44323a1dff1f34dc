#!/usr/bin/env bash
# Build _l2s (CPU only) with AddressSanitizer + UndefinedBehaviorSanitizer into a scratch folder and
# run the seeded fuzz and the boundary reproducers against it. Any sanitizer report fails the run.
#   bash scripts/sanitize.sh [CALLS]        (default 3000 fuzz calls)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${L2S_SANITIZE_DIR:-$(mktemp -d)}
CALLS=${1:-3000}
mkdir -p "$OUT"
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
CFLAGS="$FLAGS" LDFLAGS="-fsanitize=address,undefined" L2S_CUDA=0 \
    "$PY" setup.py -q build_ext --build-lib "$OUT/lib" --build-temp "$OUT/tmp" >"$OUT/build.log" 2>&1
LIBASAN=$(gcc -print-file-name=libasan.so)
LIBUBSAN=$(gcc -print-file-name=libubsan.so)
run() {
    LD_PRELOAD="$LIBASAN $LIBUBSAN" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PYTHONPATH="$OUT/lib:$PWD:$PWD/tests" "$PY" "$@"
}
run tests/fuzz_core.py --calls "$CALLS" --seed 0
run tests/fuzz_core.py --calls "$CALLS" --seed 1
run tests/reproducers.py
echo "sanitizers: clean"
