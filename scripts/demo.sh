#!/usr/bin/env bash
# The README's first command: install hashike (scripts/install.sh), then run
# the demo on loopback: hashiked on a free port, a handshake against it with
# hashike's client and with OpenSSH's ssh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh
exec .venv/bin/python -m hashike.cli.demo
