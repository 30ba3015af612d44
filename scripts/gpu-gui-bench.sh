#!/usr/bin/env bash
# On the GPU machine (run from the repository root, with .gpu-gui/ from scripts/gpu-gui-pack.sh in the tree):
# the packed build's GPU tests, then `tqstudio --bench-interaction --backend cuda` on the embedded sample and
# on an 8B-shaped 8192-token dump, ROUNDS times, alternating with the packed baseline build when there is one
# (a same-run comparison). Results under OUT (default $OUT or /tmp/tq-gpu-out): gpu_tests.txt, bench.jsonl
# (one line a run: {"run", "rc", "result"}) and errors.txt (the stderr tail of any run that failed).
#   scripts/gpu-gui-bench.sh [ROUNDS]        BASELINE=/tmp/tqgui-base/tqstudio: the baseline from an earlier call
#   BASE_ENV="TQ_X=1 ...": the baseline is the same build run with those variables; DATASETS="l8" (default "sample l8")
# (the archive with a baseline inside can exceed the 64 MiB the device accepts with the tree: unpack the
# baseline's own archive in one call, then run this in the next while the machine is still held)
set -uo pipefail
ROUNDS=${1:-2}
OUT_DIR=${OUT:-/tmp/tq-gpu-out}
mkdir -p "$OUT_DIR"
ROOT=$(pwd)
# the GPU tests find their data under the source path they were built in
SRC=${TQ_BUILD_SOURCE:-/work/main}
[ -e "$SRC" ] || { mkdir -p "$(dirname "$SRC")"; ln -sfn "$ROOT" "$SRC"; }
tar xJf .gpu-gui/tqgui.tar.xz -C /tmp || exit 1
G=/tmp/tqgui
DUMP=/tmp/l8_8k.safetensors
[ -f "$DUMP" ] || python3 tools/synthetic_dump.py "$DUMP" --layers 32 --kv-heads 8 --q-heads 32 --tokens 8192 --head-dim 128 > /dev/null &
if [ -x "$G/tq_gpu_tests" ] && [ -z "${SKIP_TESTS:-}" ]; then
  for t in probe no_device compress_fast compress_generic compress_dense scores values real_data fallback sweep grid; do
    s=$(date +%s%N)
    if [ "$t" = no_device ]; then CUDA_VISIBLE_DEVICES= "$G/tq_gpu_tests" "$t" > /tmp/t.log 2>&1; else "$G/tq_gpu_tests" "$t" > /tmp/t.log 2>&1; fi
    echo "== $t rc=$? $(( ($(date +%s%N) - s) / 1000000 )) ms" >> "$OUT_DIR/gpu_tests.txt"
    tail -3 /tmp/t.log >> "$OUT_DIR/gpu_tests.txt"
  done
fi
wait
# a baseline: packed with the build, or left by an earlier call on this machine (BASELINE=/path/tqstudio)
[ -n "${BASELINE:-}" ] && [ -x "$BASELINE" ] && cp "$BASELINE" "$G/tqstudio-base"
builds=(new)
[ -x "$G/tqstudio-base" ] && builds=(base new)
# BASE_ENV="VAR=1 ...": the baseline is this build with those switches (e.g. the former work paths)
[ -n "${BASE_ENV:-}" ] && builds=(base new)
# ALTSTACK=path/altstack.so (tools/altstack_preload.c): every thread gets an alternate signal stack, so a
# crash report names the thread and its stack even after a stack overflow
[ -n "${ALTSTACK:-}" ] && export LD_PRELOAD=$ALTSTACK
echo "builds: ${builds[*]}" | tee -a "$OUT_DIR/gpu_tests.txt"
for r in $(seq 1 "$ROUNDS"); do
  for b in "${builds[@]}"; do
    flag=(); [ "$b" = base ] && [ -z "${BASE_ENV:-}" ] && flag=(--base)
    envs=(); [ "$b" = base ] && [ -n "${BASE_ENV:-}" ] && read -r -a envs <<< "$BASE_ENV"
    # NEW_ENV="VAR=1 ...": switches for this build's runs (e.g. TQ_CUDA_RESIDENT=1, off by default)
    [ "$b" = new ] && [ -n "${NEW_ENV:-}" ] && read -r -a envs <<< "$NEW_ENV"
    for data in ${DATASETS:-sample l8}; do
      file=(); [ "$data" = l8 ] && file=("$DUMP")
      name=bench_${b}_${data}_$r
      env TQ_TRACE_EXIT=1 "${envs[@]}" "$G/run.sh" "${flag[@]}" "${file[@]}" --bench-interaction --backend cuda > /tmp/$name.json 2> /tmp/$name.err
      rc=$?
      echo "$name rc=$rc"
      python3 -c 'import json,sys; t=open(sys.argv[1]).read(); print(json.dumps({"run": sys.argv[2], "rc": int(sys.argv[3]), "result": json.loads(t) if t.strip() else None}))' \
        /tmp/$name.json "$name" $rc >> "$OUT_DIR/bench.jsonl"
      [ $rc = 0 ] || { echo "== $name rc=$rc"; tail -c 8000 /tmp/$name.err; } >> "$OUT_DIR/errors.txt"
    done
  done
done
# PROFILE_RUN=1: one more run of this build on the dump with TQ_PROFILE=1 (the detail job's steps, the
# GUI thread's handing over and drawing, timestamped), its stderr under OUT as profile_l8.txt
if [ -n "${PROFILE_RUN:-}" ]; then
  read -r -a penvs <<< "${NEW_ENV:-}"
  env "${penvs[@]}" TQ_PROFILE=1 QT_MESSAGE_PATTERN="%{time process} %{message}" "$G/run.sh" "$DUMP" --bench-interaction --backend cuda \
    > "$OUT_DIR/profile_l8.json" 2> /tmp/profile_l8.err
  echo "profile rc=$?"
  grep -E "detail|apply|heat|replot|drawn" /tmp/profile_l8.err | tail -c 400000 > "$OUT_DIR/profile_l8.txt"
fi
