"""Channel data read straight into the packet being built
(Channels.data_buffer / send_buffer, Transport.reserve / send_reserved,
PacketWriter.reserve): what is sent is what was written into the room, the
room never exceeds the window or the peer's packet, and none is offered
while a key exchange holds sends back."""

from __future__ import annotations

import os

import pytest

from hashike.proto.channels import DIRECT_MIN, Channels
from hashike.proto.errors import LocalProtocolError
from hashike.proto.events import ChannelData, ChannelOpenRequested
from tests.proto.authkit import logged_in
from tests.proto.pair import ConnectionPair, events_of
from tests.proto.test_channels import Pair, Side, received


def _open(pair: ConnectionPair) -> tuple[int, int]:
    cid = pair.client.channels.open_direct_tcpip("h", 1, "o", 2)
    pair.pump()
    sid = events_of(pair.server_events, ChannelOpenRequested)[0].channel_id
    pair.server.channels.accept_open(sid)
    pair.pump()
    pair.server_events.clear()
    return cid, sid


def _server_data(pair: ConnectionPair) -> bytes:
    pair.server.receive_data(pair.client.data_to_send())
    return b"".join(bytes(e.data) for e in events_of(pair.server.events_received(), ChannelData))


def test_what_is_written_into_the_room_is_what_arrives() -> None:
    pair = logged_in()
    cid, _ = _open(pair)
    sent = b""
    for n in (DIRECT_MIN, 1, 100_000):
        room = pair.client.channels.data_buffer(cid)
        assert room is not None and len(room) >= n
        chunk = os.urandom(n)
        room[:n] = chunk
        del room
        pair.client.channels.send_buffer(cid, n)
        sent += chunk
    assert _server_data(pair) == sent


def test_the_room_is_bounded_by_the_peer_packet_and_window() -> None:
    pair = logged_in()
    cid, _ = _open(pair)
    chan = pair.client.channels.channel(cid)
    room = pair.client.channels.data_buffer(cid)
    assert room is not None
    # Within the channel's bounds and the transport's (RFC 4253 §6.1, less
    # the worst-case packet overhead), which is the smaller here.
    assert len(room) <= min(chan.remote_window, chan.remote_max_packet)
    assert len(room) == pair.client.channels.peer_max_packet - 101
    del room
    with pytest.raises(LocalProtocolError):
        pair.client.channels.send_buffer(cid, chan.remote_max_packet + 1)


def test_no_room_while_a_key_exchange_holds_sends() -> None:
    pair = logged_in()
    cid, _ = _open(pair)
    pair.client.start_rekey()
    assert pair.client.transport.send_blocked
    assert pair.client.channels.data_buffer(cid) is None
    with pytest.raises(LocalProtocolError):
        pair.client.transport.send_reserved(b"\x5e", 1)
    pair.pump()
    room = pair.client.channels.data_buffer(cid)  # the exchange is over
    assert room is not None
    room[:3] = b"abc"
    del room
    pair.client.channels.send_buffer(cid, 3)
    assert _server_data(pair) == b"abc"


class _Reserve:
    """A transport's reserve/commit, for a Channels table alone."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.room = bytearray()

    def reserve(self, offset: int, n: int) -> memoryview | None:
        self.room = bytearray(n)
        return memoryview(self.room)

    def send_reserved(self, head: bytes, n: int) -> None:
        self.side.sent.append((head, bytes(self.room[:n])))


def test_small_packets_or_a_small_window_get_no_room() -> None:
    small = Pair(a={"peer_max_packet": 300_000}, b={"max_packet": 32 * 1024})
    small.a.ch._direct = _Reserve(small.a)
    aid, _ = small.open()
    assert small.a.ch.data_buffer(aid) is None  # 32 KiB packets: send_data is cheaper
    tight = Pair(a={"peer_max_packet": 300_000}, b={"window": DIRECT_MIN - 1, "max_packet": 200_000})
    tight.a.ch._direct = _Reserve(tight.a)
    aid, _ = tight.open()
    assert tight.a.ch.data_buffer(aid) is None


def test_a_table_with_room_sends_it_as_channel_data() -> None:
    pair = Pair(a={"peer_max_packet": 300_000}, b={"window": 1 << 20, "max_packet": 200_000})
    direct = _Reserve(pair.a)
    pair.a.ch._direct = direct
    aid, bid = pair.open()
    room = pair.a.ch.data_buffer(aid)
    assert room is not None and len(room) == 200_000
    room[:5] = b"hello"
    pair.a.ch.send_buffer(aid, 5)
    pair.pump()
    assert received(pair.b, bid) == b"hello"
    assert pair.a.ch.window_available(aid) == (1 << 20) - 5


def test_channels_without_a_transport_offer_no_room() -> None:
    table = Channels(lambda head, data: None, [])
    assert table._direct is None
