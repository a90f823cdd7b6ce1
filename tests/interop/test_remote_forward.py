"""-R against OpenSSH, both directions, and a remote-policy matrix.

Three pairings carry the guide's POP3 dialogue through a remote forward:
the ``hashike`` command to ``hashiked``, OpenSSH's ``ssh`` to ``hashiked`` and
the ``hashike`` command to OpenSSH's ``sshd``; each once with a fixed port
and once with port 0, where the port the client prints (``Allocated port N
for remote forward to host:port``) is the one that answers.

The matrix, in the style of OpenSSH's regress/forward-control.sh, crosses
GatewayPorts with the bind address, PermitListen, ``permitlisten=`` and
AllowTcpForwarding. The expected outcome (refused, or the addresses the
listener answers on) is written here from sshd_config(5); every case runs
with both clients (ssh and the hashike command) against hashiked, and with
ssh against sshd too, which checks the oracle against sshd itself.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.cli.pop3 import start_pop3
from tests.interop.conftest import free_port
from tests.interop.test_forward_openssh_to_hashiked import (
    DEADLINE,
    INTEGRITY_MIB,
    BackgroundLoop,
    FarSide,
    SshProcess,
    echo_digest_server,
    keygen,
    pop3_dialogue,
    public_line,
    server_port,
    start_hashiked,
    upload_and_echo,
)

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient, StartSshd

ALLOCATED = re.compile(r"Allocated port (\d+) for remote forward to 127\.0\.0\.1:(\d+)")


@dataclass
class Server:
    """Where a client logs in: port, user key, and a known_hosts file for it."""

    port: int
    key: Path
    known_hosts: Path


@pytest.fixture(scope="module")
def background() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(scope="module")
def pop3_port(background: BackgroundLoop) -> int:
    return background.run(start_pop3()).port


def hashiked_server(tmp_path: Path, key_options: str = "", *options: str) -> tuple[Server, object]:
    host_key = keygen(tmp_path / "host_ed25519")
    client_key = keygen(tmp_path / "id_ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(f"{key_options + ' ' if key_options else ''}{public_line(client_key)}\n")
    daemon = start_hashiked(tmp_path, host_key, authorized, *options)
    known = tmp_path / "known_hosts"
    known.write_text(daemon.known_hosts_line() + "\n")
    return Server(daemon.port, client_key, known), daemon


def hashike_argv(server: Server, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "hashike.cli.client", "-F", "none", "-N",
        "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
        "-i", str(server.key), "-p", str(server.port), *args, "127.0.0.1",
    ]  # fmt: skip


def ssh_argv(ssh: SshClient, server: Server, *args: str) -> list[str]:
    return ssh.argv(server.port, identity=server.key, args=["-N", *args])


start = SshProcess.start  # what the tests that build on these import


def allocated_port(client: SshProcess, target: int) -> int:
    """The port the client printed for its -R 0 to ``target``."""
    assert client.wait_for(ALLOCATED.pattern), client.stderr
    match = ALLOCATED.search(client.stderr)
    assert match is not None and int(match.group(2)) == target, client.stderr
    return int(match.group(1))


def answers(port: int, host: str = "127.0.0.1", attempts: int = 100) -> bool:
    """Does ``host:port`` accept? The listener may come up just after the
    client said it would (ssh logs success on the reply), so retry briefly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):  # bounded: 100 x 50 ms
        with socket.socket(family) as s:
            s.settimeout(2)
            if s.connect_ex((host, port)) == 0:
                return True
        if attempts > 1:
            time.sleep(0.05)
    return False


def check_pop3(port: int) -> None:
    lines = pop3_dialogue(port)
    assert lines[0].startswith(b"+OK POP3 wisdom server ready"), lines
    assert lines[3] == b"+OK 2 messages\r\n", lines
    assert lines[8] == b"+OK bye\r\n", lines


# --- the guide's dialogue, three pairings -------------------------------------------------


def _dialogue(argv_for: object, server: Server, pop3_port: int, fixed: bool) -> None:
    assert callable(argv_for)
    listen = free_port() if fixed else 0
    client = start(
        argv_for(server, "-o", "ExitOnForwardFailure=yes", "-R", f"{listen}:127.0.0.1:{pop3_port}")
    )
    try:
        port = listen if fixed else allocated_port(client, pop3_port)
        assert answers(port), client.stderr
        check_pop3(port)
        assert client.process.poll() is None, client.stderr
    finally:
        client.stop()
    assert "Traceback" not in client.stderr, client.stderr


@pytest.mark.parametrize("fixed", [True, False], ids=["port", "port0"])
def test_hashike_to_hashiked(tmp_path: Path, pop3_port: int, fixed: bool) -> None:
    server, daemon = hashiked_server(tmp_path)
    try:
        _dialogue(hashike_argv, server, pop3_port, fixed)
    finally:
        daemon.stop()  # type: ignore[attr-defined]


@pytest.mark.parametrize("fixed", [True, False], ids=["port", "port0"])
def test_openssh_ssh_to_hashiked(tmp_path: Path, ssh_client: SshClient, pop3_port: int, fixed: bool) -> None:
    server, daemon = hashiked_server(tmp_path)
    try:
        _dialogue(lambda s, *a: ssh_argv(ssh_client, s, *a), server, pop3_port, fixed)
        daemon.assert_healthy()  # type: ignore[attr-defined]
    finally:
        daemon.stop()  # type: ignore[attr-defined]


def sshd_server(start_sshd: StartSshd, tmp_path: Path, key_options: str = "", *lines: str) -> Server:
    sshd = start_sshd(*lines)
    if key_options:
        sshd.authorized_keys.write_text(f"{key_options} {sshd.authorized_keys.read_text()}")
    known = tmp_path / "known_hosts_sshd"
    known.write_text(sshd.known_hosts_lines())
    return Server(sshd.port, sshd.client_key, known)


@pytest.mark.parametrize("fixed", [True, False], ids=["port", "port0"])
def test_hashike_to_sshd(start_sshd: StartSshd, tmp_path: Path, pop3_port: int, fixed: bool) -> None:
    _dialogue(hashike_argv, sshd_server(start_sshd, tmp_path), pop3_port, fixed)


# --- integrity, both directions, with half-close ------------------------------------------


@pytest.mark.parametrize("pairing", ["ssh-to-hashiked", "hashike-to-sshd"])
def test_integrity_through_remote_forward(
    start_sshd: StartSshd, tmp_path: Path, ssh_client: SshClient, background: BackgroundLoop, pairing: str
) -> None:
    """256 MiB each way through -R 0; the far side (the target) hashes what
    it got and says so after our half-close."""
    seen: concurrent.futures.Future[FarSide] = concurrent.futures.Future()
    echo = background.run(echo_digest_server(seen))
    spec = ("-R", f"0:127.0.0.1:{server_port(echo)}")
    daemon = None
    if pairing == "ssh-to-hashiked":
        server, daemon = hashiked_server(tmp_path)
        client = start(ssh_argv(ssh_client, server, *spec))
    else:
        client = start(hashike_argv(sshd_server(start_sshd, tmp_path), *spec))
    try:
        # The server bound the port before its reply: no probe (the far side
        # would count it as the transfer).
        result = upload_and_echo(allocated_port(client, server_port(echo)), INTEGRITY_MIB)
    finally:
        client.stop()
        if daemon is not None:
            daemon.stop()  # type: ignore[attr-defined]
        echo.close()
    size = INTEGRITY_MIB << 20
    far = seen.result(DEADLINE)
    assert (far.total, far.digest) == (size, result.sent_digest)  # upload intact on the far side
    assert (result.echoed, result.echo_digest) == (size, result.sent_digest)  # download intact here
    assert result.trailer == f"{result.sent_digest} {size}\n".encode()  # after our half-close


# --- failures, in ssh's words -----------------------------------------------------------


@pytest.mark.parametrize("exit_on_failure", [False, True])
def test_refused_forward_against_sshd(
    start_sshd: StartSshd, tmp_path: Path, pop3_port: int, exit_on_failure: bool
) -> None:
    server = sshd_server(start_sshd, tmp_path, "", "AllowTcpForwarding local")
    listen = free_port()
    options = ["-o", f"ExitOnForwardFailure={'yes' if exit_on_failure else 'no'}"]
    client = start(hashike_argv(server, *options, "-R", f"{listen}:127.0.0.1:{pop3_port}"))
    try:
        if exit_on_failure:
            assert client.process.wait(DEADLINE) == 255
            assert client.wait_for(
                re.escape(f"Error: remote port forwarding failed for listen port {listen}") + "$"
            ), client.stderr
        else:
            assert client.wait_for(f"Warning: remote port forwarding failed for listen port {listen}$")
            assert client.process.poll() is None  # the session goes on
    finally:
        client.stop()


def test_refused_local_target_fails_only_that_channel(
    start_sshd: StartSshd, tmp_path: Path, pop3_port: int
) -> None:
    server = sshd_server(start_sshd, tmp_path)
    dead = free_port()
    client = start(hashike_argv(server, "-R", f"0:127.0.0.1:{dead}", "-R", f"0:127.0.0.1:{pop3_port}"))
    try:
        assert client.wait_for(ALLOCATED.pattern, times=2), client.stderr
        ports = {int(t): int(p) for p, t in ALLOCATED.findall(client.stderr)}
        assert answers(ports[dead])
        with socket.create_connection(("127.0.0.1", ports[dead]), timeout=DEADLINE) as sock:
            sock.settimeout(DEADLINE)
            assert sock.recv(16) == b""  # the channel failed: sshd closed the connection
        assert client.wait_for(f"connect_to 127.0.0.1 port {dead}: failed."), client.stderr
        check_pop3(ports[pop3_port])
        assert client.process.poll() is None, client.stderr
    finally:
        client.stop()


# --- the remote-policy matrix -------------------------------------------------------------


def _outside_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
        except OSError:
            return None
        address: str = s.getsockname()[0]
        return None if address.startswith("127.") else address


LOOP = frozenset({"loopback"})
ALL = frozenset({"loopback", "outside"})
# (sshd_config lines, authorized_keys options, -R bind address) -> None for
# refused, else where the listener answers: sshd_config(5) GatewayPorts,
# PermitListen, AllowTcpForwarding; sshd(8) permitlisten.
MATRIX: dict[str, tuple[tuple[str, ...], str, str | None, frozenset[str] | None]] = {
    "GatewayPorts=no/none": (("GatewayPorts no",), "", None, LOOP),
    "GatewayPorts=no/*": (("GatewayPorts no",), "", "*", LOOP),
    "GatewayPorts=yes/none": (("GatewayPorts yes",), "", None, ALL),
    "GatewayPorts=yes/127.0.0.1": (("GatewayPorts yes",), "", "127.0.0.1", ALL),
    "clientspecified/127.0.0.1": (("GatewayPorts clientspecified",), "", "127.0.0.1", LOOP),
    "clientspecified/*": (("GatewayPorts clientspecified",), "", "*", ALL),
    "PermitListen=localhost:*": (("PermitListen localhost:*",), "", None, LOOP),
    "PermitListen=127.0.0.1:*/none": (("PermitListen 127.0.0.1:*",), "", None, None),
    "PermitListen=none": (("PermitListen none",), "", None, None),
    "permitlisten=localhost:*": ((), 'permitlisten="localhost:*"', None, LOOP),
    "permitlisten=127.0.0.2:*": ((), 'permitlisten="127.0.0.2:*"', None, None),
    "no-port-forwarding": ((), "no-port-forwarding", None, None),
    "AllowTcpForwarding=local": (("AllowTcpForwarding local",), "", None, None),
    "AllowTcpForwarding=remote": (("AllowTcpForwarding remote",), "", None, LOOP),
}


def _matrix_case(argv: list[str], target: int, expected: frozenset[str] | None) -> None:
    client = start(argv)
    try:
        if expected is None:
            assert client.process.wait(DEADLINE) == 255, client.stderr
            # ssh may exit before our reader has its last line: wait for it (bounded, to EOF).
            assert client.wait_for("Error: remote port forwarding failed for listen port 0"), client.stderr
            return
        port = allocated_port(client, target)
        assert answers(port), client.stderr
        outside = _outside_address()
        if outside is not None:
            assert answers(port, outside, attempts=1) == ("outside" in expected), client.stderr
    finally:
        client.stop()


def _spec(bind: str | None, target: int) -> str:
    return f"{bind + ':' if bind is not None else ''}0:127.0.0.1:{target}"


@pytest.mark.parametrize("client_kind", ["ssh", "hashike"])
@pytest.mark.parametrize("case", list(MATRIX))
def test_matrix_against_hashiked(
    tmp_path: Path, ssh_client: SshClient, pop3_port: int, case: str, client_kind: str
) -> None:
    lines, key_options, bind, expected = MATRIX[case]
    options = [line.replace(" ", "=", 1) for line in lines]
    server, daemon = hashiked_server(tmp_path, key_options, *options)
    args = ("-o", "ExitOnForwardFailure=yes", "-R", _spec(bind, pop3_port))
    argv = ssh_argv(ssh_client, server, *args) if client_kind == "ssh" else hashike_argv(server, *args)
    try:
        _matrix_case(argv, pop3_port, expected)
        if expected is None:
            assert "but the request was denied." in daemon.log_text()  # type: ignore[attr-defined]
        daemon.assert_healthy()  # type: ignore[attr-defined]
    finally:
        daemon.stop()  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", list(MATRIX))
def test_matrix_oracle_against_sshd(
    start_sshd: StartSshd, tmp_path: Path, ssh_client: SshClient, pop3_port: int, case: str
) -> None:
    """The same expectations hold for OpenSSH's own sshd."""
    lines, key_options, bind, expected = MATRIX[case]
    server = sshd_server(start_sshd, tmp_path, key_options, *lines)
    args = ("-o", "ExitOnForwardFailure=yes", "-R", _spec(bind, pop3_port))
    _matrix_case(ssh_argv(ssh_client, server, *args), pop3_port, expected)
