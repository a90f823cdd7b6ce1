"""The ``hashike`` command against a real OpenSSH sshd: what a user sees."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hashike.keys.keypair import generate_private_key, write_private_key

if TYPE_CHECKING:
    from tests.interop.conftest import SshdServer, StartSshd


def hashike_argv(sshd: SshdServer, known_hosts: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "hashike.cli.client", "-F", "none",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
        "-p", str(sshd.port), *extra,
    ]  # fmt: skip


def run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_unknown_host_key_in_batch_mode_is_refused(start_sshd: StartSshd, tmp_path: Path) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    result = run(hashike_argv(sshd, known, "-i", str(sshd.client_key), f"{sshd.user}@127.0.0.1", "-N"))
    assert result.returncode == 255
    assert result.stderr.endswith("Host key verification failed.\n"), result.stderr
    assert "Traceback" not in result.stderr
    assert not known.exists()


def test_accept_new_then_changed_key(start_sshd: StartSshd, tmp_path: Path) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    argv = hashike_argv(
        sshd, known, "-o", "StrictHostKeyChecking=accept-new", "-i", str(sshd.client_key), "-v"
    )
    proc = subprocess.Popen(
        [*argv, f"{sshd.user}@127.0.0.1", "-N"], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # bounded: until authenticated or 20 s
        line = proc.stderr.readline()
        lines.append(line)
        if "Authenticated to 127.0.0.1" in line or not line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    text = "".join(lines)
    assert (
        f"Warning: Permanently added '[127.0.0.1]:{sshd.port}' (ED25519) to the list of known hosts." in text
    )
    assert 'using "publickey"' in text, text
    assert proc.returncode == 0
    # OpenSSH's ssh accepts the line hashike recorded.
    ok = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(known)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and "ssh-ed25519" in ok.stdout
    # Now the server presents another key: refused loudly.
    other = generate_private_key()
    known.write_text(f"[127.0.0.1]:{sshd.port} {other.public_key.openssh_line()}\n")
    result = run(hashike_argv(sshd, known, "-i", str(sshd.client_key), f"{sshd.user}@127.0.0.1", "-N"))
    assert result.returncode == 255
    assert "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!" in result.stderr
    assert result.stderr.endswith("Host key verification failed.\n")


def test_wrong_key_is_permission_denied(start_sshd: StartSshd, tmp_path: Path) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    stranger = tmp_path / "stranger"
    write_private_key(generate_private_key(), stranger)
    result = run(hashike_argv(sshd, known, "-i", str(stranger), f"{sshd.user}@127.0.0.1", "-N"))
    assert result.returncode == 255
    assert result.stderr == f"{sshd.user}@127.0.0.1: Permission denied (publickey).\n"


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "hashike.cli.client", "-F", "none", "-p", str(port), "127.0.0.1", "-N"]
    result = run(argv)
    assert result.returncode == 255
    assert result.stderr == f"hashike: connect to host 127.0.0.1 port {port}: Connection refused\n"


def test_bad_forward_spec() -> None:
    result = run([sys.executable, "-m", "hashike.cli.client", "-F", "none", "-L", "nonsense", "127.0.0.1"])
    assert result.returncode == 255
    assert result.stderr.strip() == "Bad local forwarding specification 'nonsense'"
