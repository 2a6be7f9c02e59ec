#!/usr/bin/env bash
# Install the Debian packages needed to build and test tlsresume.
#
# Usage: scripts/install-deps.sh [EXTRA_PACKAGE...]
#
# Only missing packages are installed (apt-get update runs only then).
# Prints nothing when everything is already installed.
set -euo pipefail

packages=(
    g++ clang meson ninja-build pkg-config libssl-dev libfmt-dev catch2
    libclang-rt-14-dev python3 openssl
    libasio-dev libboost-dev cmake libhiredis-dev redis-server gnuplot-nox
    "$@"
)

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps: dpkg-query not found (not a Debian system?); skipping package check" >&2
    exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
    [[ -n "$pkg" ]] || continue
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

((${#missing[@]} == 0)) && exit 0

sudo=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "install-deps: need root to install: ${missing[*]} (and sudo is not available)" >&2
        exit 1
    fi
fi

echo "install-deps: installing missing packages: ${missing[*]}" >&2
"${sudo[@]}" apt-get update >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}" >&2
