"""Window auto-tuning under a consumer that stops reading (proto/window.py,
RFC 4254 §5.2): a download through hashike's ``-L`` from hashiked, whose local
reader stops. The sender ends up blocked on the window, what the client holds
stays within the window it granted, and once the reader resumes every byte
arrives intact."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path

from hashike.aio.bridge import WRITE_HIGH_WATER, SocketBridge
from hashike.aio.client import SSHClient
from hashike.aio.server import Server
from tests.aio.forwarding import hashike_pair
from tests.helpers import eventually

MiB = 1 << 20
CAP = 4 * MiB  # the client's per-channel maximum here, so a few MiB show the bound
SIZE = 32 * MiB  # more than the cap, the asyncio buffer and the kernel's together
# The bridge writes a whole batch of input before asyncio pauses it: one
# socket read's packets, at most an inbox arena (proto/inbox.py).
BATCH = 1 * MiB


async def _start_source(digest: hashlib._Hash) -> asyncio.Server:
    """Serves SIZE bytes (1 MiB blocks, each rotated) to its one connection."""

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        block = os.urandom(MiB)
        for i in range(SIZE // MiB):
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _bridge(client: SSHClient) -> tuple[int, SocketBridge]:
    (cid, handler), *_ = client._pump.bridges.items()
    assert isinstance(handler, SocketBridge)
    return cid, handler


def _sender_blocked(server: Server) -> bool:
    """hashiked's end of the one channel may send nothing more."""
    (pump,) = server.connections
    channels = pump.core.channels
    return len(channels) == 1 and channels.window_available(channels.ids()[0]) == 0


async def test_a_reader_that_stops_holds_no_more_than_the_window(tmp_path: Path) -> None:
    sent = hashlib.sha256()
    source = await _start_source(sent)
    async with hashike_pair(tmp_path) as (server, client):
        client.core.channels.tuning.max_window = CAP
        listener = await client.forward_local(None, 0, "127.0.0.1", source.sockets[0].getsockname()[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # the kernel holds little for us
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", listener.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        got = hashlib.sha256(await reader.readexactly(4096))  # data flows; now the reader stops
        await eventually(lambda: client.forwarded_channels() == 1, what="the forward's channel")
        cid, bridge = _bridge(client)
        chan = client.core.channels._channels[cid]
        await eventually(
            lambda: _sender_blocked(server) and chan.local_window == 0,
            timeout=30,
            what=lambda: f"client window {chan.local_window}, unacknowledged {chan.unacked}",
        )
        # The sender used every byte we granted; all of it waits here,
        # unacknowledged, and no more than the window we keep granted.
        assert chan.tuning.size <= CAP
        assert chan.unacked + chan.consumed == chan.tuning.size
        assert bridge.transport is not None
        # asyncio holds what was acknowledged below its high mark, one batch
        # that crossed it, and what is unacknowledged.
        assert bridge.transport.get_write_buffer_size() <= chan.unacked + WRITE_HIGH_WATER + BATCH
        # The reader resumes: the rest arrives, intact.
        received = 4096 + await asyncio.wait_for(_read_to_eof(reader, got), 60)
        writer.close()
    source.close()
    assert (received, got.hexdigest()) == (SIZE, sent.hexdigest())


async def _read_to_eof(reader: asyncio.StreamReader, digest: hashlib._Hash) -> int:
    n = 0
    while chunk := await reader.read(MiB):  # bounded: the source sends SIZE, then closes
        digest.update(chunk)
        n += len(chunk)
    return n
