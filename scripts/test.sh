#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/install.sh), then
# runs pytest with any arguments given, e.g. `bash scripts/test.sh tests/proto -q`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh

# OpenSSH was just installed, so interop tests must run, never skip.
export HASHIKE_REQUIRE_INTEROP="${HASHIKE_REQUIRE_INTEROP:-1}"

# pytest's own exit codes stand, 5 (no tests collected) included: any
# non-zero status is a failure.
exec .venv/bin/pytest "$@"
