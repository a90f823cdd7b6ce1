"""The core's receive_buffer()/receive_into() (asyncio's BufferedProtocol):
a whole connection, version lines included, arrives through it."""

from __future__ import annotations

import random

import pytest

from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.events import ChannelData, ChannelOpenRequested, Disconnected
from tests.proto.authkit import logged_in
from tests.proto.pair import ConnectionPair, events_of


def _into(core: ServerConnection | ClientConnection, data: bytes | memoryview, rng: random.Random) -> None:
    """``data`` written into the core's own buffers in random pieces, as recv_into would."""
    pos = 0
    while pos < len(data):
        room = core.receive_buffer()
        assert len(room) > 0
        n = min(len(room), len(data) - pos, rng.randint(1, 70_000))
        room[:n] = data[pos : pos + n]
        del room  # asyncio drops its view once buffer_updated returns
        core.receive_into(n)
        pos += n


def _pump_into(pair: ConnectionPair, rng: random.Random) -> None:
    """ConnectionPair.pump, with the server's input received in place."""
    for _ in range(50):
        c2s, s2c = pair.client.data_to_send(), pair.server.data_to_send()
        if not c2s and not s2c:
            return
        _into(pair.server, c2s, rng)
        pair.client.receive_data(s2c)
        pair._collect()
    raise AssertionError("connection pair did not settle")


@pytest.mark.parametrize("seed", range(5))
def test_the_key_exchange_received_in_place(seed: int) -> None:
    pair = ConnectionPair()
    _pump_into(pair, random.Random(seed))
    assert pair.server.transport.state.name == "OPEN"
    assert not events_of(pair.server_events, Disconnected)
    # An idle connection keeps no scratch and a small read buffer.
    assert len(pair.server.transport._scratch) == 0
    assert len(pair.server.receive_buffer()) == 4096


def test_channel_data_received_in_place() -> None:
    rng = random.Random(7)
    pair = logged_in()
    cid = pair.client.channels.open_direct_tcpip("h", 1, "o", 2)
    pair.pump()
    sid = events_of(pair.server_events, ChannelOpenRequested)[0].channel_id
    pair.server.channels.accept_open(sid)
    pair.pump()
    sent = rng.randbytes(100_000)
    for start in range(0, len(sent), 30_000):
        pair.client.channels.send_data(cid, sent[start : start + 30_000])
    _into(pair.server, pair.client.data_to_send(), rng)
    got = b"".join(bytes(e.data) for e in events_of(pair.server.events_received(), ChannelData))
    assert got == sent


def test_after_the_end_input_is_dropped() -> None:
    pair = logged_in()
    pair.server.close("bye")
    room = pair.server.receive_buffer()
    room[:4] = b"\xff\xff\xff\xff"  # would be a bad packet length
    del room
    pair.server.receive_into(4)
    disconnects = events_of(pair.server.events_received(), Disconnected)
    assert [d.description for d in disconnects] == ["bye"]
