#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/install.sh), then
# runs pytest with any arguments given, e.g. `bash scripts/test.sh tests/proto -q`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh

# OpenSSH was just installed, so interop tests must run, never skip.
export HASHIKE_REQUIRE_INTEROP="${HASHIKE_REQUIRE_INTEROP:-1}"

# pytest's own exit codes stand, 5 (no tests collected) included: any
# non-zero status is a failure. A test that hangs past its timeout ends the
# run through tests/conftest.py's watchdog, which leaves every thread's stack
# in this file; it is printed here, then the status stands.
export HASHIKE_WATCHDOG_LOG="$PWD/.pytest-watchdog.log"
rm -f "$HASHIKE_WATCHDOG_LOG"
status=0
.venv/bin/pytest "$@" || status=$?
if [ -s "$HASHIKE_WATCHDOG_LOG" ]; then
    cat "$HASHIKE_WATCHDOG_LOG" >&2
fi
exit "$status"
