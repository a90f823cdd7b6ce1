"""The socket bridge's write path reuses its buffers (aio/bridge.py)."""

from __future__ import annotations

import os
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
        self.core = self
        self.channels = self

    def call_after_batch(self, fn: Callable[[], None]) -> None:
        self.after.append(fn)

    def acknowledge(self, channel_id: int, n: int) -> None:
        self.acknowledged += n

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
    # A hashike peer's 256 KiB packets: a write each, no copy into one.
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
