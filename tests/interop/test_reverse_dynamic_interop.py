"""Reverse dynamic forwarding (-R port alone) and -R to a Unix socket on the
server, with OpenSSH in both directions.

Reverse dynamic: the server listens, and the client serves SOCKS on each
forwarded channel. curl (``--socks5-hostname``, ``--socks4a``, and the
address forms) fetches through the remote port with the ``hashike`` command
against sshd and against hashiked, and with OpenSSH's ``ssh -R port``
against hashiked. Our client connects before it answers, so refused and
unreachable targets get their reply codes (ssh answers "granted" first and
then closes), and the forward goes on afterwards.

Remote sockets (``-R /path:host:port``, ``-R /path:/local/socket``): the
``hashike`` command against sshd and hashiked, ``ssh`` against hashiked, with
the guide's POP3 dialogue through the socket, and sshd's failure when the
file exists (without StreamLocalBindUnlink) in ssh's words.
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.interop.test_forward_openssh_to_hashiked import DEADLINE, SshProcess
from tests.interop.test_remote_forward import (
    Server,
    background,  # noqa: F401 (a fixture used through pop3_port)
    hashike_argv,
    hashiked_server,
    pop3_port,  # noqa: F401 (a fixture)
    ssh_argv,
    sshd_server,
    start,
)
from tests.interop.test_socks_interop import BODY, fetch, socks_exchange, web  # noqa: F401 (web: a fixture)
from tests.socks_client import socks4_request, socks5_greeting, socks5_request

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient, StartSshd

pytestmark = pytest.mark.interop

ALLOCATED_SOCKS = re.compile(r"Allocated port (\d+) for remote forward to socks:0")


def socks_port(client: SshProcess) -> int:
    """The port the client printed for its -R 0 (ssh names the target socks:0)."""
    assert client.wait_for(ALLOCATED_SOCKS.pattern), client.stderr
    match = ALLOCATED_SOCKS.search(client.stderr)
    assert match is not None, client.stderr
    return int(match.group(1))


def check_curl(proxy_port: int, web_port: int) -> None:
    for mode, host in [
        ("socks5-hostname", "localhost"),
        ("socks4a", "localhost"),
        ("socks5", "127.0.0.1"),
        ("socks4", "127.0.0.1"),
    ]:
        result = fetch(mode, f"127.0.0.1:{proxy_port}", f"http://{host}:{web_port}/file.txt")
        assert result.returncode == 0, (mode, result.stderr)
        assert result.stdout == BODY, mode


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


def check_refusals(proxy_port: int, web_port: int, client: SshProcess) -> None:
    closed = closed_port()
    answer = socks_exchange(proxy_port, socks5_greeting() + socks5_request("127.0.0.1", closed), 12)
    assert answer == b"\x05\x00\x05\x05\x00\x01" + bytes(6)  # connection refused
    answer = socks_exchange(proxy_port, socks5_greeting() + socks5_request("no-such-host.invalid", 80), 12)
    assert answer == b"\x05\x00\x05\x04\x00\x01" + bytes(6)  # host unreachable
    answer = socks_exchange(proxy_port, socks4_request("127.0.0.1", closed), 8)
    assert answer == b"\x00\x5b" + bytes(6)
    assert client.wait_for(f"connect_to 127.0.0.1 port {closed}: failed."), client.stderr
    check_curl(proxy_port, web_port)  # the forward goes on


def _reverse_dynamic(argv: list[str], web_port: int, refusals: bool) -> None:
    client = start(argv)
    try:
        port = socks_port(client)
        check_curl(port, web_port)
        if refusals:
            check_refusals(port, web_port, client)
        assert client.process.poll() is None, client.stderr
    finally:
        client.stop()
    assert "Traceback" not in client.stderr, client.stderr


def test_hashike_reverse_dynamic_to_hashiked(tmp_path: Path, web: int) -> None:  # noqa: F811
    server, daemon = hashiked_server(tmp_path)
    try:
        _reverse_dynamic(hashike_argv(server, "-o", "ExitOnForwardFailure=yes", "-R", "0"), web, True)
        daemon.assert_healthy()  # type: ignore[attr-defined]
    finally:
        daemon.stop()  # type: ignore[attr-defined]


def test_hashike_reverse_dynamic_to_sshd(start_sshd: StartSshd, tmp_path: Path, web: int) -> None:  # noqa: F811
    server = sshd_server(start_sshd, tmp_path)
    _reverse_dynamic(hashike_argv(server, "-o", "ExitOnForwardFailure=yes", "-R", "localhost:0"), web, True)


def test_openssh_ssh_reverse_dynamic_to_hashiked(
    tmp_path: Path,
    ssh_client: SshClient,
    web: int,  # noqa: F811
) -> None:
    server, daemon = hashiked_server(tmp_path)
    try:
        _reverse_dynamic(
            ssh_argv(ssh_client, server, "-o", "ExitOnForwardFailure=yes", "-R", "0"), web, False
        )
        daemon.assert_healthy()  # type: ignore[attr-defined]
    finally:
        daemon.stop()  # type: ignore[attr-defined]


# --- -R to a Unix socket on the server ----------------------------------------------------


def unix_pop3(path: Path) -> list[bytes]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(str(path))
        with sock.makefile("rb") as f:
            lines = [f.readline()]
            for command in (b"USER a70099a", b"PASS secret", b"LIST"):
                sock.sendall(command + b"\r\n")
                lines.append(f.readline())
            sock.sendall(b"QUIT\r\n")
            lines += f.readlines()
    return lines


def _wait_for_socket(path: Path, client: SshProcess) -> None:
    for _ in range(200):  # bounded: 200 x 50 ms
        if path.is_socket():
            return
        if client.process.poll() is not None:
            break
        client.wait_for("never printed", timeout=0.05)
    raise AssertionError(f"no socket at {path}:\n{client.stderr}")


def _socket_dialogue(argv_for: object, server: Server, tmp_path: Path, pop3: int) -> None:
    assert callable(argv_for)
    path = tmp_path / "remote-pop3.sock"
    client = start(argv_for(server, "-o", "ExitOnForwardFailure=yes", "-R", f"{path}:127.0.0.1:{pop3}"))
    try:
        _wait_for_socket(path, client)
        lines = unix_pop3(path)
        assert lines[0].startswith(b"+OK POP3 wisdom server ready"), lines
        assert lines[3] == b"+OK 2 messages\r\n", lines
        assert lines[-1] == b"+OK bye\r\n", lines
        assert client.process.poll() is None, client.stderr
    finally:
        client.stop()
    assert "Traceback" not in client.stderr, client.stderr


def test_hashike_remote_socket_to_hashiked(tmp_path: Path, pop3_port: int) -> None:  # noqa: F811
    server, daemon = hashiked_server(tmp_path)
    try:
        _socket_dialogue(hashike_argv, server, tmp_path, pop3_port)
    finally:
        daemon.stop()  # type: ignore[attr-defined]


def test_openssh_ssh_remote_socket_to_hashiked(
    tmp_path: Path,
    ssh_client: SshClient,
    pop3_port: int,  # noqa: F811
) -> None:
    server, daemon = hashiked_server(tmp_path)
    try:
        _socket_dialogue(lambda s, *a: ssh_argv(ssh_client, s, *a), server, tmp_path, pop3_port)
        daemon.assert_healthy()  # type: ignore[attr-defined]
    finally:
        daemon.stop()  # type: ignore[attr-defined]


def test_hashike_remote_socket_to_sshd(start_sshd: StartSshd, tmp_path: Path, pop3_port: int) -> None:  # noqa: F811
    _socket_dialogue(hashike_argv, sshd_server(start_sshd, tmp_path), tmp_path, pop3_port)


def test_hashike_remote_socket_to_local_socket_against_sshd(start_sshd: StartSshd, tmp_path: Path) -> None:
    """``-R remote_socket:local_socket``: both ends Unix sockets."""
    local = tmp_path / "local.sock"
    remote = tmp_path / "remote.sock"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(local))
        listening.listen()
        listening.settimeout(DEADLINE)
        client = start(hashike_argv(sshd_server(start_sshd, tmp_path), "-R", f"{remote}:{local}"))
        try:
            _wait_for_socket(remote, client)
            with socket.socket(socket.AF_UNIX) as far:
                far.settimeout(DEADLINE)
                far.connect(str(remote))
                far.sendall(b"socket to socket")
                accepted, _ = listening.accept()
                with accepted:
                    accepted.settimeout(DEADLINE)
                    assert accepted.recv(64) == b"socket to socket"
                    accepted.sendall(b"and back")
                    assert far.recv(64) == b"and back"
        finally:
            client.stop()


@pytest.mark.parametrize("exit_on_failure", [False, True])
def test_existing_file_refused_by_sshd(
    start_sshd: StartSshd,
    tmp_path: Path,
    pop3_port: int,  # noqa: F811
    exit_on_failure: bool,
) -> None:
    path = tmp_path / "taken.sock"
    path.write_text("in the way")
    options = ["-o", f"ExitOnForwardFailure={'yes' if exit_on_failure else 'no'}"]
    client = start(
        hashike_argv(sshd_server(start_sshd, tmp_path), *options, "-R", f"{path}:127.0.0.1:{pop3_port}")
    )
    try:
        if exit_on_failure:
            assert client.process.wait(DEADLINE) == 255
            assert client.wait_for(
                re.escape(f"Error: remote port forwarding failed for listen path {path}") + "$"
            ), client.stderr
        else:
            assert client.wait_for(
                f"Warning: remote port forwarding failed for listen path {re.escape(str(path))}$"
            )
            assert client.process.poll() is None
    finally:
        client.stop()


def test_hashiked_stream_local_bind_unlink(tmp_path: Path, ssh_client: SshClient, pop3_port: int) -> None:  # noqa: F811
    """With StreamLocalBindUnlink yes, an existing file is replaced, for ssh as for sshd."""
    server, daemon = hashiked_server(tmp_path, "", "StreamLocalBindUnlink=yes")
    (tmp_path / "remote-pop3.sock").write_text("stale")
    try:
        _socket_dialogue(lambda s, *a: ssh_argv(ssh_client, s, *a), server, tmp_path, pop3_port)
    finally:
        daemon.stop()  # type: ignore[attr-defined]


def test_refused_by_allow_stream_local_forwarding(tmp_path: Path, ssh_client: SshClient) -> None:
    server, daemon = hashiked_server(tmp_path, "", "AllowStreamLocalForwarding=local")
    path = tmp_path / "refused.sock"
    try:
        args = ("-o", "ExitOnForwardFailure=yes", "-R", f"{path}:127.0.0.1:9")
        result = subprocess.run(
            ssh_argv(ssh_client, server, *args), capture_output=True, text=True, timeout=DEADLINE,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 255
        assert f"Error: remote port forwarding failed for listen path {path}" in result.stderr
        assert not path.exists()
        assert "Server has disabled streamlocal forwarding." in daemon.log_text()  # type: ignore[attr-defined]
    finally:
        daemon.stop()  # type: ignore[attr-defined]
