#!/usr/bin/env bash
# Packs the GUI built here with CUDA (Debian 12, archs including 90) with the Qt runtime it needs, for a GPU
# machine without Qt or fonts (the H200 machine: Ubuntu 24.04, CUDA 13), plus what scripts/gpu-gui-bench.sh
# runs there: the GPU tests of the same build and, optionally, a baseline tqstudio for a same-run comparison.
#   scripts/gpu-gui-pack.sh BUILD_DIR [OUT_DIR] [BASELINE_TQSTUDIO]      (OUT_DIR default: .gpu-gui)
# OUT_DIR/tqgui.tar.xz holds tqgui/{run.sh,tqstudio,[tqstudio-base],[tq_gpu_tests],[tqstudio-cli],lib,plugins,fonts};
# keep OUT_DIR out of git (.git/info/exclude) and send it along (device carry) with the tree, which must stay
# under 64 MiB in all (the archive is ~35 MB; ~40 MB with a baseline).
set -euo pipefail
BUILD=${1:?usage: gpu-gui-pack.sh BUILD_DIR [OUT_DIR] [BASELINE_TQSTUDIO]}
OUTD=${2:-.gpu-gui}
BASE=${3:-}
GUI=$(find "$BUILD" -type f -name tqstudio -perm -u+x | head -1)
TESTS=$(find "$BUILD" -type f -name tq_gpu_tests -perm -u+x | head -1)
# WITH_CLI=1: tqstudio-cli too (~12 MB more in the archive: with the tree it may pass the 64 MiB limit)
CLI=; [ -n "${WITH_CLI:-}" ] && CLI=$(find "$BUILD" -type f -name tqstudio-cli -perm -u+x | head -1)
[ -n "$GUI" ] || { echo "gpu-gui-pack.sh: no tqstudio under $BUILD" >&2; exit 2; }
T=$(mktemp -d)
B=$T/tqgui
mkdir -p "$B/lib" "$B/plugins/platforms" "$B/fonts"
strip -o "$B/tqstudio" "$GUI"
[ -n "$BASE" ] && strip -o "$B/tqstudio-base" "$BASE"
[ -n "$TESTS" ] && strip -o "$B/tq_gpu_tests" "$TESTS"
if [ -n "$CLI" ]; then strip -o "$B/tqstudio-cli" "$CLI"; fi
plugins=$(dirname "$(ldd "$GUI" | awk '/libQt6Core/ {print $3}')")/qt6/plugins
cp "$plugins/platforms/libqoffscreen.so" "$B/plugins/platforms/"
# every shared library but glibc's, the C++/GCC runtime and CUDA's (the GPU machine has its own)
{ ldd "$GUI"; ldd "$B/plugins/platforms/libqoffscreen.so"; if [ -n "$CLI" ]; then ldd "$CLI"; fi; } | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|libgomp)\.so|ld-linux|/cuda|libcuda|libcublas|libcudart' |
  xargs -r -I{} cp -L {} "$B/lib/"
cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf "$B/fonts/"
cat > "$B/run.sh" <<'SH'
#!/usr/bin/env bash
# run.sh [--base|--cli] ARGS: tqstudio (or the baseline build, or tqstudio-cli) offscreen with the packed Qt and fonts
G=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export QT_PLUGIN_PATH=$G/plugins QT_QPA_PLATFORM=offscreen
printf '<?xml version="1.0"?>\n<fontconfig><dir>%s</dir><cachedir>/tmp/tqgui-fccache</cachedir></fontconfig>\n' "$G/fonts" > /tmp/tqgui-fonts.conf
export FONTCONFIG_FILE=/tmp/tqgui-fonts.conf XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/tqgui-xdg}
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
BIN=$G/tqstudio
if [ "${1:-}" = "--base" ]; then BIN=$G/tqstudio-base; shift; fi
if [ "${1:-}" = "--cli" ]; then BIN=$G/tqstudio-cli; shift; fi
exec "$BIN" "$@"
SH
chmod +x "$B/run.sh"
mkdir -p "$OUTD"
tar cJf "$OUTD/tqgui.tar.xz" -C "$T" tqgui
rm -rf "$T"
ls -la "$OUTD/tqgui.tar.xz"
