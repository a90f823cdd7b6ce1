"""The ``hashike`` command against a ``hashiked`` whose host key is not the one
in known_hosts, under StrictHostKeyChecking=no: ssh goes on then, but with no
password sent and no forwarding (sshconnect.c, check_host_key)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashike.keys.keypair import generate_private_key, write_private_key
from tests.interop.test_forward_openssh_to_hashiked import Hashiked, start_hashiked

DEADLINE = 30.0
WARNING = "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!"
PORT_FORWARDING = "Port forwarding is disabled to avoid man-in-the-middle attacks.\n"
# A program the session runs on the server (this machine): can it reach the client's -L port?
PROBE = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10).close()
    print("connected")
except ConnectionRefusedError:
    print("refused")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[tuple[Hashiked, Path, Path]]:
    """A hashiked, the client key it accepts, and a known_hosts naming another key for it."""
    host_key, client_key = tmp_path / "host_key", tmp_path / "id_ed25519"
    write_private_key(generate_private_key(), host_key)
    user = generate_private_key()
    write_private_key(user, client_key)
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(user.public_key.openssh_line() + "\n")
    server = start_hashiked(tmp_path / "hashiked", host_key, authorized)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {generate_private_key().public_key.openssh_line()}\n")
    try:
        yield server, client_key, known
    finally:
        server.stop()


def hashike(server: Hashiked, key: Path, known: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "hashike.cli.client", "-F", "none",
        "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=no", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
        "-i", str(key), "-p", str(server.port), *extra,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)


def test_changed_host_key_binds_no_local_forward(
    impostor: tuple[Hashiked, Path, Path], tmp_path: Path
) -> None:
    # Issue 13, defect 7: hashike bound every -L, and the impostor got the data.
    server, key, known = impostor
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    port = free_port()
    result = hashike(
        server, key, known, "-L", f"{port}:127.0.0.1:9", "127.0.0.1", sys.executable, str(probe), str(port)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "refused\n"  # the session ran, and nothing listened on the -L port
    assert WARNING in result.stderr
    assert (
        "Password authentication is disabled to avoid man-in-the-middle attacks.\n"
        "Keyboard-interactive authentication is disabled to avoid man-in-the-middle attacks.\n"
        + PORT_FORWARDING
    ) in result.stderr
    server.assert_healthy()


def test_changed_host_key_with_exit_on_forward_failure_ends_the_connection(
    impostor: tuple[Hashiked, Path, Path],
) -> None:
    server, key, known = impostor
    port = free_port()
    result = hashike(
        server, key, known, "-o", "ExitOnForwardFailure=yes", "-L", f"{port}:127.0.0.1:9", "127.0.0.1", "true"
    )
    assert result.returncode == 255
    assert WARNING in result.stderr
    assert result.stderr.endswith(
        PORT_FORWARDING + "Error: forwarding disabled due to host key check failure\n"
    )


def test_changed_host_key_without_forwards_says_nothing_of_them(
    impostor: tuple[Hashiked, Path, Path],
) -> None:
    server, key, known = impostor
    result = hashike(server, key, known, "-o", "PasswordAuthentication=no", "127.0.0.1", "echo", "ran")
    assert (result.returncode, result.stdout) == (0, "ran\n"), result.stderr
    assert "Keyboard-interactive authentication is disabled" in result.stderr
    assert "Password authentication is disabled" not in result.stderr  # it was off already (ssh)
    assert "forwarding" not in result.stderr
