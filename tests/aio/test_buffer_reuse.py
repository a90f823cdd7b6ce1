"""Buffer reuse on the data path must never hand a buffer out again while its
bytes are still on their way (proto/packet.py, aio/bridge.py): integrity over
256 MiB each way through ``-L`` with slow and fast readers taking turns at
both ends, and 1000 rounds of a far reader stopping and starting; each with
hashike's large packets (a write per piece, reads straight into packets) and
with OpenSSH's 32 KiB ones (a batch of pieces in one writev, reads split
into packets)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashike.proto import connection
from hashike.proto.channels import Channels
from tests.aio.forwarding import hashike_pair
from tests.echo import INTEGRITY_SIZE

MiB = 1 << 20
FAST_PHASE = 15 * MiB  # read at full speed, then
SLOW_PHASE = 1 * MiB  # small reads with pauses: the writer's buffers fill and credit is held


async def _alternating_read(reader: asyncio.StreamReader, digest: hashlib._Hash) -> int:
    """Read to EOF, fast and slow by turns; the byte count."""
    total = 0
    while True:
        slow = total % (FAST_PHASE + SLOW_PHASE) >= FAST_PHASE
        chunk = await reader.read(4096 if slow else MiB)
        if not chunk:
            return total
        if slow and total % (64 * 1024) < len(chunk):
            await asyncio.sleep(0.01)
        digest.update(chunk)
        total += len(chunk)


async def _alternating_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo, reading fast and slow by turns; half-close after the EOF."""
    total = 0
    try:
        while True:
            slow = total % (FAST_PHASE + SLOW_PHASE) >= FAST_PHASE
            chunk = await reader.read(4096 if slow else MiB)
            if not chunk:
                break
            if slow and total % (64 * 1024) < len(chunk):
                await asyncio.sleep(0.01)
            total += len(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    finally:
        writer.close()


@pytest.fixture(params=["hashike", "openssh"])
def packets(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The channels' packet size: a hashike peer's, or (both ends announcing
    it) OpenSSH's 32 KiB. Yields the piece counts of the bridges' writevs,
    which the small packets must have used."""
    if request.param == "openssh":
        monkeypatch.setattr(connection, "HASHIKE_MAX_PACKET", connection.OPENSSH_MAX_PACKET)
    gathered: list[int] = []
    writev = os.writev

    def counted(fd: int, buffers: list[bytes | memoryview]) -> int:
        gathered.append(len(buffers))
        return writev(fd, buffers)

    monkeypatch.setattr(os, "writev", counted)
    yield gathered
    if request.param == "openssh":
        assert gathered, "no batch of small pieces went out in one writev"


async def test_integrity_with_slow_and_fast_readers_at_both_ends(tmp_path: Path, packets: list[int]) -> None:
    echo = await asyncio.start_server(_alternating_echo, "127.0.0.1", 0)
    port = echo.sockets[0].getsockname()[1]
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_local("127.0.0.1", 0, "127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        sent, got = hashlib.sha256(), hashlib.sha256()
        reading = asyncio.ensure_future(_alternating_read(reader, got))
        block = os.urandom(MiB)
        for i in range(INTEGRITY_SIZE // MiB):
            chunk = block[i:] + block[:i]  # no two blocks alike
            sent.update(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        received = await asyncio.wait_for(reading, 300)
        writer.close()
        assert received == INTEGRITY_SIZE
        assert got.hexdigest() == sent.hexdigest()
    echo.close()


ROUNDS = 1000


class _StopStartSink(asyncio.Protocol):
    """The far reader: stops reading after every read, for a moment (a longer
    one every 100th), and starts again; hashes what it got."""

    def __init__(self) -> None:
        self.rounds = 0
        self.digest = hashlib.sha256()
        self.received = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.digest.update(data)
        self.received += len(data)
        assert self.transport is not None
        self.transport.pause_reading()
        self.rounds += 1
        delay = 0.05 if self.rounds % 100 == 0 else 0.001
        asyncio.get_running_loop().call_later(delay, self.transport.resume_reading)

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(None)
        return False


async def test_far_reader_stopping_and_starting_a_thousand_times(tmp_path: Path, packets: list[int]) -> None:
    sinks: list[_StopStartSink] = []

    def make_sink() -> _StopStartSink:
        sinks.append(_StopStartSink())
        return sinks[-1]

    loop = asyncio.get_running_loop()
    target = await loop.create_server(make_sink, "127.0.0.1", 0)
    port = target.sockets[0].getsockname()[1]
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_local("127.0.0.1", 0, "127.0.0.1", port)
        _reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        sent = hashlib.sha256()
        total = 0
        block = os.urandom(256 * 1024)

        async def send_until_enough_rounds() -> None:
            nonlocal total
            while not sinks or sinks[0].rounds < ROUNDS:
                chunk = block[total % len(block) :] + block[: total % len(block)]
                sent.update(chunk)
                writer.write(chunk)
                total += len(chunk)
                await writer.drain()
            writer.write_eof()
            await sinks[0].done

        await asyncio.wait_for(send_until_enough_rounds(), 300)
        writer.close()
        (sink,) = sinks
        assert sink.rounds >= ROUNDS
        assert sink.received == total
        assert sink.digest.hexdigest() == sent.hexdigest()
    target.close()


async def test_reads_go_straight_into_packets_between_hashike_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 256 KiB packets the bridges read their sockets into the packet
    being built (Channels.send_buffer), both ways, and the bytes are intact."""
    direct = [0]
    send_buffer = Channels.send_buffer

    def counted(self: Channels, channel_id: int, n: int) -> None:
        direct[0] += n
        send_buffer(self, channel_id, n)

    monkeypatch.setattr(Channels, "send_buffer", counted)
    echo = await asyncio.start_server(_alternating_echo, "127.0.0.1", 0)
    port = echo.sockets[0].getsockname()[1]
    size = 32 * MiB
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_local("127.0.0.1", 0, "127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        sent, got = hashlib.sha256(), hashlib.sha256()
        reading = asyncio.ensure_future(_alternating_read(reader, got))
        for _ in range(size // MiB):
            chunk = os.urandom(MiB)
            sent.update(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        received = await asyncio.wait_for(reading, 120)
        writer.close()
    echo.close()
    assert received == size and got.hexdigest() == sent.hexdigest()
    # Each way most bytes took the direct path (the rest: reads while the
    # window was short, or during a rekey).
    assert direct[0] > size
