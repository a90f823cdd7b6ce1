"""``-R`` ports with ``Workers 2``: OpenSSH's ssh logged in to two different
workers asks both for the same remote port.

The supervisor hands connections round robin, so two consecutive logins
land in different workers; which worker holds a connection is read from
the kernel (``served_by``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import eventually_sync
from tests.interop.conftest import free_port
from tests.interop.test_forward_openssh_to_hashiked import Hashiked, SshProcess, start_hashiked
from tests.interop.test_workers import DEADLINE, _answers, keys, target, worker_sockets

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

pytestmark = pytest.mark.interop

__all__ = ["keys"]  # the fixture, shared with test_workers


def remote_forward(
    ssh_client: SshClient, server: Hashiked, key: Path, spec: str, options: dict[str, str | int] | None = None
) -> SshProcess:
    """``ssh -N -R spec``, its stderr read line by line."""
    argv = ssh_client.argv(server.port, identity=key, options=options, args=["-N", "-R", spec])
    return SshProcess.start(argv)


def test_one_remote_port_goes_to_one_worker_only(
    tmp_path: Path, keys: tuple[Path, Path, Path], ssh_client: SshClient
) -> None:
    server = start_hashiked(tmp_path, keys[0], keys[2], "Workers=2")
    port = free_port()
    clients: list[SshProcess] = []
    try:
        with target(b"first") as first, target(b"second") as second:
            clients.append(remote_forward(ssh_client, server, keys[1], f"{port}:127.0.0.1:{first}"))
            eventually_sync(lambda: _answers(port) == b"first", DEADLINE, what="the first -R")
            clients.append(remote_forward(ssh_client, server, keys[1], f"{port}:127.0.0.1:{second}"))
            # ssh's own words; without ExitOnForwardFailure it stays logged in.
            failed = f"remote port forwarding failed for listen port {port}"
            assert clients[1].wait_for(failed), clients[1].stderr
            owners = worker_sockets(server)
            assert len(owners) == 2 and owners[0] != owners[1], owners  # two workers
            assert _answers(port) == b"first"
            assert failed not in clients[0].stderr
            assert clients[0].process.poll() is None and clients[1].process.poll() is None
        server.assert_healthy()
    finally:
        for client in clients:
            client.stop()
        server.stop()


def test_a_remote_port_is_taken_over_from_another_worker(
    tmp_path: Path, keys: tuple[Path, Path, Path], ssh_client: SshClient
) -> None:
    server = start_hashiked(tmp_path, keys[0], keys[2], "Workers=2", "RemoteForwardTakeover=yes")
    port = free_port()
    clients: list[SshProcess] = []
    try:
        with target(b"first") as first, target(b"second") as second:
            clients.append(remote_forward(ssh_client, server, keys[1], f"{port}:127.0.0.1:{first}"))
            eventually_sync(lambda: _answers(port) == b"first", DEADLINE, what="the first -R")
            clients.append(
                remote_forward(
                    ssh_client, server, keys[1], f"{port}:127.0.0.1:{second}", {"ExitOnForwardFailure": "yes"}
                )
            )
            eventually_sync(lambda: _answers(port) == b"second", DEADLINE, what="the port taken over")
            owners = worker_sockets(server)
            assert len(owners) == 2 and owners[0] != owners[1], owners  # two workers, both still logged in
            assert clients[1].process.poll() is None, clients[1].stderr  # ExitOnForwardFailure did not fire
        # ssh asks for "localhost" when -R names no bind address.
        line = f"remote forward localhost port {port} taken over from an earlier connection of user "
        assert line in server.log_text(), server.log_text()
        server.assert_healthy()
    finally:
        for client in clients:
            client.stop()
        server.stop()
