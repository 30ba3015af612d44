#!/usr/bin/env bash
# Installs what is missing, builds everything with warnings as errors, runs every test (ctest).
# GPU tests are labelled `gpu` and skip when no CUDA device is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD=${BUILD_DIR:-build/ci}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTQ_WERROR=ON
cmake --build "$BUILD" -j "$JOBS"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}
mkdir -p -m 0700 "$XDG_RUNTIME_DIR"
ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS"

# The engine, readers and CLI again under AddressSanitizer + UndefinedBehaviorSanitizer (preset asan: -O1,
# GUI and CUDA off); every report aborts the test that triggered it. TQ_SKIP_ASAN=1 skips this part.
if [ "${TQ_SKIP_ASAN:-0}" != "1" ]; then
  ASAN_BUILD=${ASAN_BUILD_DIR:-build/asan}
  cmake --preset asan -B "$ASAN_BUILD" -DTQ_WERROR=ON
  cmake --build "$ASAN_BUILD" -j "$JOBS"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$ASAN_BUILD" --output-on-failure -j "$JOBS"
fi
