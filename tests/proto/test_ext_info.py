"""RFC 8308 extension negotiation: EXT_INFO right after the first NEWKEYS only,
server-sig-algs and ping@openssh.com from the server, and hashike's own
max-packet-length extension between two hashike peers."""

from __future__ import annotations

import os

import pytest

from hashike.proto.config import SUPPORTED_HOST_KEY_ALGORITHMS
from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.errors import LocalProtocolError
from hashike.proto.events import (
    ChannelData,
    ChannelOpenRequested,
    Disconnected,
    Event,
    ExtInfoReceived,
    KexCompleted,
    PongReceived,
)
from hashike.proto.packet import BULK_PACKET_LENGTH, MAX_PACKET_LENGTH
from hashike.proto.transport import DEFAULT_PEER_MAX_PACKET, EXT_MAX_PACKET
from hashike.proto.wire import Reader, encode_byte, encode_string, encode_uint32
from tests.proto.authkit import logged_in
from tests.proto.pair import ConnectionPair, events_of
from tests.proto.rawpeer import RawPeer, ext_info_payload, new_client, new_server, pump, raw_for

Connection = ClientConnection | ServerConnection
ROLES = ["hashike-client", "hashike-server"]
IGNORE = encode_byte(MsgType.IGNORE) + encode_string(b"")
SOME_EXT = ext_info_payload({"ping@openssh.com": b"0"})


def _decode_ext_info(payload: bytes) -> dict[str, bytes]:
    r = Reader(payload, 1)
    out = {}
    for _ in range(r.uint32()):
        name = r.ascii()
        out[name] = r.string()
    r.check_end()
    return out


def _conn(role: str) -> Connection:
    return new_client() if role == "hashike-client" else new_server()


def _opened(role: str, **raw_options: bool) -> tuple[Connection, RawPeer, list[Event]]:
    conn = _conn(role)
    raw = raw_for(conn, **raw_options)
    events = pump(raw, conn)
    assert events_of(events, KexCompleted)
    assert not events_of(events, Disconnected)
    return conn, raw, events


def _refused(events: list[Event]) -> Disconnected:
    (disconnected,) = events_of(events, Disconnected)
    assert disconnected.reason == DisconnectReason.PROTOCOL_ERROR
    assert not disconnected.by_peer
    return disconnected


def test_pair_exchanges_ext_info_and_large_packets() -> None:
    pair = ConnectionPair()
    pair.pump()
    (to_client,) = events_of(pair.client_events, ExtInfoReceived)
    sig_algs = to_client.extensions["server-sig-algs"].decode().split(",")
    assert set(sig_algs) == set(SUPPORTED_HOST_KEY_ALGORITHMS)
    assert to_client.extensions["ping@openssh.com"] == b"0"
    (to_server,) = events_of(pair.server_events, ExtInfoReceived)
    assert "server-sig-algs" not in to_server.extensions  # a server-only extension
    assert "ping@openssh.com" not in to_server.extensions
    # Between two hashike peers both sides may send packets beyond 35000 bytes.
    for t in (pair.client.transport, pair.server.transport):
        assert t.peer_max_packet == BULK_PACKET_LENGTH > 35_000
    # The client can ping the server, not the other way round.
    pair.client.transport.send_ping(b"hi")
    pair.pump()
    assert events_of(pair.client_events, PongReceived) == [PongReceived(data=b"hi")]
    with pytest.raises(LocalProtocolError):
        pair.server.transport.send_ping(b"hi")


@pytest.mark.parametrize("role", ROLES)
def test_packets_past_openssh_s_bound_wait_for_authentication(role: str) -> None:
    # Our EXT_INFO announces 1 MiB, but until the user is authenticated a
    # packet larger than OpenSSH's 256 KiB ends the connection: that is all
    # an unauthenticated peer can make us buffer.
    conn, raw, events = _opened(role)
    raw.reader.max_length = BULK_PACKET_LENGTH
    raw.send(encode_byte(MsgType.IGNORE) + encode_string(bytes(MAX_PACKET_LENGTH)))
    pump(raw, conn, events, feed_raw=False)
    assert "bad packet length" in _refused(events).description


def test_logged_in_hashike_peers_send_data_in_packets_past_openssh_s_bound() -> None:
    pair = logged_in()
    cid = pair.client.channels.open_direct_tcpip("h", 1, "o", 2)
    pair.pump()
    (opened,) = events_of(pair.server_events, ChannelOpenRequested)
    pair.server.channels.accept_open(opened.channel_id)
    pair.pump()
    data = os.urandom(BULK_PACKET_LENGTH - 1024)
    packets = pair.client.transport._writer.packets
    assert pair.client.channels.send_data(cid, data) == len(data)
    assert pair.client.transport._writer.packets == packets + 1  # in one packet
    pair.pump()
    received = events_of(pair.server_events, ChannelData)
    assert [bytes(e.data) for e in received] == [data]
    assert not events_of(pair.server_events, Disconnected)


def test_server_sends_ext_info_right_after_first_newkeys() -> None:
    server = new_server()
    raw = raw_for(server)
    pump(raw, server)
    types = [p[0] for p in raw.received]
    assert types == [MsgType.KEXINIT, MsgType.KEX_ECDH_REPLY, MsgType.NEWKEYS, MsgType.EXT_INFO]
    ext = _decode_ext_info(raw.received[3])
    assert set(ext["server-sig-algs"].decode().split(",")) == set(SUPPORTED_HOST_KEY_ALGORITHMS)
    assert ext["ping@openssh.com"] == b"0"
    assert ext[EXT_MAX_PACKET] == str(BULK_PACKET_LENGTH).encode()
    # Not again after a rekey.
    raw.send_kexinit()
    pump(raw, server)
    assert [p[0] for p in raw.received[4:]] == [MsgType.KEXINIT, MsgType.KEX_ECDH_REPLY, MsgType.NEWKEYS]


def test_no_ext_info_without_the_peers_marker() -> None:
    server = new_server()
    raw = raw_for(server, ext_info=False)
    pump(raw, server)
    assert [p[0] for p in raw.received] == [MsgType.KEXINIT, MsgType.KEX_ECDH_REPLY, MsgType.NEWKEYS]
    # The client side: no ext-info-s from the raw server, so no EXT_INFO from hashike.
    client, raw2, _ = _opened("hashike-client", ext_info=False)
    assert all(p[0] != MsgType.EXT_INFO for p in raw2.received)
    assert client.transport.peer_max_packet == DEFAULT_PEER_MAX_PACKET
    with pytest.raises(LocalProtocolError):
        client.transport.send_ping(b"x")  # ping@openssh.com was not advertised


@pytest.mark.parametrize("role", ROLES)
def test_ext_info_right_after_newkeys_is_accepted(role: str) -> None:
    conn, raw, events = _opened(role)
    raw.send(ext_info_payload({"ping@openssh.com": b"0", EXT_MAX_PACKET: b"100000"}))
    pump(raw, conn, events)
    (ext,) = events_of(events, ExtInfoReceived)
    assert ext.extensions == {"ping@openssh.com": b"0", EXT_MAX_PACKET: b"100000"}
    assert conn.transport.peer_max_packet == 100_000
    assert not events_of(events, Disconnected)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("where", ["after-another-packet", "twice", "after-rekey"])
def test_ext_info_elsewhere_disconnects(role: str, where: str) -> None:
    conn, raw, events = _opened(role)
    if where == "after-another-packet":
        raw.send(IGNORE)
    elif where == "twice":
        raw.send(SOME_EXT)
    else:
        raw.send(IGNORE)
        raw.send_kexinit()
        pump(raw, conn, events)
        assert [e.initial for e in events_of(events, KexCompleted)] == [True, False]
    raw.send(SOME_EXT)
    pump(raw, conn, events, feed_raw=False)
    assert "EXT_INFO" in _refused(events).description
    assert len(events_of(events, ExtInfoReceived)) == (1 if where == "twice" else 0)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "not-strict"])
def test_ext_info_before_newkeys_disconnects(role: str, strict: bool) -> None:
    conn = _conn(role)
    raw = raw_for(conn, strict=strict)
    raw.pre_newkeys = [SOME_EXT]
    events = pump(raw, conn)
    _refused(events)
    assert not events_of(events, ExtInfoReceived)


@pytest.mark.parametrize(
    "payload",
    [
        encode_byte(MsgType.EXT_INFO) + encode_uint32(65),  # too many extensions
        encode_byte(MsgType.EXT_INFO) + encode_uint32(2) + encode_string("a") + encode_string(b""),  # short
        SOME_EXT + b"\x00",  # trailing byte
        encode_byte(MsgType.EXT_INFO) + encode_uint32(1) + encode_string(b"\xff\xfe") + encode_string(b""),
        encode_byte(MsgType.EXT_INFO) + encode_uint32(1) + encode_string("x" * 257) + encode_string(b""),
        encode_byte(MsgType.EXT_INFO),
    ],
    ids=["count", "truncated", "trailing", "non-ascii-name", "long-name", "empty"],
)
@pytest.mark.parametrize("role", ROLES)
def test_malformed_ext_info_disconnects(role: str, payload: bytes) -> None:
    conn, raw, events = _opened(role)
    raw.send(payload)
    pump(raw, conn, events, feed_raw=False)
    _refused(events)
    assert not events_of(events, ExtInfoReceived)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"100000", 100_000),
        (b"1000", DEFAULT_PEER_MAX_PACKET),  # never below RFC 4253's floor
        (b"99999999999", BULK_PACKET_LENGTH),  # never above what we accept ourselves
        (b"-5", DEFAULT_PEER_MAX_PACKET),
        (b"lots", DEFAULT_PEER_MAX_PACKET),
        (b"", DEFAULT_PEER_MAX_PACKET),
    ],
)
def test_peer_max_packet_is_clamped(value: bytes, expected: int) -> None:
    conn, raw, events = _opened("hashike-client")
    raw.send(ext_info_payload({EXT_MAX_PACKET: value}))
    pump(raw, conn, events)
    assert not events_of(events, Disconnected)
    assert conn.transport.peer_max_packet == expected
