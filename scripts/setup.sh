#!/usr/bin/env bash
# Installs what fwcfg-e500 needs to run: the Python package and its dependencies.
# Usage: scripts/setup.sh [--test]   (--test adds the test tools, QEMU peers and cross tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
if [[ "${1:-}" == "--test" ]]; then
    extras="[test]"
    pkgs=(qemu-system-arm qemu-system-ppc binutils-powerpc-linux-gnu gcc-powerpc-linux-gnu
          gdb-multiarch device-tree-compiler make cpio)
    missing=()
    for p in "${pkgs[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if (( ${#missing[@]} )); then
        SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
"$PY" -m pip install -q --disable-pip-version-check -e ".${extras}"
# pyenv installs console scripts behind shims that exist only after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
