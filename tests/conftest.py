"""Fixtures shared across the test tree."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[str]:
    """OpenSSH's ssh-agent on a private socket; yields the socket path once
    the agent accepts connections (the socket file exists a moment before)."""
    path = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # bounded by the deadline
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("ssh-agent did not start") from None
                time.sleep(0.01)
        yield path
    finally:
        proc.terminate()
        proc.wait(10)
