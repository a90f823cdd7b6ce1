"""The soak test (issue 13): 10 GiB through ``hashike -L`` to ``hashiked``,
5 GiB each way at once, with RekeyLimit 256M on both ends (some forty
rekeys): the SHA-256 of what arrives equals what was sent, both ways, and
neither process grows: its RSS stays within 20% of its peak over the first
2 GiB, during which each receiver stops reading for a while so that every
buffer the windows allow was filled once.

Marked slow (``-m "not slow"`` leaves it out); CI runs it, and it fails if
it takes more than 10 minutes."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hashike.keys.keypair import generate_private_key, write_private_key
from tests.cli.test_client_host_key import free_port
from tests.interop.test_forward_openssh_to_hashiked import start_hashiked

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EACH_WAY = 5 << 30
CHUNK = 1 << 20
WARM = 2 << 30  # RSS is measured against its peak while this much went through
STALL_AT, STALL_SECONDS = 256 << 20, 3.0  # each receiver stops reading once, in the warm-up
DEADLINE = 540.0  # seconds for the transfer itself, under the 600 s timeout


class Stream:
    """EACH_WAY bytes of 1 MiB random blocks, each stamped with its number,
    so a lost, repeated or reordered block changes the digest."""

    block = bytearray(os.urandom(CHUNK))

    def __init__(self) -> None:
        self.sent = hashlib.sha256()
        self.received = hashlib.sha256()
        self.moved = 0  # bytes received, read by the RSS sampler

    def send(self, sock: socket.socket) -> None:
        chunk = bytearray(self.block)
        for n in range(EACH_WAY // CHUNK):
            struct.pack_into(">Q", chunk, 0, n)
            self.sent.update(chunk)
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)

    def receive(self, sock: socket.socket) -> None:
        buffer = bytearray(CHUNK)
        stalled = False
        while n := sock.recv_into(buffer):
            self.received.update(memoryview(buffer)[:n])
            self.moved += n
            if not stalled and self.moved >= STALL_AT:
                # Stop reading a while: the channel's window fills, and the
                # process that forwards to us holds all it allows. RSS only
                # records a high-water mark, so the warm-up's peak then
                # includes the most any later burst may buffer.
                stalled = True
                time.sleep(STALL_SECONDS)


def _target(listener: socket.socket, up: Stream, down: Stream) -> None:
    """The -L target: the first byte says U (we receive) or D (we send);
    a connection that says neither (the probe that -L listens) is dropped."""
    roles = {b"U": up.receive, b"D": down.send}
    while roles:
        conn, _ = listener.accept()
        work = roles.pop(conn.recv(1), None)
        if work is None:
            conn.close()
            continue
        threading.Thread(target=_serve, args=(work, conn), daemon=True).start()


def _serve(work: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with conn:
        work(conn)


def _upload(port: int, up: Stream) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(b"U")
        up.send(sock)
        sock.recv(1)  # the far side closes once it has it all


def _download(port: int, down: Stream) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(b"D")
        down.receive(sock)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _wait_listening(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # bounded: 30 s for hashike to log in and bind
        assert process.poll() is None, "hashike exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("hashike -L never listened")


def test_soak_10_gib_with_rekeys_intact_and_flat(tmp_path: Path) -> None:
    host_key, client_key = tmp_path / "host_key", tmp_path / "id_ed25519"
    write_private_key(generate_private_key(), host_key)
    user = generate_private_key()
    write_private_key(user, client_key)
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(user.public_key.openssh_line() + "\n")
    server = start_hashiked(tmp_path / "hashiked", host_key, authorized, "RekeyLimit=256M")
    listener = socket.create_server(("127.0.0.1", 0))
    up, down = Stream(), Stream()
    threading.Thread(target=_target, args=(listener, up, down), daemon=True).start()
    local = free_port()
    argv = [
        sys.executable, "-m", "hashike.cli.client", "-F", "none", "-p", str(server.port), "-N",
        "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'known'}",
        "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "RekeyLimit=256M", "-v",
        "-i", str(client_key), "-L", f"{local}:127.0.0.1:{listener.getsockname()[1]}", "127.0.0.1",
    ]  # fmt: skip
    client_log = tmp_path / "hashike.log"
    with open(client_log, "w") as log_file:
        client = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=log_file, text=True)
    try:
        _wait_listening(local, client)
        workers = [
            threading.Thread(target=_upload, args=(local, up), daemon=True),
            threading.Thread(target=_download, args=(local, down), daemon=True),
        ]
        for worker in workers:
            worker.start()
        baseline: dict[int, int] = {}
        peak: dict[int, int] = {}
        samples: list[tuple[int, ...]] = []  # GiB moved, server KiB, client KiB
        pids = (server.process.pid, client.pid)
        deadline = time.monotonic() + DEADLINE
        while any(w.is_alive() for w in workers):  # bounded by DEADLINE
            assert time.monotonic() < deadline, f"only {up.moved + down.moved} bytes in {DEADLINE} s"
            samples.append(((up.moved + down.moved) >> 30, *map(rss_kib, pids)))
            for pid in pids:
                rss = rss_kib(pid)
                if up.moved + down.moved < WARM:
                    baseline[pid] = max(baseline.get(pid, 0), rss)
                else:
                    peak[pid] = max(peak.get(pid, 0), rss)
            time.sleep(0.5)
        server.assert_healthy()
    finally:
        client.terminate()
        client.wait(30)
        server.stop()
    log = client_log.read_text()
    assert up.moved == down.moved == EACH_WAY, log
    assert up.received.hexdigest() == up.sent.hexdigest()
    assert down.received.hexdigest() == down.sent.hexdigest()
    for pid in pids:
        assert peak[pid] <= baseline[pid] * 1.2, (pid, baseline[pid], peak[pid], samples[::10])
    # Every 256 MiB one end or the other rekeys: some forty exchanges, at least half of them.
    exchanges = log.count("debug1: kex: ")
    assert exchanges > 2 * EACH_WAY // (256 << 20) // 2, log
