"""``python -m bench.many_connections`` completes a small burst through every tunnel.

A smoke test of the benchmark's plumbing (-L, -R, and -D with its SOCKS5
CONNECT per connection), on 5 connections of 1 KiB; its numbers are never
compared with anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.conftest import require_openssh

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


def test_five_connections_through_every_mode_and_pairing() -> None:
    require_openssh("ssh", "sshd")
    argv = ["--connections", "5", "--size", "1K", "--runs", "1", "--json", "--quiet"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.many_connections", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    summaries = {(s["mode"], s["pairing"]): s for s in report["summary"]}
    pairings = {"hashike → hashiked", "hashike → sshd", "ssh → hashiked", "ssh → sshd"}
    assert set(summaries) == {(m, p) for m in "LRD" for p in pairings} | {("none", "direct (no tunnel)")}
    for key, s in summaries.items():
        assert s["error"] is None, (key, s["error"])
        assert s["runs"] == 1 and s["failures"] == 0, (key, s)
        assert s["p99_ms"] is not None, (key, s)
        assert (s["ratio_p99"] is None) == (key[0] == "none"), (key, s)  # the floor has no ssh → sshd
    assert all(summaries[(m, "ssh → sshd")]["ratio_seconds"] == 1.0 for m in "LRD")
    bursts = report["burst"]
    assert len(bursts) == 13 and all(b["connections"] == 5 and b["failures"] == 0 for b in bursts)
