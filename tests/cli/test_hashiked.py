"""hashiked's command line: startup errors are one line and exit status 255."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from hashike.keys.keypair import generate_private_key, write_private_key


def run_hashiked(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hashike.cli.server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def host_key(tmp_path: Path) -> str:
    path = tmp_path / "host_key"
    write_private_key(generate_private_key("ssh-ed25519"), path)
    return str(path)


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_hashiked("-p", str(port), "-h", host_key(tmp_path), "-o", "ListenAddress=127.0.0.1")
    assert result.returncode == 255
    assert (
        result.stderr.strip() == f"hashiked: Bind to port {port} on 127.0.0.1 failed: Address already in use."
    )


def test_unreadable_host_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = run_hashiked("-p", "0", "-h", str(missing))
    assert result.returncode == 255
    assert (
        result.stderr.strip()
        == f'hashiked: Unable to load host key: Load key "{missing}": No such file or directory'
    )


def test_garbage_host_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("not a key\n")
    result = run_hashiked("-p", "0", "-h", str(bad))
    assert result.returncode == 255
    assert "invalid format" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_option(tmp_path: Path) -> None:
    result = run_hashiked("-o", "Frobnicate=yes")
    assert result.returncode == 255
    assert result.stderr.strip() == "hashiked: command-line line 0: Bad configuration option: Frobnicate"


def test_privileged_port_without_the_capability(tmp_path: Path) -> None:
    """As root the bind would succeed, so drop CAP_NET_BIND_SERVICE (and only
    that: files stay readable) the way an ordinary user lacks it."""
    argv = [sys.executable, "-m", "hashike.cli.server", "-p", "23", "-h", host_key(tmp_path)]
    argv += ["-o", "ListenAddress=127.0.0.1"]
    if os.geteuid() == 0:
        argv = ["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert result.returncode == 255, result.stderr
    assert result.stderr.startswith("hashiked: Bind to port 23 on 127.0.0.1 failed: Permission denied.")
    assert "use a port of 1024 or more" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_reads_well() -> None:
    result = run_hashiked("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: hashiked [-d] [-f config_file] [-h host_key_file]")
