#!/usr/bin/env bash
# Installs what hashike's tests need: OpenSSH (client and server, for the
# interop tests), tmux, curl and putty-tools from Debian's packages, and
# .venv with hashike and its dev tools. Safe to run again: each step is
# skipped when already done.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null; then
            echo "install.sh: need root (or sudo) to install Debian packages: $*" >&2
            exit 1
        fi
        sudo=(sudo -n)
    fi
    echo "install.sh: apt-get install $*"
    "${sudo[@]}" apt-get update -qq </dev/null
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# 1. OpenSSH, which the interop tests drive, and tmux, curl and PuTTY's
# command-line tools, which CI must have for the tests that drive them.
missing=()
for pkg in openssh-server openssh-client tmux curl putty-tools; do
    installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# 2. The virtualenv, reinstalled only when pyproject.toml changed.
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: hashike needs Python >= 3.11; $PYTHON is $("$PYTHON" -V 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        # Debian's own python3 ships venv separately.
        apt_install "python3-venv"
    fi
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.hashike-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" >"$stamp"
fi
