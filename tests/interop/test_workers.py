"""``Workers 2``: OpenSSH's ssh against hashiked's supervisor and its workers.

Which process serves a connection is read from the kernel: the inode of each
established socket on the server's port (/proc/net/tcp), then the process
holding that inode among its descriptors (/proc/PID/fd).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.cli.netstat import children
from tests.helpers import eventually_sync
from tests.interop.conftest import free_port
from tests.interop.test_forward_openssh_to_hashiked import Hashiked, keygen, public_line, start_hashiked

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

pytestmark = pytest.mark.interop

DEADLINE = 30.0


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    host_key = keygen(tmp_path / "host_ed25519")
    client_key = keygen(tmp_path / "id_ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(public_line(client_key) + "\n")
    return host_key, client_key, authorized


@pytest.fixture
def workers(tmp_path: Path, keys: tuple[Path, Path, Path]) -> Iterator[Hashiked]:
    server = start_hashiked(tmp_path, keys[0], keys[2], "Workers=2")
    try:
        yield server
    finally:
        server.stop()


def served_by(port: int) -> list[int]:
    """The pid of the process holding each established socket on ``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":  # TCP_ESTABLISHED
            inodes.add(fields[9])
    owners = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:  # gone, or not ours to read
            continue
        owners += [int(pid)] * len({f"socket:[{inode}]" for inode in inodes} & links)
    return owners


def worker_sockets(server: Hashiked) -> list[int]:
    """The pid of the worker holding each established socket on the server's
    port. Two kinds of holder are left out of ``served_by``'s: the
    supervisor, for asyncio accepts a whole backlog before the first is
    admitted or dropped, so for a moment it holds sockets it never hands
    over; and a session between its fork and its exec, which holds its
    worker's descriptors until it closes them."""
    workers = children(server.process.pid)
    return [pid for pid in served_by(server.port) if pid in workers]


def held_now(server: Hashiked, snapshot: list[int]) -> list[int]:
    """``worker_sockets``, kept in ``snapshot`` for the asserts that follow:
    one read of /proc is both waited on and checked."""
    snapshot[:] = worker_sockets(server)
    return snapshot


def start_transfer(ssh_client: SshClient, server: Hashiked, key: Path) -> subprocess.Popen[bytes]:
    """ssh reading our stdin into the far side's sha256sum."""
    argv = ssh_client.argv(server.port, "sha256sum", identity=key)
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_transfer(process: subprocess.Popen[bytes], data: bytes) -> None:
    out, err = process.communicate(data, timeout=DEADLINE)
    assert process.returncode == 0, err
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_eight_logins_spread_over_two_workers(
    workers: Hashiked, keys: tuple[Path, Path, Path], ssh_client: SshClient
) -> None:
    transfers = [start_transfer(ssh_client, workers, keys[1]) for _ in range(8)]
    try:
        owners: list[int] = []
        eventually_sync(lambda: len(held_now(workers, owners)) == 8, DEADLINE, what="8 served by workers")
        assert len(set(owners)) == 2
    finally:
        for n, process in enumerate(transfers):
            finish_transfer(process, os.urandom(1 << 20) + bytes([n]))
    workers.assert_healthy()


def test_a_killed_worker_costs_only_its_connections(
    workers: Hashiked, keys: tuple[Path, Path, Path], ssh_client: SshClient
) -> None:
    transfers = [start_transfer(ssh_client, workers, keys[1]) for _ in range(4)]
    owners: list[int] = []
    eventually_sync(lambda: len(held_now(workers, owners)) == 4, DEADLINE, what="4 served by workers")
    victim = owners[0]
    before = children(workers.process.pid)
    os.kill(victim, signal.SIGKILL)
    # A new login within 2 s of the death (ssh's timeout fails the test).
    login = ssh_client.run(workers.port, "echo in", identity=keys[1], timeout=2.0)
    assert login.stdout == "in\n", login.stderr
    # The victim's connections end; the others' transfers finish intact
    # (which transfer a socket belongs to is not known: they are counted).
    results = []
    for process in transfers:
        data = os.urandom(4 << 20)
        out, _ = process.communicate(data, timeout=DEADLINE)
        results.append(
            process.returncode == 0 and out.split()[0].decode() == hashlib.sha256(data).hexdigest()
        )
    assert results.count(True) == len(owners) - owners.count(victim)
    eventually_sync(
        lambda: f"worker {victim} died with signal 9 (SIGKILL); restarted as pid" in workers.log_text(),
        2.0,
        what="the supervisor's line",
    )
    after = children(workers.process.pid)
    assert victim not in after and len(after) == len(before)
    workers.assert_healthy()


@contextlib.contextmanager
def target(reply: bytes) -> Iterator[int]:
    """A loopback port that answers every connection with ``reply`` and closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(DEADLINE)


def read_forward(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        return sock.recv(16)


def test_sighup_reloads_for_new_connections_only(
    tmp_path: Path, keys: tuple[Path, Path, Path], ssh_client: SshClient
) -> None:
    config = tmp_path / "sshd_config"
    with target(b"A") as a, target(b"B") as b:
        config.write_text(f"Workers 2\nPermitOpen 127.0.0.1:{a}\n")
        server = start_hashiked(tmp_path, keys[0], keys[2], config=config)
        lport = free_port()
        forward = subprocess.Popen(
            ssh_client.argv(server.port, identity=keys[1], args=["-N", "-L", f"{lport}:127.0.0.1:{a}"]),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            eventually_sync(lambda: _answers(lport) == b"A", DEADLINE, what="the -L forward before SIGHUP")
            transfer = start_transfer(ssh_client, server, keys[1])
            assert transfer.stdin is not None
            chunk = os.urandom(1 << 20)
            for _ in range(128):
                transfer.stdin.write(chunk)
            config.write_text(f"Workers 2\nPermitOpen 127.0.0.1:{b}\n")
            os.kill(server.process.pid, signal.SIGHUP)
            eventually_sync(lambda: len(children(server.process.pid)) == 4, DEADLINE, what="new workers")
            for _ in range(128):
                transfer.stdin.write(chunk)
            out, err = transfer.communicate(timeout=DEADLINE)
            assert transfer.returncode == 0, err
            assert out.split()[0].decode() == hashlib.sha256(chunk * 256).hexdigest()
            assert read_forward(lport) == b"A"  # the old connection keeps the old PermitOpen
            new_a = ssh_client.run(server.port, identity=keys[1], args=["-W", f"127.0.0.1:{a}"])
            assert new_a.returncode != 0 and "open failed" in new_a.stderr
            new_b = ssh_client.run(server.port, identity=keys[1], args=["-W", f"127.0.0.1:{b}"])
            assert new_b.stdout == "B"
            config.write_text("Workers many\n")
            os.kill(server.process.pid, signal.SIGHUP)
            line = "reload failed, keeping the running configuration: "
            eventually_sync(lambda: line in server.log_text(), DEADLINE, what="the reload's failure")
            assert ssh_client.run(server.port, identity=keys[1], args=["-W", f"127.0.0.1:{b}"]).stdout == "B"
            forward.terminate()
            forward.wait(DEADLINE)
            # With its last connection gone, each old worker exits.
            eventually_sync(lambda: len(children(server.process.pid)) == 2, DEADLINE, what="old workers gone")
            server.assert_healthy()
        finally:
            forward.kill()
            forward.wait(DEADLINE)
            server.stop()


def _answers(port: int) -> bytes | None:
    try:
        return read_forward(port)
    except OSError:
        return None


def test_max_startups_counts_across_four_workers(
    tmp_path: Path, keys: tuple[Path, Path, Path], ssh_client: SshClient
) -> None:
    options = ("Workers=4", "MaxStartups=10:30:20", "LoginGraceTime=6")
    server = start_hashiked(tmp_path, keys[0], keys[2], *options)
    silent = []
    try:
        for _ in range(200):
            silent.append(socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE))
        eventually_sync(lambda: "drop connection #20 " in server.log_text(), DEADLINE, what="drops at 20")
        # The first 10 are always admitted; the workers hold them once handed over.
        # One snapshot is both waited on and checked: LoginGraceTime may close
        # them between two reads of /proc.
        held: list[int] = []
        eventually_sync(lambda: len(held_now(server, held)) >= 10, DEADLINE, what="10 held")
        assert len(held) <= 20
        assert len(set(held)) > 1  # held by several workers, counted as one
        deadline = time.monotonic() + DEADLINE
        while (login := ssh_client.run(server.port, "echo in", identity=keys[1])).returncode != 0:
            assert time.monotonic() < deadline, login.stderr
        assert login.stdout == "in\n"
        server.assert_healthy()
    finally:
        for sock in silent:
            sock.close()
        server.stop()


def test_an_old_worker_closes_its_connections_after_the_drain_timeout(
    tmp_path: Path, keys: tuple[Path, Path, Path], ssh_client: SshClient
) -> None:
    server = start_hashiked(tmp_path, keys[0], keys[2], "Workers=2", "WorkerDrainTimeout=1")
    idle = subprocess.Popen(
        ssh_client.argv(server.port, identity=keys[1], args=["-N"]),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventually_sync(lambda: len(worker_sockets(server)) == 1, DEADLINE, what="the idle login")
        os.kill(server.process.pid, signal.SIGHUP)
        assert idle.wait(DEADLINE) != 0  # closed by the server, not by us
        assert "drain timeout: closing 1 connections" in server.log_text()
        eventually_sync(lambda: len(children(server.process.pid)) == 2, DEADLINE, what="old workers gone")
        server.assert_healthy()
    finally:
        idle.kill()
        idle.wait(DEADLINE)
        server.stop()
