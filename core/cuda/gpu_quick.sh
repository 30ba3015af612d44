#!/usr/bin/env bash
# Device-machine helper for kernel work: build (Release, sm_90, no Qt), run the GPU tests, optionally the
# benchmark with the given arguments, and record SASS instruction counts of selected kernels.
#   core/cuda/gpu_quick.sh OUTDIR [bench args...]      (TQ_SASS_FILTER=regex to list kernels' SASS mix)
set -uo pipefail
OUT_DIR=${1:?OUTDIR}
shift
bash "$(dirname "$0")/run_on_gpu.sh" "$OUT_DIR" "$@"
if [ -n "${TQ_SASS_FILTER:-}" ]; then
  for o in build-gpu/core/cuda/CMakeFiles/tq_cuda_kernels.dir/*.cu.o; do
    cuobjdump -res-usage "$o" 2>/dev/null | grep -A1 -E "$TQ_SASS_FILTER" >> "$OUT_DIR/resources.txt"
  done
  echo "--- registers/spills of matching kernels:"; grep -A1 -E "$TQ_SASS_FILTER" "$OUT_DIR/resources.txt" | grep -oE "(Function [^:]+|REG:[0-9]+|STACK:[0-9]+|SHARED:[0-9]+|LOCAL:[0-9]+)" | paste -sd' ' | sed 's/Function/\nFunction/g' | cut -c1-220
fi
