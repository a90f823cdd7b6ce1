"""Reconnect between processes (issue 10's tests 2, 3 and 4).

``hashike -N -o Reconnect=yes`` with -L, -D and -R: the server is killed
(-9) in the middle of a transfer through -L and started again on the same
port with the same host key. The same hashike process comes back: the
connection open when the link died ends, one opened through -L during the
outage goes through once the link is back, and data through every forward is
right afterwards. Once against hashiked, once against OpenSSH's sshd. A
server that comes back with another host key gets ssh's warning and no
reconnect (exit 255).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.interop.conftest import _descendants, free_port, require_openssh
from tests.interop.test_forward_openssh_to_hashiked import DEADLINE, Hashiked, keygen, start_hashiked
from tests.interop.test_keepalive import hashiked_pair
from tests.interop.test_remote_forward import Server, answers, hashike_argv, start
from tests.socks_client import socks5_greeting, socks5_request

if TYPE_CHECKING:
    from tests.interop.conftest import StartSshd
    from tests.interop.test_forward_openssh_to_hashiked import SshProcess

RECONNECT = ("-o", "Reconnect=yes", "-o", "ReconnectMaxDelay=2", "-o", "ConnectTimeout=20")
# Backoff capped at 2 s, and the server's restart: well within this.
BACK_WITHIN = 30.0
PAYLOAD = bytes(range(256)) * 256  # 64 KiB, every byte value


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def echoes(port: int, socks_to: int | None = None) -> bool:
    """A round trip of PAYLOAD through ``port`` (a SOCKS5 proxy to
    127.0.0.1:``socks_to`` if given) comes back unchanged."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        if socks_to is not None:
            sock.sendall(socks5_greeting())
            assert _recv_exactly(sock, 2) == b"\x05\x00"
            sock.sendall(socks5_request("127.0.0.1", socks_to))
            reply = _recv_exactly(sock, 10)
            assert reply[:2] == b"\x05\x00", reply
        sock.sendall(PAYLOAD)
        return _recv_exactly(sock, len(PAYLOAD)) == PAYLOAD


def ended(sock: socket.socket) -> bool:
    """The connection open when the link died gets EOF or RST."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def _forwards(echo: int) -> tuple[tuple[str, ...], int, int, int]:
    local, dynamic, remote = free_port(), free_port(), free_port()
    argv = ("-L", f"{local}:127.0.0.1:{echo}", "-D", str(dynamic), "-R", f"{remote}:127.0.0.1:{echo}")
    return argv, local, dynamic, remote


def _check_all(local: int, dynamic: int, remote: int, echo: int) -> None:
    assert echoes(local)
    assert echoes(dynamic, socks_to=echo)
    assert echoes(remote)


def _outage(client: SshProcess, local: int, kill: object, restart: object) -> None:
    """Kill the server mid-transfer through -L, connect through -L while it is
    down, start it again: the first connection ended, the second goes through."""
    assert callable(kill) and callable(restart)
    pid = client.process.pid
    busy = socket.create_connection(("127.0.0.1", local), timeout=DEADLINE)
    busy.sendall(PAYLOAD)
    assert _recv_exactly(busy, 1024) == PAYLOAD[:1024]  # mid-transfer
    kill()
    assert ended(busy)
    busy.close()
    assert client.wait_for(
        r"Connection to 127\.0\.0\.1 port \d+ lost: .*; reconnecting in \S+ s \(attempt 1\)"
    )
    waiting = socket.create_connection(("127.0.0.1", local), timeout=BACK_WITHIN)  # still bound
    waiting.sendall(b"sent during the outage")
    restart()
    with waiting:
        assert _recv_exactly(waiting, 22) == b"sent during the outage"
    assert client.wait_for(r"Reconnected to 127\.0\.0\.1; 3 forwards restored", timeout=BACK_WITHIN), (
        client.stderr
    )
    assert client.process.poll() is None and client.process.pid == pid


def test_hashike_comes_back_after_hashiked_is_killed(tmp_path: Path) -> None:
    server, daemon = hashiked_pair(tmp_path)
    host_key, authorized = daemon.host_key, tmp_path / "authorized_keys"
    daemons: list[Hashiked] = [daemon]
    with echo_server() as echo:
        argv, local, dynamic, remote = _forwards(echo)
        client = start(hashike_argv(server, *RECONNECT, *argv))
        try:
            assert answers(remote), client.stderr
            _check_all(local, dynamic, remote, echo)

            def kill() -> None:
                daemons[-1].process.kill()
                daemons[-1].process.wait(DEADLINE)

            def restart() -> None:
                daemons.append(start_hashiked(tmp_path, host_key, authorized, port=server.port))

            _outage(client, local, kill, restart)
            assert answers(remote), client.stderr
            _check_all(local, dynamic, remote, echo)
            daemons[-1].assert_healthy()
        finally:
            client.stop()
            for d in daemons:
                d.stop()


def _kill_sshd(pid: int) -> None:
    """The listener and the connection's own sshd processes, at once."""
    for each in [pid, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


def test_hashike_comes_back_after_sshd_is_killed(tmp_path: Path, start_sshd: StartSshd) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    server = Server(sshd.port, sshd.client_key, known)
    again: list[subprocess.Popen[bytes]] = []
    with echo_server() as echo:
        argv, local, dynamic, remote = _forwards(echo)
        client = start(hashike_argv(server, *RECONNECT, "-l", sshd.user, *argv))
        try:
            assert answers(remote), client.stderr
            _check_all(local, dynamic, remote, echo)

            def kill() -> None:
                _kill_sshd(sshd.process.pid)
                sshd.process.wait(DEADLINE)

            def restart() -> None:
                # The same sshd_config: the same port, host keys and authorized_keys.
                binary = require_openssh("sshd")["sshd"]
                argv = [binary, "-D", "-e", "-f", str(sshd.config)]
                with open(sshd.directory / "sshd-again.log", "wb") as log:
                    again.append(
                        subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                    )

            _outage(client, local, kill, restart)
            assert answers(remote), client.stderr
            _check_all(local, dynamic, remote, echo)
        finally:
            client.stop()
            for process in again:
                _kill_sshd(process.pid)
                process.wait(DEADLINE)


def test_another_host_key_on_reconnect_is_fatal(tmp_path: Path) -> None:
    server, daemon = hashiked_pair(tmp_path)
    authorized = tmp_path / "authorized_keys"
    with echo_server() as echo:
        local = free_port()
        client = start(hashike_argv(server, *RECONNECT, "-L", f"{local}:127.0.0.1:{echo}"))
        impostor = None
        try:
            assert answers(local), client.stderr
            daemon.process.kill()
            daemon.process.wait(DEADLINE)
            other_key = keygen(tmp_path / "other_host_ed25519")
            impostor = start_hashiked(tmp_path, other_key, authorized, port=server.port)
            try:
                client.process.wait(BACK_WITHIN)
            except subprocess.TimeoutExpired:
                pytest.fail(f"hashike did not stop: {client.stderr}")
            client._reader.join(DEADLINE)
            assert client.process.returncode == 255, client.stderr
            assert "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @" in client.stderr
            assert "Host key verification failed." in client.stderr
            assert client.count(r"reconnecting in") == 1, client.stderr  # one attempt, never a second
        finally:
            client.stop()
            daemon.stop()
            if impostor is not None:
                impostor.stop()
