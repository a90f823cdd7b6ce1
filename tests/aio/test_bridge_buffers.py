"""The socket bridge's write path reuses its buffers (aio/bridge.py)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any, cast

from hashike.aio.bridge import SocketBridge


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffers: set[int] = set()

    def write(self, data: bytes | memoryview) -> None:
        self.written.append(bytes(data))  # what a selector transport does with a tail
        if isinstance(data, memoryview):
            self.buffers.add(id(data.obj))

    def is_closing(self) -> bool:
        return False


class _Pump:
    def __init__(self) -> None:
        self.after: list[Callable[[], None]] = []
        self.acknowledged = 0
        self.closed = False
        self.core = self
        self.channels = self

    def call_after_batch(self, fn: Callable[[], None]) -> None:
        self.after.append(fn)

    def acknowledge(self, channel_id: int, n: int) -> None:
        self.acknowledged += n

    def close(self, channel_id: int) -> None:
        self.closed = True

    def flush(self) -> None:
        pass

    def end_batch(self) -> None:
        after, self.after = self.after, []
        for fn in after:
            fn()


def test_a_batch_of_pieces_is_one_write_from_one_reused_buffer() -> None:
    # A b"".join per batch was a fresh 256 KiB object each time: page faults
    # when glibc trimmed the heap and grew it back.
    pump = _Pump()
    bridge = SocketBridge(cast(Any, pump), channel_id=0)
    transport = _Transport()
    bridge.transport = cast(Any, transport)
    for _ in range(50):
        pieces = [os.urandom(32768) for _ in range(8)]
        for piece in pieces:
            bridge.channel_data(memoryview(piece))
        pump.end_batch()
        assert transport.written[-1] == b"".join(pieces)
    assert len(transport.written) == 50
    assert len(transport.buffers) == 1
    assert pump.acknowledged == 50 * 8 * 32768


def test_a_buffer_a_transport_kept_is_not_reused() -> None:
    pump = _Pump()
    bridge = SocketBridge(cast(Any, pump), channel_id=0)
    kept: list[memoryview] = []

    class Keeping(_Transport):
        def write(self, data: bytes | memoryview) -> None:
            assert isinstance(data, memoryview)
            kept.append(data)  # a loop that sends later, from the caller's buffer

    bridge.transport = cast(Any, Keeping())
    batches = [[os.urandom(1000), os.urandom(2000)] for _ in range(5)]
    for batch in batches:
        for piece in batch:
            bridge.channel_data(memoryview(piece))
        pump.end_batch()
    assert [bytes(v) for v in kept] == [b"".join(b) for b in batches]


def test_large_pieces_are_written_as_they_are() -> None:
    # A hashike peer's large packets: a write each, no copy into one.
    pump = _Pump()
    bridge = SocketBridge(cast(Any, pump), channel_id=0)
    transport = _Transport()
    bridge.transport = cast(Any, transport)
    pieces = [os.urandom(200_000) for _ in range(3)]
    for piece in pieces:
        bridge.channel_data(memoryview(piece))
    pump.end_batch()
    assert transport.written == pieces
    assert transport.buffers == {id(p) for p in pieces}  # the pieces' own buffers
    assert pump.acknowledged == 600_000


# ---------------------------------------------- a real socket: one writev


async def _bridge_on_socket(sndbuf: int = 0) -> tuple[_Pump, SocketBridge, socket.socket]:
    """A bridge whose local end is one side of a socket pair, under asyncio's
    own transport; the other side is returned, non-blocking."""
    ours, theirs = socket.socketpair()
    if sndbuf:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    theirs.setblocking(False)
    pump = _Pump()
    bridge = SocketBridge(cast(Any, pump), channel_id=0)
    await asyncio.get_running_loop().connect_accepted_socket(lambda: bridge, ours)
    return pump, bridge, theirs


async def _read(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    async with asyncio.timeout(10):
        while len(got) < n:
            chunk = await loop.sock_recv(sock, n - len(got))
            assert chunk, "the bridge's socket closed early"
            got += chunk
    return bytes(got)


async def test_small_pieces_leave_in_one_system_call_from_their_own_views() -> None:
    # Small packets, in batches the socket takes whole: gathered by writev,
    # never copied into one buffer.
    pump, bridge, theirs = await _bridge_on_socket()
    try:
        for _ in range(20):
            pieces = [os.urandom(16384) for _ in range(4)]
            for piece in pieces:
                bridge.channel_data(memoryview(piece))
            pump.end_batch()
            assert await _read(theirs, 4 * 16384) == b"".join(pieces)
        assert not bridge._joined  # never coalesced
        assert pump.acknowledged == 20 * 4 * 16384
    finally:
        assert bridge.transport is not None
        bridge.transport.close()
        theirs.close()


async def test_what_the_socket_did_not_take_follows_in_order() -> None:
    # A reader that does not keep up: writev takes part of a batch, asyncio
    # buffers the rest, and later batches queue behind it.
    pump, bridge, theirs = await _bridge_on_socket(sndbuf=64 * 1024)
    transport = bridge.transport
    assert transport is not None
    try:
        sent: list[bytes] = []
        buffered = False
        for _ in range(12):
            pieces = [os.urandom(32768) for _ in range(8)]
            sent += pieces
            for piece in pieces:
                bridge.channel_data(memoryview(piece))
            pump.end_batch()
            buffered = buffered or transport.get_write_buffer_size() > 0
        assert buffered
        assert await _read(theirs, len(sent) * 32768) == b"".join(sent)
    finally:
        transport.close()
        theirs.close()


async def test_a_broken_socket_under_writev_closes_the_channel() -> None:
    pump, bridge, theirs = await _bridge_on_socket()
    theirs.close()
    async with asyncio.timeout(10):
        while not pump.closed:  # the transport reports the error, the bridge closes
            bridge.channel_data(memoryview(os.urandom(32768)))
            pump.end_batch()
            await asyncio.sleep(0.01)
    assert bridge.transport is not None and bridge.transport.is_closing()
