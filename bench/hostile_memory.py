"""What hostile peers cost an in-process hashike server, in memory.

``python -m bench.hostile_memory`` prints, for a ``listen()`` server on
127.0.0.1, against silent pre-authentication connections (the DHEat class):
with sshd's default MaxStartups 10:30:100 and a burst of them at once, how
many the server admitted and held at most, and its resident set before, at
the peak and after (it must not grow past what MaxStartups admits; measured
first, in a fresh process); then, with all N admitted, the resident set and
Python's traced memory while they are open and after they closed. Last,
what the server buffers while one raw client, past the key exchange, floods
32 KiB PINGs and never reads (the CVE-2025-26466 class). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import tracemalloc
from typing import Any

from hashike.aio.server import ServerOptions, listen
from hashike.proto.constants import MsgType
from hashike.proto.wire import encode_byte, encode_string
from tests.aio.test_flood import handshake
from tests.proto.pair import host_key
from tests.proto.rawpeer import RawPeer

MiB = 1024 * 1024
PING = encode_byte(MsgType.PING) + encode_string(b"p" * 32 * 1024)


def rss() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _connect(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def preauth(n: int) -> None:
    options = ServerOptions(max_startups=(3 * n, 100, 3 * n), login_grace_time=0)
    async with await listen("127.0.0.1", 0, host_keys=[host_key()], options=options) as server:
        gc.collect()
        rss0, traced0 = rss(), tracemalloc.get_traced_memory()[0]
        socks: list[socket.socket] = []
        for _ in range(n // 100):
            socks += await asyncio.gather(*(_connect(server.port) for _ in range(100)))
        for _ in range(6000):
            if len(server.connections) == n:
                break
            await asyncio.sleep(0.01)
        rss1, traced1 = rss(), tracemalloc.get_traced_memory()[0]
        for sock in socks:
            sock.close()
        for _ in range(6000):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        gc.collect()
        rss2, traced2 = rss(), tracemalloc.get_traced_memory()[0]
    print(f"{n} pre-auth connections: RSS {rss0:.0f} -> {rss1:.0f} MiB open -> {rss2:.0f} MiB closed;")
    print(f"  traced +{(traced1 - traced0) / MiB:.1f} MiB open, +{(traced2 - traced0) / MiB:.1f} MiB closed")


async def _first_line(sock: socket.socket) -> bytes:
    """What the server says first: its banner, or MaxStartups' refusal and EOF."""
    loop = asyncio.get_running_loop()
    data = b""
    while b"\n" not in data and len(data) < 256:
        chunk = await loop.sock_recv(sock, 256)
        if not chunk:
            break
        data += chunk
    return data


async def preauth_limited(n: int) -> None:
    """``n`` silent connections at once against sshd's default MaxStartups."""
    async with await listen("127.0.0.1", 0, host_keys=[host_key()], options=ServerOptions()) as server:
        gc.collect()
        rss0 = rss()
        tracemalloc.reset_peak()
        traced0 = tracemalloc.get_traced_memory()[0]
        peak, held = rss0, 0

        async def sample() -> None:
            nonlocal peak, held
            while True:  # cancelled below
                peak, held = max(peak, rss()), max(held, len(server.connections))
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        socks = await asyncio.gather(*(_connect(server.port) for _ in range(n)))
        answers = await asyncio.wait_for(asyncio.gather(*(_first_line(s) for s in socks)), 120)
        await asyncio.sleep(0.2)
        traced_peak = tracemalloc.get_traced_memory()[1]
        for sock in socks:
            sock.close()
        for _ in range(6000):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        sampler.cancel()
        gc.collect()
        rss2 = rss()
    admitted = sum(a.startswith(b"SSH-") for a in answers)
    refused = sum(a.startswith(b"Exceeded MaxStartups") for a in answers)
    print(f"{n} pre-auth connections at once, MaxStartups 10:30:100: {admitted} admitted, {refused} refused,")
    print(f"  at most {held} held; RSS {rss0:.0f} -> {peak:.0f} MiB peak -> {rss2:.0f} MiB closed;")
    print(f"  traced peak +{(traced_peak - traced0) / MiB:.1f} MiB")


def _buffered(pump: Any) -> int:
    t = pump.core.transport
    held: int = pump.transport.get_write_buffer_size() + t.pending_bytes + t._reader.buffered
    return held


async def flood(limit: int) -> None:
    async with await listen("127.0.0.1", 0, host_keys=[host_key()]) as server:
        sock = await _connect(server.port)
        raw = RawPeer(is_client=True)
        await handshake(sock, raw, lambda: raw.kex_count >= 1)
        await asyncio.sleep(0.1)
        (pump,) = server.connections
        gc.collect()
        rss0 = rss()
        out, sent, stalled, peak = b"", 0, 0, 0
        while sent < limit and stalled < 100:
            if not out:
                for _ in range(16):
                    raw.send(PING)
                out = raw.data_to_send()
            try:
                n = sock.send(out)
            except BlockingIOError:
                n = 0
            out, sent = out[n:], sent + n
            peak = max(peak, _buffered(pump))
            stalled = 0 if n else stalled + 1
            await asyncio.sleep(0 if n else 0.01)
        print(f"PING flood, never read: sent {sent / MiB:.1f} MiB,", end=" ")
        print(f"the server buffered at most {peak / MiB:.2f} MiB,")
        print(f"  RSS {rss0:.0f} -> {rss():.0f} MiB; server still reading: {sent >= limit}")
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000, help="all admitted (default 2000)")
    parser.add_argument("--burst", type=int, default=1000, help="against MaxStartups (default 1000)")
    parser.add_argument("--flood-mib", type=int, default=256)
    args = parser.parse_args()
    tracemalloc.start()
    asyncio.run(preauth_limited(args.burst))
    asyncio.run(preauth(args.connections))
    tracemalloc.stop()
    asyncio.run(flood(args.flood_mib * MiB))


if __name__ == "__main__":
    main()
