#!/usr/bin/env bash
# Configure, build and test the CUDA backend on a GPU machine without Qt, then run the benchmark.
#   core/cuda/run_on_gpu.sh [OUTDIR] [bench args...]
# Uses Eigen / nlohmann_json / zlib from the system, or from .devdeps/usr when that folder exists
# (a copy of the headers for machines that have none). Results: OUTDIR/{ctest.txt,bench.json,bench.txt,build.txt}.
set -uo pipefail
OUT_DIR=${1:-${OUT:-/tmp/tq-gpu-out}}
shift || true
mkdir -p "$OUT_DIR"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PREFIX=()
[ -d "$ROOT/.devdeps/usr" ] && PREFIX=(-DCMAKE_PREFIX_PATH="$ROOT/.devdeps/usr")
ARCH=${TQ_CUDA_ARCH:-90}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  nvcc --version | tail -2
  cmake --version | head -1
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTQ_BUILD_GUI=OFF -DTQ_BUILD_TESTS=OFF \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCH" "${PREFIX[@]}" > "$OUT_DIR/build.txt" 2>&1 || { tail -30 "$OUT_DIR/build.txt"; exit 1; }
cmake --build build-gpu -j"$(nproc)" --target tq_gpu_tests tq_cuda_bench >> "$OUT_DIR/build.txt" 2>&1 || { grep -E "error|Error" "$OUT_DIR/build.txt" | head -40; exit 1; }
echo "build ok"
ctest --test-dir build-gpu -L gpu -V > "$OUT_DIR/ctest_verbose.txt" 2>&1
grep -E "Test +#|tests passed|tests failed|Skipped|Total Test time" "$OUT_DIR/ctest_verbose.txt" | tee "$OUT_DIR/ctest.txt"
grep -E "FAIL|ties|sign errors" "$OUT_DIR/ctest_verbose.txt" | grep -v "ok  .*code errors 0 .*sign errors 0 (ties 0" | head -40
./build-gpu/bench/tq_cuda_bench "$@" > "$OUT_DIR/bench.json" 2> "$OUT_DIR/bench.txt"
echo "bench rc=$?"
cat "$OUT_DIR/bench.txt"
