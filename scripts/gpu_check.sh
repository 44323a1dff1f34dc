#!/usr/bin/env bash
# One command for a GPU machine (Python 3.12, a CUDA build of torch, nvcc, no network): install the
# carried wheels (scripts/gpu_wheels.sh, run beforehand where there is network), build l2s._C with its
# CUDA kernels, run the CUDA tests with L2S_REQUIRE_CUDA=1 (a skip is a failure), compute-sanitizer
# on a short subset if it is there, the kernel benchmark and the steered/vanilla wall time on the
# SD 1.4 architecture, and write one summary. Each step has its own time limit and its failure is
# recorded, not fatal, so one broken step does not lose the others. About 6-8 minutes on an H200.
#   bash scripts/gpu_check.sh [OUT_DIR]          (default: $OUT if set, else gpu-check-out)
# Device tool: run(command="bash scripts/gpu_check.sh", carry=[".gpu-wheels"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu-check-out}}
PY=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-.gpu-wheels}
mkdir -p "$OUT_DIR"
LOGS=$(mktemp -d)                       # per-step logs; only three files go to OUT_DIR (the device
SUMMARY="$OUT_DIR/gpu_check.md"         # tool brings back at most 8)
: > "$LOGS/steps.tsv"
export PYTHONUNBUFFERED=1

step() {   # step NAME SECONDS COMMAND...: run with a time limit, keep its log, record status and seconds
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$LOGS/steps.tsv"
    printf '%-16s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - t0))"
    { echo "===== $name (exit $rc, $((SECONDS - t0)) s)"; cat "$LOGS/$name.log"; } >> "$OUT_DIR/gpu_check.log"
    return 0
}
: > "$OUT_DIR/gpu_check.log"

step environment 60 bash -c "$PY -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available())'; nvcc --version | tail -2; nvidia-smi -L; nvidia-smi --query-gpu=driver_version,memory.total --format=csv"
if [ -d "$WHEELS" ]; then
    step install 240 "$PY" -m pip install -q --no-index --find-links "$WHEELS" "diffusers==0.42.1" "transformers==5.24.0" \
        safetensors huggingface_hub tqdm pillow pytest setuptools wheel
else
    echo "no $WHEELS folder: run scripts/gpu_wheels.sh where there is network and carry it" >> "$OUT_DIR/gpu_check.log"
    printf 'install\tskipped\t0\n' >> "$LOGS/steps.tsv"
fi
# sm_90 only: the device is a Hopper; the default list (sm_80, sm_90, compute_90) takes longer to build
step build 300 env L2S_CUDA=1 L2S_CUDA_ARCHS="${L2S_CUDA_ARCHS:--gencode=arch=compute_90,code=sm_90}" \
    "$PY" -m pip install -q --no-build-isolation --no-deps -e .
step shapes 60 "$PY" -m pip install -q --no-build-isolation --no-deps -e ./shapes
step info 60 "$PY" -m l2s info
step cuda_tests 300 env L2S_REQUIRE_CUDA=1 "$PY" -m pytest -q -x tests/test_cuda.py tests/test_steer.py -k cuda
if command -v compute-sanitizer > /dev/null; then
    step memcheck 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" -m pytest -q -x tests/test_cuda.py -k "maps or latent"
    step racecheck 240 compute-sanitizer --tool racecheck --error-exitcode 9 "$PY" -m pytest -q -x tests/test_cuda.py -k "maps"
fi
step bench_core 240 "$PY" benchmarks/bench_core.py --device cuda
step bench_core_tiled 240 env L2S_ATTN_KERNEL=tiled "$PY" benchmarks/bench_core.py --device cuda   # decides the default
step bench_steer 300 "$PY" benchmarks/bench_steer.py --model sd14 --size 512 --steps 10 --device cuda --dtype float16

{
    echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "| step | exit status | seconds |"
    echo "|---|---|---|"
    awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3}' "$LOGS/steps.tsv"
    for name in environment info cuda_tests bench_core bench_core_tiled bench_steer; do
        [ -f "$LOGS/$name.log" ] || continue
        echo; echo "## $name"; echo; echo '```'; tail -n 40 "$LOGS/$name.log"; echo '```'
    done
} > "$SUMMARY"
"$PY" - "$LOGS/steps.tsv" "$OUT_DIR/gpu_check.json" <<'PYEOF'
import json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
json.dump({"steps": [{"step": n, "exit": rc, "seconds": int(s)} for n, rc, s in rows]}, open(sys.argv[2], "w"), indent=1)
PYEOF
echo "summary: $SUMMARY (full log: $OUT_DIR/gpu_check.log)"
awk -F'\t' '$2 != 0 && $2 != "skipped" {bad = 1} END {exit bad}' "$LOGS/steps.tsv"
