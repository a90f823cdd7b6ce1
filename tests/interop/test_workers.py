"""``Workers 2``: OpenSSH's ssh against hashiked's supervisor and its workers.

Which process serves a connection is read from the kernel: the inode of each
established socket on the server's port (/proc/net/tcp), then the process
holding that inode among its descriptors (/proc/PID/fd).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import eventually_sync
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


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


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
        eventually_sync(lambda: len(served_by(workers.port)) == 8, DEADLINE, what="8 served connections")
        owners = served_by(workers.port)
        assert len(set(owners)) == 2
        assert set(owners) <= children(workers.process.pid)
    finally:
        for n, process in enumerate(transfers):
            finish_transfer(process, os.urandom(1 << 20) + bytes([n]))
    workers.assert_healthy()


def test_a_killed_worker_costs_only_its_connections(
    workers: Hashiked, keys: tuple[Path, Path, Path], ssh_client: SshClient
) -> None:
    transfers = [start_transfer(ssh_client, workers, keys[1]) for _ in range(4)]
    eventually_sync(lambda: len(served_by(workers.port)) == 4, DEADLINE, what="4 served connections")
    owners = served_by(workers.port)
    victim = owners[0]
    before = children(workers.process.pid)
    os.kill(victim, signal.SIGKILL)
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
    finish_transfer(start_transfer(ssh_client, workers, keys[1]), b"after the death\n")
    workers.assert_healthy()
