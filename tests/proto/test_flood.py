"""A peer that asks for replies and never reads them (the CVE-2025-26466
class): the core holds input back once MAX_UNSENT_BYTES of its output wait,
so what it queues stays bounded, and a peer that keeps sending beyond
MAX_HELD_INPUT is disconnected. Bounds are asserted on the bytes the core
holds, never on time."""

from __future__ import annotations

import pytest

from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import MsgType
from hashike.proto.events import Disconnected
from hashike.proto.packet import MAX_PACKET_LENGTH
from hashike.proto.transport import MAX_HELD_INPUT, MAX_UNSENT_BYTES, State
from hashike.proto.wire import encode_byte, encode_string
from tests.proto.pair import events_of
from tests.proto.rawpeer import Connection, RawPeer, new_client, new_server, pump, raw_for

PING = encode_byte(MsgType.PING) + encode_string(b"p" * 32 * 1024)
# One reply may still be sealed after the bound is crossed.
BOUND = MAX_UNSENT_BYTES + MAX_PACKET_LENGTH


def _held(conn: Connection) -> int:
    """The bytes the core holds: its unsent output and its unprocessed input."""
    t = conn.transport
    return t.pending_bytes + t._reader.buffered


def _opened(conn: Connection) -> RawPeer:
    raw = raw_for(conn)
    pump(raw, conn)
    assert conn.state is State.OPEN
    conn.data_to_send()  # what is queued so far is taken: only the flood counts
    return raw


def _flood(raw: RawPeer, conn: Connection, pings: int) -> None:
    """``pings`` PINGs fed in chunks of 20, none of the replies taken."""
    for _ in range(pings // 20):
        for _ in range(20):
            raw.send(PING)
        conn.receive_data(raw.data_to_send())
        assert conn.transport.pending_bytes <= BOUND


@pytest.mark.parametrize("side", ["server", "client"])
def test_cve_2025_26466_replies_to_a_reader_that_never_reads_are_bounded(side: str) -> None:
    conn: ClientConnection | ServerConnection = new_server() if side == "server" else new_client()
    raw = _opened(conn)
    # 40 PINGs of 32 KiB: 1.3 MiB of replies if all were answered.
    _flood(raw, conn, 40)
    assert conn.input_held
    assert not conn.closed
    assert _held(conn) <= BOUND + 40 * len(PING)
    # Once the runtime takes the output, the held input is processed: every
    # PING gets its PONG, in order.
    for _ in range(10):  # bounded: each round answers about 1 MiB
        raw.receive_data(conn.data_to_send())
        conn.receive_data(b"")
        if not conn.input_held:
            break
    raw.receive_data(conn.data_to_send())
    pongs = sum(1 for p in raw.inbox if p[0] == MsgType.PONG)
    assert pongs == 40
    assert not conn.input_held


@pytest.mark.parametrize("side", ["server", "client"])
def test_cve_2025_26466_a_peer_that_keeps_sending_is_disconnected(side: str) -> None:
    conn: ClientConnection | ServerConnection = new_server() if side == "server" else new_client()
    raw = _opened(conn)
    # Far more than both bounds: the output bound holds input, the input
    # bound ends the connection.
    total = 2 * (MAX_UNSENT_BYTES + MAX_HELD_INPUT) // len(PING) + 20
    for _ in range(total // 20):
        if conn.closed:
            break
        for _ in range(20):
            raw.send(PING)
        conn.receive_data(raw.data_to_send())
        assert _held(conn) <= BOUND + MAX_HELD_INPUT + 20 * len(PING)
    assert conn.state is State.ERROR
    (gone,) = events_of(conn.events_received(), Disconnected)
    assert not gone.by_peer
    assert "without reading" in gone.description
