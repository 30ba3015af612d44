#!/usr/bin/env bash
# Installs what TurboQuant Studio needs on Debian 12 (bookworm), only the packages that are missing.
# Runs apt-get as root, or through sudo when not root.
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config
      qt6-base-dev qt6-base-dev-tools qt6-svg-dev libqcustomplot-dev libeigen3-dev
      nlohmann-json3-dev zlib1g-dev libxkbcommon-dev
      fonts-dejavu-core xvfb xauth imagemagick poppler-utils librsvg2-bin)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
python_modules() {
  # The Python dump tools' tests need numpy and safetensors, and gguf + tokenizers for the GGUF dumper's
  # qwen2/llama paths (PyPI), ml_dtypes for the fp8 check of tools/methods_reference.py; failure here only
  # makes those tests skip.
  if command -v python3 >/dev/null && ! python3 -c "import numpy, safetensors, gguf, tokenizers, ml_dtypes" 2>/dev/null; then
    echo "install-deps: installing numpy, safetensors, gguf, tokenizers and ml_dtypes for $(command -v python3)"
    python3 -m pip install --quiet numpy safetensors gguf tokenizers ml_dtypes || echo "install-deps: WARNING: pip install failed; the tools_python test will report SKIP"
  fi
}
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  python_modules
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
python_modules
