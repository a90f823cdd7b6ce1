"""The README's first command runs the demo; it must work and say what happened."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_and_reaches_userauth() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hashike.cli.demo"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "hashiked listening on 127.0.0.1 port" in out
    assert "kex: mlkem768x25519-sha256" in out
    assert "the ssh-userauth service was accepted" in out
    # OpenSSH's ssh is installed wherever the tests run (scripts/install.sh).
    assert "SSH2_MSG_SERVICE_ACCEPT received" in out
    assert "Traceback" not in result.stderr
