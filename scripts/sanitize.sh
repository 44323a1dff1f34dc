#!/usr/bin/env bash
# Build l2s._C (CPU only) with AddressSanitizer + UndefinedBehaviorSanitizer into a scratch folder and
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
# the built l2s/_C must come with its package (a bare l2s/ folder first on the path would lose to the
# source tree's package, and with it its uninstrumented _C)
find l2s -name '*.py' -exec cp --parents {} "$OUT/lib/" \;
LIBASAN=$(gcc -print-file-name=libasan.so)
LIBUBSAN=$(gcc -print-file-name=libubsan.so)
ROOT=$PWD
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
run() {    # from $OUT: the current folder comes first on sys.path and must not be the source tree
    cd "$OUT" && LD_PRELOAD="$LIBASAN $LIBUBSAN" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PYTHONPATH="$OUT/lib:$ROOT/tests" "$PY" "$@"; cd "$ROOT"
}
run -c "import sys, l2s._C as c; assert c.__file__.startswith(sys.argv[1]), c.__file__" "$OUT/lib"
run "$ROOT"/tests/fuzz_core.py --calls "$CALLS" --seed 0
run "$ROOT"/tests/fuzz_core.py --calls "$CALLS" --seed 1
run "$ROOT"/tests/reproducers.py
echo "sanitizers: clean"
