"""Keepalives between processes (issue 10's tests 1 and 5).

A server that hangs (SIGSTOP: the socket stays open, nothing answers) is
found by the ``hashike`` command's ServerAliveInterval/ServerAliveCountMax:
ssh's ``Timeout, server HOST not responding.``, exit 255, its listeners
gone; once against hashiked, once against OpenSSH's sshd. A client holding a
``-R`` that hangs is found by hashiked's ClientAlive*, which frees the port.
Intervals are 1 s; each wait is bounded by interval x count + 2 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import eventually_sync
from tests.interop.conftest import _descendants, free_port
from tests.interop.test_forward_openssh_to_hashiked import (
    DEADLINE,
    Hashiked,
    keygen,
    public_line,
    start_hashiked,
)
from tests.interop.test_remote_forward import Server, answers, hashike_argv, start

if TYPE_CHECKING:
    from tests.interop.conftest import StartSshd
    from tests.interop.test_forward_openssh_to_hashiked import SshProcess

INTERVAL, COUNT = 1, 3
BOUND = INTERVAL * COUNT + 2.0
ALIVE = ("-o", f"ServerAliveInterval={INTERVAL}", "-o", f"ServerAliveCountMax={COUNT}")


@contextlib.contextmanager
def stopped(pids: Sequence[int]) -> Iterator[float]:
    """SIGSTOP every pid; yields when it was done; SIGCONT on the way out."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def hashiked_pair(tmp_path: Path, *options: str) -> tuple[Server, Hashiked]:
    host_key = keygen(tmp_path / "host_ed25519")
    client_key = keygen(tmp_path / "id_ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(f"{public_line(client_key)}\n")
    daemon = start_hashiked(tmp_path, host_key, authorized, *options)
    known = tmp_path / "known_hosts"
    known.write_text(daemon.known_hosts_line() + "\n")
    return Server(daemon.port, client_key, known), daemon


def assert_times_out(client: SshProcess, since: float, listen_port: int, host: str = "127.0.0.1") -> None:
    try:
        client.process.wait(BOUND - (time.monotonic() - since))
    except subprocess.TimeoutExpired:
        pytest.fail(f"no timeout within {BOUND} s: {client.stderr}")
    client._reader.join(DEADLINE)
    assert client.process.returncode == 255, client.stderr
    assert f"Timeout, server {host} not responding.\n" in client.stderr, client.stderr
    assert not answers(listen_port, attempts=1)  # the -L listener went with it


def test_a_hung_hashiked_is_timed_out(tmp_path: Path) -> None:
    server, daemon = hashiked_pair(tmp_path)
    listen_port = free_port()
    client = start(hashike_argv(server, *ALIVE, "-L", f"{listen_port}:127.0.0.1:9"))
    try:
        assert answers(listen_port), client.stderr
        # The supervisor and its workers (Workers auto by default).
        with stopped([daemon.process.pid, *_descendants(daemon.process.pid)]) as since:
            assert_times_out(client, since, listen_port)
    finally:
        client.stop()
        daemon.stop()


def test_a_hung_sshd_is_timed_out(tmp_path: Path, start_sshd: StartSshd) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    server = Server(sshd.port, sshd.client_key, known)
    listen_port = free_port()
    client = start(hashike_argv(server, *ALIVE, "-l", sshd.user, "-L", f"{listen_port}:127.0.0.1:9"))
    try:
        assert answers(listen_port), client.stderr
        # The listener and the connection's own sshd processes.
        with stopped([sshd.process.pid, *_descendants(sshd.process.pid)]) as since:
            assert_times_out(client, since, listen_port)
    finally:
        client.stop()


def test_a_hung_client_loses_its_remote_forward(tmp_path: Path) -> None:
    server, daemon = hashiked_pair(
        tmp_path, f"ClientAliveInterval={INTERVAL}", f"ClientAliveCountMax={COUNT}"
    )
    remote_port = free_port()
    client = start(hashike_argv(server, "-R", f"{remote_port}:127.0.0.1:9"))
    try:
        assert answers(remote_port), client.stderr
        with stopped([client.process.pid]):
            eventually_sync(lambda: bindable(remote_port), BOUND, what="hashiked freeing the -R port")
        log = daemon.log_text()
        assert "Timeout, client not responding from user " in log, log
        daemon.assert_healthy()
    finally:
        client.stop()
        daemon.stop()


def bindable(port: int) -> bool:
    with socket.socket() as s:
        # Connections the check made may linger in TIME_WAIT; a listener may not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
