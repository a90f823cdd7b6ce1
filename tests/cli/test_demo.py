"""The README's first command runs the demo; it must work and say what happened."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_the_guides_pop3_scenario() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hashike.cli.demo"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "hashiked: listening on 127.0.0.1 port" in out
    # The POP3 greeting and dialogue came through the tunnel.
    assert "S: +OK POP3 wisdom server ready" in out
    assert "S: +OK maildrop locked and ready" in out
    assert "S: +OK bye" in out
    # The netstat-like table names each connection.
    for role in (
        "the SSH connection (encrypted)",
        "the SSH connection, server end",
        "server's onward connection to POP3",
        "-L listener: the tunnel's entrance",
    ):
        assert role in out, out
    assert "Traceback" not in result.stderr
