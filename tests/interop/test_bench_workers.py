"""``python -m bench.workers`` completes and reports every server's figures.

A smoke test of the benchmark's plumbing (tunnels, sink, /proc readings), on
1 MiB per stream; its numbers are never compared with anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.conftest import require_openssh

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


def test_two_streams_against_hashiked_workers_and_sshd() -> None:
    require_openssh("ssh", "sshd")
    argv = ["--mib", "1", "--streams", "2", "--workers", "2", "--json", "--quiet"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.workers", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    results = {r["server"]: r for r in report["results"]}
    assert set(results) == {"hashiked Workers 2", "sshd"}
    for name, r in results.items():
        assert r["error"] is None, (name, r["error"])
        assert len(r["runs_mbps"]) == 1 and r["mbps"] > 0, (name, r)
        assert r["server_cpu_s_per_gib"] is not None, (name, r)
        assert r["server_faults_per_gib"] is not None, (name, r)
        assert sum(r["connections"].values()) == 2, (name, r["connections"])
        assert set(r["per_connection_kib"]) == {u for u, n in r["connections"].items() if n}, (name, r)
        assert all(kib > 0 for kib in r["peak_rss_kib"].values()), (name, r)
    assert set(results["hashiked Workers 2"]["process_cpu_s"]) == {"supervisor", "worker 1", "worker 2"}
    assert results["sshd"]["ratio"] == 1.0
