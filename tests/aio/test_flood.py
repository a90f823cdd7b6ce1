"""A peer that floods requests for replies and never reads them (the
CVE-2025-26466 class), against the real asyncio runtime: a raw socket on
127.0.0.1 completes the key exchange (tests/proto/rawpeer.py), then sends 32 KiB
PINGs without reading. The victim, our server or our client, must stop
reading instead of queueing the PONGs: what it buffers (its socket's write
buffer, the core's output and held input) stays bounded while the flood goes
on, and the connection goes away when the flooder does."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hashike.aio.client import connect
from hashike.aio.pump import CorePump
from hashike.aio.server import listen
from hashike.proto.constants import MsgType
from hashike.proto.wire import encode_byte, encode_string
from tests.aio.forwarding import hashike_pair
from tests.echo import start_echo_server
from tests.helpers import eventually
from tests.proto.pair import host_key
from tests.proto.rawpeer import RawPeer

PING = encode_byte(MsgType.PING) + encode_string(b"p" * 32 * 1024)
# Sent at most: far beyond what loopback's socket buffers hold, so a victim
# that keeps reading and answering would buffer tens of MiB.
FLOOD_LIMIT = 48 * 1024 * 1024
# What the victim may hold: its socket's write buffer past the high-water
# mark by one batch of replies, the core's output bound and held input.
BOUND = 4 * 1024 * 1024


def buffered(pump: CorePump[Any]) -> int:
    """The bytes one connection holds for its peer or from it, in user space."""
    assert pump.transport is not None
    t = pump.core.transport
    held: int = pump.transport.get_write_buffer_size() + t.pending_bytes + t._reader.buffered
    return held


async def handshake(sock: socket.socket, raw: RawPeer, done: Callable[[], bool]) -> None:
    """Move bytes until ``done()`` (bounded rounds, each read bounded in time)."""
    loop = asyncio.get_running_loop()
    for _ in range(100):
        out = raw.data_to_send()
        if out:
            await loop.sock_sendall(sock, out)
        if done():
            return
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
        assert data, "the victim closed the connection during the handshake"
        raw.receive_data(data)
    raise AssertionError("handshake did not finish")


async def flood(sock: socket.socket, raw: RawPeer, victim: CorePump[Any]) -> int:
    """Send PINGs, never reading, until the victim has stopped reading and
    the socket takes no more, or FLOOD_LIMIT bytes went; the bytes sent.
    Checks the victim's buffered bytes all along."""
    out, sent, stalled = b"", 0, 0
    for _ in range(200_000):  # bounded; each round sends or waits 10 ms
        if sent >= FLOOD_LIMIT or stalled > 20:
            break
        if not out:
            for _ in range(16):
                raw.send(PING)
            out = raw.data_to_send()
        try:
            n = sock.send(out)
        except BlockingIOError:
            n = 0
        out, sent = out[n:], sent + n
        assert buffered(victim) <= BOUND
        if n:
            stalled = 0
            await asyncio.sleep(0)
        else:
            stalled += victim._reading_held
            await asyncio.sleep(0.01)
    return sent


def raw_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


async def test_cve_2025_26466_server_stops_reading_a_client_that_never_reads() -> None:
    async with await listen("127.0.0.1", 0, host_keys=[host_key()]) as server:
        sock = raw_socket()
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
            raw = RawPeer(is_client=True)
            await handshake(sock, raw, lambda: raw.kex_count >= 1)
            (pump,) = server.connections
            await eventually(lambda: pump.core.transport.negotiated is not None, what="server NEWKEYS")
            sent = await flood(sock, raw, pump)
            assert pump._reading_held, f"the server still reads after {sent} bytes of PINGs"
            assert sent < FLOOD_LIMIT
            assert buffered(pump) <= BOUND
            assert not pump.core.closed  # paused, not failed: the peer may read again
        finally:
            sock.close()
        await eventually(lambda: not server.connections, what="the server forgets the flooder")


async def test_cve_2025_26466_client_stops_reading_a_server_that_never_reads() -> None:
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    with listener:
        task = loop.create_task(
            connect("127.0.0.1", listener.getsockname()[1], check_host_key=lambda key: True, timeout=20)
        )
        sock, _ = await asyncio.wait_for(loop.sock_accept(listener), 10)
        sock.setblocking(False)
        try:
            raw = RawPeer(is_client=False, host_key=host_key())
            service = encode_byte(MsgType.SERVICE_REQUEST) + encode_string("ssh-userauth")
            await handshake(sock, raw, lambda: service in raw.inbox)
            raw.send(encode_byte(MsgType.SERVICE_ACCEPT) + encode_string("ssh-userauth"))
            await loop.sock_sendall(sock, raw.data_to_send())
            client = await asyncio.wait_for(task, 10)
            pump = client._pump
            sent = await flood(sock, raw, pump)
            assert pump._reading_held, f"the client still reads after {sent} bytes of PINGs"
            assert sent < FLOOD_LIMIT
            assert buffered(pump) <= BOUND
        finally:
            sock.close()
        await asyncio.wait_for(client.wait_closed(), 10)


async def test_bulk_data_both_ways_through_tunnels_does_not_stall(tmp_path: Path) -> None:
    # Both ends are write-paused at times; neither may stop reading then, or
    # both would wait for ever. Four echoes of 16 MiB at once through -L.
    echo = await start_echo_server()
    size = 16 * 1024 * 1024
    async with echo, hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_local(None, 0, "127.0.0.1", echo.sockets[0].getsockname()[1])

        async def one(seed: int) -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            block = bytes([seed]) * (256 * 1024)

            async def send() -> None:
                for _ in range(size // len(block)):
                    writer.write(block)
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.get_running_loop().create_task(send())
            got = 0
            while chunk := await reader.read(1 << 18):
                assert chunk == bytes([seed]) * len(chunk)
                got += len(chunk)
            await sender
            writer.close()
            return got

        results = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(4))), 120)
        assert results == [size] * 4
