#!/usr/bin/env bash
# The evaluation-sweep target end to end as a user runs it, on a GPU machine without Qt:
# writes a synthetic tq-kvdump/1 file (tools/synthetic_dump.py), then times `tqstudio-cli evaluate` on it
# with the CUDA backend (full grid) and with the CPU backend (first LAYERS_CPU layers, for a baseline).
#   core/cuda/sweep_e2e.sh OUTDIR [LAYERS_CPU]
set -uo pipefail
OUT_DIR=${1:?OUTDIR}
LAYERS_CPU=${2:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PREFIX=()
[ -d "$ROOT/.devdeps/usr" ] && PREFIX=(-DCMAKE_PREFIX_PATH="$ROOT/.devdeps/usr")
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTQ_BUILD_GUI=OFF -DTQ_BUILD_TESTS=OFF \
  -DCMAKE_CUDA_ARCHITECTURES="${TQ_CUDA_ARCH:-90}" "${PREFIX[@]}" > "$OUT_DIR/e2e_build.txt" 2>&1 || { tail -20 "$OUT_DIR/e2e_build.txt"; exit 1; }
cmake --build build-gpu -j"$(nproc)" --target tqstudio-cli >> "$OUT_DIR/e2e_build.txt" 2>&1 || { grep -E "error" "$OUT_DIR/e2e_build.txt" | head; exit 1; }
DUMP=${TQ_E2E_DUMP:-/tmp/tq_synth_32x8x8192.safetensors}
[ -f "$DUMP" ] || python3 tools/synthetic_dump.py "$DUMP" --layers 32 --kv-heads 8 --q-heads 8 --tokens 8192 --head-dim 128 || exit 1
CLI=build-gpu/app/tqstudio-cli
GRID=(--key-bits 1,2,3,4 --mode mse,prod --proj-dim 32,64,128 --value-bits 3 --rotation hadamard --max-queries 32)
$CLI info "$DUMP" | head -5
for run in 1 2; do
  TQ_SWEEP_PROFILE=1 /usr/bin/time -f "wall %e s, max RSS %M KiB" $CLI evaluate "$DUMP" "${GRID[@]}" --backend cuda --json > "$OUT_DIR/e2e_cuda_$run.json" 2> "$OUT_DIR/e2e_cuda_$run.err"
  grep "runSweep profile" "$OUT_DIR/e2e_cuda_$run.err"
  echo "cuda run $run: rc=$? $(tail -1 "$OUT_DIR/e2e_cuda_$run.err")"
done
LAYERS=$(seq -s, 0 $((LAYERS_CPU - 1)))
/usr/bin/time -f "wall %e s, max RSS %M KiB" $CLI evaluate "$DUMP" "${GRID[@]}" --layers "$LAYERS" --backend cpu --json > "$OUT_DIR/e2e_cpu.json" 2> "$OUT_DIR/e2e_cpu.err"
echo "cpu ($LAYERS_CPU layers): rc=$? $(tail -1 "$OUT_DIR/e2e_cpu.err")"
/usr/bin/time -f "wall %e s, max RSS %M KiB" $CLI evaluate "$DUMP" "${GRID[@]}" --layers "$LAYERS" --backend cuda --json > "$OUT_DIR/e2e_cuda_sub.json" 2> "$OUT_DIR/e2e_cuda_sub.err"
echo "cuda ($LAYERS_CPU layers): rc=$? $(tail -1 "$OUT_DIR/e2e_cuda_sub.err")"
python3 - "$OUT_DIR" <<'PY'
import json, sys, os
d = sys.argv[1]
def load(n):
    with open(os.path.join(d, n)) as f:
        return json.load(f)
for n in ("e2e_cuda_1.json", "e2e_cuda_2.json", "e2e_cpu.json", "e2e_cuda_sub.json"):
    j = load(n)
    keys = [k for k in j if k not in ("summary", "per_head")]
    print(n, {k: j[k] for k in keys if not isinstance(j[k], (list, dict))})
a, b = load("e2e_cpu.json")["summary"], load("e2e_cuda_sub.json")["summary"]
worst = {}
for x, y in zip(a, b):
    for k, v in x.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            e = abs(v - y[k]) / max(1e-3, abs(v))
            worst[k] = max(worst.get(k, 0), e)
print("CPU vs CUDA summary rows:", len(a), len(b), "worst relative differences:", {k: float(f"{v:.2e}") for k, v in worst.items()})
PY
