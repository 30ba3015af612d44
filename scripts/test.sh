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
