#!/usr/bin/env bash
# The explorer on a GPU machine without Qt (issue 9): build the engine, CLI and GPU tests, run the GPU
# tests, then the GUI's fidelity grid (key bits 1-8 x MSE / MSE+QJL / QJL x m in {d/2, d, 2d}, values at
# 4 bits) on an 8B-shaped 8192-token dump through `tqstudio-cli evaluate` with the CUDA and the CPU backend,
# and, when the GUI bundle is in the tree (.gpu-gui/tqgui.tar.xz, made here by
# ../shared/scripts/gui-gpu-bundle.sh from a CUDA build), the GUI's --bench-interaction on the embedded
# sample and on the dump with the CUDA backend.
#   core/cuda/explorer_gpu.sh [OUTDIR]      (Eigen/nlohmann/zlib headers from .devdeps/usr when present)
set -uo pipefail
OUT_DIR=${1:-${OUT:-/tmp/tq-gpu-out}}
mkdir -p "$OUT_DIR"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PREFIX=()
[ -d "$ROOT/.devdeps/usr" ] && PREFIX=(-DCMAKE_PREFIX_PATH="$ROOT/.devdeps/usr")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT_DIR/env.txt"
nproc >> "$OUT_DIR/env.txt"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTQ_BUILD_GUI=OFF -DTQ_BUILD_TESTS=OFF \
  -DCMAKE_CUDA_ARCHITECTURES="${TQ_CUDA_ARCH:-90}" "${PREFIX[@]}" > "$OUT_DIR/build.txt" 2>&1 || { tail -30 "$OUT_DIR/build.txt"; exit 1; }
cmake --build build-gpu -j"$(nproc)" --target tq_gpu_tests tqstudio-cli >> "$OUT_DIR/build.txt" 2>&1 || { grep -E "error" "$OUT_DIR/build.txt" | head -40; exit 1; }
echo "build ok"
ctest --test-dir build-gpu -L gpu -V > /tmp/ctest_verbose.txt 2>&1
{ grep -E "Test +#|tests passed|tests failed|Total Test time" /tmp/ctest_verbose.txt; grep -E "FAIL" /tmp/ctest_verbose.txt | head -20; } | tee "$OUT_DIR/ctest.txt"
grep -E "^ *[0-9]+: (ok|FAIL|grid)" /tmp/ctest_verbose.txt | tail -40 > "$OUT_DIR/ctest_grid_lines.txt"
DUMP=/tmp/l8_8k.safetensors
[ -f "$DUMP" ] || python3 tools/synthetic_dump.py "$DUMP" --layers 32 --kv-heads 8 --q-heads 32 --tokens 8192 --head-dim 128 > /dev/null
GRID=(--key-bits 1,2,3,4,5,6,7,8 --mode mse,prod,qjl --proj-dim 64,128,256 --value-bits 4)
CLI=./build-gpu/app/tqstudio-cli
for b in cuda cpu; do
  extra=()
  [ "$b" = cpu ] && extra=(--sample-cells 32)   # the CPU backend on a sample of the grid (its full grid takes minutes)
  t0=$(date +%s.%N)
  TQ_SWEEP_PROFILE=1 "$CLI" evaluate "$DUMP" "${GRID[@]}" --backend "$b" "${extra[@]}" --json > /tmp/evaluate_$b.json 2> /tmp/evaluate_$b.err
  echo "process $(python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')") s wall" > /tmp/evaluate_$b.time
  cat /tmp/evaluate_$b.err
  python3 - /tmp/evaluate_$b.json /tmp/evaluate_$b.time <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"{j['backend']}: {j['cells_done']}/{j['cells_in_grid']} cells, {len(j['summary'])} variants, sweep {j['seconds']:.2f} s;",
      open(sys.argv[2]).read().strip().splitlines()[-1])
PY
done | tee "$OUT_DIR/evaluate.txt"
if [ -f .gpu-gui/tqgui.tar.xz ]; then
  tar xJf .gpu-gui/tqgui.tar.xz -C /tmp
  for data in sample "$DUMP"; do
    name=$([ "$data" = sample ] && echo sample || echo l8_8k)
    arg=$([ "$data" = sample ] && echo "" || echo "$data")
    timeout 300 /tmp/tqgui/run.sh $arg --bench-interaction --backend cuda > "$OUT_DIR/gui_bench_${name}_cuda.json" 2>> /tmp/gui_bench.err
    tail -5 /tmp/gui_bench.err
    echo "gui bench $name cuda rc=$?"
  done
fi
