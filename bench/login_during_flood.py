"""How long a real client takes to log in while hashiked is flooded.

``python -m bench.login_during_flood`` starts the ``hashiked`` command on
127.0.0.1 and times ``hashike ... true`` and OpenSSH's ``ssh ... true``
(public key, wall clock from start to exit, median of ``--runs``), first with
the server idle, then while this process floods it with one hostile pattern
at a time:

- ``silent``: 1000 pre-auth connections that never send a byte (DHEat);
  MaxStartups is raised to 2000 so that they are all admitted;
- ``ping, never read``: 8 connections past the key exchange sending 32 KiB
  PINGs and never reading (CVE-2025-26466);
- ``ping, read``: the same 8, reading every reply, so the server works flat
  out for them all along;
- ``none``: 8 connections sending ``none`` auth requests as fast as the
  server answers, reconnecting once MaxAuthTries ends them.

Loopback only; a benchmark, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from hashike.keys.keypair import generate_private_key, write_private_key
from hashike.proto.constants import MsgType
from hashike.proto.wire import encode_byte, encode_string
from tests.aio.test_flood import handshake
from tests.interop.test_forward_openssh_to_hashiked import Hashiked, start_hashiked
from tests.proto.rawpeer import RawPeer

PING = encode_byte(MsgType.PING) + encode_string(b"p" * 32 * 1024)
NONE = (
    encode_byte(MsgType.USERAUTH_REQUEST)
    + encode_string(b"nobody")
    + encode_string(b"ssh-connection")
    + encode_string(b"none")
)
Flooder = Callable[[int, threading.Event], Coroutine[Any, Any, None]]


async def _open(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def _past_kex(port: int) -> tuple[socket.socket, RawPeer]:
    sock = await _open(port)
    raw = RawPeer(is_client=True)
    await handshake(sock, raw, lambda: raw.kex_count >= 1)
    return sock, raw


async def silent(port: int, stop: threading.Event) -> None:
    socks = []
    for _ in range(10):
        socks += await asyncio.gather(*(_open(port) for _ in range(100)))
    while not stop.is_set():
        await asyncio.sleep(0.1)
    for sock in socks:
        sock.close()


async def _pinger(port: int, stop: threading.Event, read: bool) -> None:
    loop = asyncio.get_running_loop()
    sock, raw = await _past_kex(port)
    with sock:
        while not stop.is_set():
            for _ in range(16):
                raw.send(PING)
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, raw.data_to_send()), 0.5)
            except TimeoutError:
                continue  # the server stopped reading us: it is meant to
            if read:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 0.5)


async def ping_never_read(port: int, stop: threading.Event) -> None:
    await asyncio.gather(*(_pinger(port, stop, read=False) for _ in range(8)))


async def ping_read(port: int, stop: threading.Event) -> None:
    await asyncio.gather(*(_pinger(port, stop, read=True) for _ in range(8)))


async def _none_requester(port: int, stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        sock, raw = await _past_kex(port)
        raw.send(encode_byte(MsgType.SERVICE_REQUEST) + encode_string(b"ssh-userauth"))
        with sock:
            while not stop.is_set():
                raw.send(NONE)
                await loop.sock_sendall(sock, raw.data_to_send())
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
                if not data:
                    break  # MaxAuthTries: connect again
                with contextlib.suppress(Exception):
                    raw.receive_data(data)


async def none_flood(port: int, stop: threading.Event) -> None:
    await asyncio.gather(*(_none_requester(port, stop) for _ in range(8)), return_exceptions=True)


def _login_seconds(argv: list[str]) -> float:
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {result.stderr}")
    return elapsed


def _clients(server: Hashiked, key: Path, known: Path) -> dict[str, list[str]]:
    common = [
        "-F", "none", "-p", str(server.port), "-i", str(key), "-o", f"UserKnownHostsFile={known}",
        "-o", "StrictHostKeyChecking=no", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
    ]  # fmt: skip
    clients = {"hashike": [sys.executable, "-m", "hashike.cli.client", *common, "127.0.0.1", "true"]}
    ssh = shutil.which("ssh")
    if ssh is not None:
        clients["ssh"] = [ssh, *common, "127.0.0.1", "true"]
    return clients


def _measure(clients: dict[str, list[str]], runs: int) -> dict[str, float]:
    return {name: statistics.median(_login_seconds(a) for _ in range(runs)) for name, a in clients.items()}


def _under(flooder: Flooder | None, port: int, clients: dict[str, list[str]], runs: int) -> dict[str, float]:
    if flooder is None:
        return _measure(clients, runs)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(flooder(port, stop)), daemon=True)
    thread.start()
    time.sleep(2)  # the flood is in full swing
    try:
        return _measure(clients, runs)
    finally:
        stop.set()
        thread.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    patterns: dict[str, Flooder | None] = {
        "idle": None,
        "silent": silent,
        "ping, never read": ping_never_read,
        "ping, read": ping_read,
        "none": none_flood,
    }
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        host_key, key = directory / "host_key", directory / "id_ed25519"
        write_private_key(generate_private_key(), host_key)
        user = generate_private_key()
        write_private_key(user, key)
        authorized = directory / "authorized_keys"
        authorized.write_text(user.public_key.openssh_line() + "\n")
        server = start_hashiked(directory, host_key, authorized, "MaxStartups=2000")
        try:
            clients = _clients(server, key, directory / "known_hosts")
            print("| server load | " + " | ".join(f"{name} login s" for name in clients) + " |")
            print("|---|" + "---:|" * len(clients))
            for name, flooder in patterns.items():
                seconds = _under(flooder, server.port, clients, args.runs)
                print(f"| {name} | " + " | ".join(f"{seconds[c]:.2f}" for c in clients) + " |", flush=True)
            server.assert_healthy()
        finally:
            server.stop()
    print(f"(median of {args.runs}; {os.cpu_count()} cores, shared with the flooder)")


if __name__ == "__main__":
    main()
