"""Key re-exchange (RFC 4253 §9): started by either side or both, by byte and
time limits, with upper-layer traffic held back while it runs (§7.1), and a
peer that breaks those rules is disconnected."""

from __future__ import annotations

import pytest

from hashike.proto.config import SUPPORTED_KEX, TransportConfig
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.errors import LocalProtocolError
from hashike.proto.events import (
    ChannelClosed,
    ChannelOpenRequested,
    Disconnected,
    Event,
    KexCompleted,
    PongReceived,
    UnimplementedReceived,
)
from hashike.proto.transport import MAX_CHATTER_DURING_KEX, MAX_PACKETS_DURING_REKEY
from hashike.proto.wire import encode_byte, encode_string, encode_uint32
from tests.proto.authkit import RawClient, password_request, service_request
from tests.proto.pair import ConnectionPair, events_of, host_key
from tests.proto.rawpeer import ext_info_payload, new_client, new_server, pump, raw_for

IGNORE = encode_byte(MsgType.IGNORE) + encode_string(b"")


def _ping(data: bytes) -> bytes:
    return encode_byte(MsgType.PING) + encode_string(data)


def _kex_flags(events: list[Event]) -> list[bool]:
    return [e.initial for e in events_of(events, KexCompleted)]


def _open_pair(
    client_config: TransportConfig | None = None, server_config: TransportConfig | None = None
) -> ConnectionPair:
    pair = ConnectionPair(client_config, server_config)
    pair.pump()
    assert _kex_flags(pair.client_events) == [True]
    assert _kex_flags(pair.server_events) == [True]
    return pair


def _assert_traffic(pair: ConnectionPair, tag: bytes) -> None:
    pair.client.transport.send_ping(tag)
    before = pair.client.transport._reader.packets
    pair.server.transport.send_ignore(b"s" * 1000)
    pair.pump()
    assert events_of(pair.client_events, PongReceived)[-1] == PongReceived(data=tag)
    assert pair.client.transport._reader.packets - before == 2  # the PONG and the IGNORE


@pytest.mark.parametrize("initiator", ["client", "server", "both"])
def test_rekey(initiator: str) -> None:
    pair = _open_pair()
    sid = pair.client.transport.session_id
    assert sid is not None
    for round_ in range(1, 4):
        if initiator in ("client", "both"):
            pair.client.start_rekey()
        if initiator in ("server", "both"):
            pair.server.start_rekey()
        assert pair.client.transport.send_blocked or pair.server.transport.send_blocked
        pair.pump()
        # Exactly one new exchange per round on each side, even when both started one.
        assert _kex_flags(pair.client_events) == [True] + [False] * round_
        assert _kex_flags(pair.server_events) == [True] + [False] * round_
        assert pair.client.transport.session_id == sid == pair.server.transport.session_id
        assert not pair.client.transport.send_blocked and not pair.server.transport.send_blocked
        _assert_traffic(pair, b"round %d" % round_)
    assert not events_of(pair.client_events + pair.server_events, Disconnected)


def test_start_rekey_is_a_no_op_while_one_runs() -> None:
    pair = _open_pair()
    pair.client.start_rekey()
    first = pair.client.data_to_send()
    pair.client.start_rekey()
    assert pair.client.data_to_send() == b""  # no second KEXINIT
    pair.server.receive_data(first)
    pair.pump()
    assert _kex_flags(pair.client_events) == [True, False]


def test_rekey_renegotiates_algorithms() -> None:
    # A rekey may pick different algorithms: the raw client offers only nistp256 and aes-ctr.
    server = new_server(TransportConfig(kex_algorithms=SUPPORTED_KEX))
    raw = raw_for(server)
    events = pump(raw, server)
    raw.send_kexinit(kex=("ecdh-sha2-nistp256",), cipher_c2s=("aes256-ctr",), cipher_s2c=("aes128-ctr",))
    pump(raw, server, events)
    first, second = events_of(events, KexCompleted)
    assert first.negotiated.kex == "curve25519-sha256"
    assert (second.negotiated.kex, second.negotiated.cipher_c2s, second.negotiated.cipher_s2c) == (
        "ecdh-sha2-nistp256",
        "aes256-ctr",
        "aes128-ctr",
    )
    assert second.negotiated.mac_c2s == "hmac-sha2-256-etm@openssh.com"
    raw.send(_ping(b"new keys"))
    pump(raw, server, events)
    assert raw.inbox[-1] == encode_byte(MsgType.PONG) + encode_string(b"new keys")
    assert server.transport.session_id == raw.session_id


def test_byte_limit_rekey_on_received_bytes() -> None:
    limit = 64 * 1024
    pair = _open_pair(client_config=TransportConfig(rekey_bytes=limit))
    for _ in range(3):  # well under the limit
        pair.server.transport.send_ignore(bytes(16 * 1024))
    pair.pump()
    assert _kex_flags(pair.client_events) == [True]
    for _ in range(2):  # now past it: the client starts a rekey by itself
        pair.server.transport.send_ignore(bytes(16 * 1024))
    pair.pump()
    assert _kex_flags(pair.client_events) == [True, False]
    assert _kex_flags(pair.server_events) == [True, False]
    assert pair.client.transport._reader.bytes < limit  # counters restart with the new keys
    _assert_traffic(pair, b"after")
    assert _kex_flags(pair.client_events) == [True, False]  # and no rekey loop


def test_byte_limit_rekey_on_sent_bytes() -> None:
    limit = 64 * 1024
    pair = _open_pair(client_config=TransportConfig(rekey_bytes=limit))
    unknown = bytes([200]) + bytes(16 * 1024)  # a message the server answers with UNIMPLEMENTED
    for _ in range(3):
        pair.client.transport.send(unknown)
    pair.pump()
    assert _kex_flags(pair.client_events) == [True]
    for _ in range(3):
        pair.client.transport.send(unknown)
    assert pair.client.transport.send_blocked  # the limit was crossed by our own sends
    pair.pump()
    assert _kex_flags(pair.client_events) == [True, False]
    assert len(events_of(pair.client_events, UnimplementedReceived)) == 6
    assert pair.client.transport._writer.bytes < limit


@pytest.mark.parametrize("side", ["client", "server"])
def test_time_limit_rekey(side: str) -> None:
    config = TransportConfig(rekey_seconds=60.0)
    pair = _open_pair(config, None) if side == "client" else _open_pair(None, config)
    conn = pair.client if side == "client" else pair.server
    events = pair.client_events if side == "client" else pair.server_events
    conn.handle_timer(1000.0)
    conn.handle_timer(1059.5)
    assert not conn.transport.send_blocked
    assert pair.client.data_to_send() == b"" and pair.server.data_to_send() == b""
    conn.handle_timer(1060.0)
    assert conn.transport.send_blocked
    pair.pump()
    assert _kex_flags(events) == [True, False]
    # The clock restarts after each exchange.
    conn.handle_timer(2000.0)
    conn.handle_timer(2059.0)
    pair.pump()
    assert _kex_flags(events) == [True, False]
    conn.handle_timer(2060.0)
    pair.pump()
    assert _kex_flags(events) == [True, False, False]
    _assert_traffic(pair, b"t")


@pytest.mark.parametrize("initiator", ["client", "server"])
def test_messages_sent_during_rekey_are_queued_and_arrive_in_order(initiator: str) -> None:
    pair = _open_pair()
    t = pair.client.transport
    if initiator == "client":
        pair.client.start_rekey()
    else:
        pair.server.start_rekey()
        pair.client.receive_data(pair.server.data_to_send())  # the client sees the server's KEXINIT
    assert t.send_blocked
    wire_before = t._writer.pending
    for i in range(5):
        t.send_ping(b"%d" % i)
    assert t._writer.pending == wire_before  # nothing new on the wire ...
    assert t.pending_bytes > wire_before  # ... but queued
    pair.pump()
    assert not t.send_blocked
    pongs = events_of(pair.client_events, PongReceived)
    assert pongs == [PongReceived(data=b"%d" % i) for i in range(5)]
    # Each PONG arrived after the client's exchange completed.
    rekeyed = pair.client_events.index(events_of(pair.client_events, KexCompleted)[1])
    assert all(pair.client_events.index(p) > rekeyed for p in pongs)


def test_send_queue_is_bounded_during_rekey() -> None:
    pair = _open_pair()
    pair.client.start_rekey()
    big = bytes([200]) + bytes(200 * 1024)
    with pytest.raises(LocalProtocolError):
        for _ in range(200):  # 40 MB, beyond MAX_DEFERRED_BYTES
            pair.client.transport.send(big)


def test_in_flight_messages_before_peer_kexinit_are_accepted() -> None:
    # The client starts a rekey; the server, not having seen it yet, sends an
    # upper-layer message. That is legal (RFC 4253 §7.1) and gets processed.
    pair = _open_pair()
    pair.client.start_rekey()
    pair.server.transport.send(bytes([200]))
    pair.pump()
    assert len(events_of(pair.server_events, UnimplementedReceived)) == 1
    assert _kex_flags(pair.client_events) == [True, False]
    assert not events_of(pair.client_events + pair.server_events, Disconnected)


def test_peer_that_never_answers_our_kexinit_is_cut_off() -> None:
    client = new_client()
    raw = raw_for(client)
    events = pump(raw, client)
    client.start_rekey()
    client.data_to_send()  # the raw server never sees the KEXINIT
    for _ in range(MAX_PACKETS_DURING_REKEY):
        raw.send(IGNORE)
    client.receive_data(raw.data_to_send())
    events += client.events_received()
    assert not events_of(events, Disconnected)
    raw.send(IGNORE)
    client.receive_data(raw.data_to_send())
    events += client.events_received()
    (disconnected,) = events_of(events, Disconnected)
    assert disconnected.reason == DisconnectReason.PROTOCOL_ERROR


@pytest.mark.parametrize("extra", [0, 1], ids=["at-limit", "over-limit"])
@pytest.mark.parametrize("role", ["hashike-client", "hashike-server"])
def test_upper_layer_flood_between_peer_kexinit_and_newkeys_is_bounded(role: str, extra: int) -> None:
    # Upper-layer messages inside the peer's exchange are accepted, as OpenSSH
    # does (PuTTY sends them, see below), and answered after NEWKEYS; a peer
    # that sends more than a rekey's worth is cut off.
    conn = new_client() if role == "hashike-client" else new_server()
    raw = raw_for(conn)
    events = pump(raw, conn)
    message = _ping(b"flood") if role == "hashike-server" else bytes([200])
    raw.send_kexinit()
    for _ in range(MAX_PACKETS_DURING_REKEY + extra):
        raw.send(message)
    conn.receive_data(raw.data_to_send())  # all of it before the raw peer reads a byte
    events += conn.events_received()
    if extra:
        (disconnected,) = events_of(events, Disconnected)
        assert disconnected.reason == DisconnectReason.PROTOCOL_ERROR
        assert not disconnected.by_peer
        assert disconnected.description == "too many non-kex messages during key exchange"
        assert _kex_flags(events) == [True]
        return
    answered, received = len(raw.inbox), len(raw.received)
    pump(raw, conn, events)
    assert not events_of(events, Disconnected)
    assert _kex_flags(events) == [True, False]
    answer = MsgType.PONG if role == "hashike-server" else MsgType.UNIMPLEMENTED
    assert [p[0] for p in raw.inbox[answered:]] == [answer] * MAX_PACKETS_DURING_REKEY
    # RFC 4253 §7.1: PONG waits for the core's NEWKEYS; UNIMPLEMENTED, a
    # transport message, may be sent inside the exchange.
    after = [p[0] for p in raw.received[received:]]
    newkeys = after.index(MsgType.NEWKEYS)
    assert all(m == MsgType.UNIMPLEMENTED for m in after[:newkeys] if m not in range(20, 50))


@pytest.mark.parametrize("payload", [service_request(), ext_info_payload({})], ids=["service", "ext-info"])
def test_messages_forbidden_even_inside_a_rekey_disconnect(payload: bytes) -> None:
    # RFC 4253 §7.1 forbids SERVICE_REQUEST inside an exchange; RFC 8308
    # §2.4 allows EXT_INFO only after the first NEWKEYS.
    server = new_server()
    raw = raw_for(server)
    events = pump(raw, server)
    raw.hold_ecdh = True
    raw.send_kexinit()
    raw.send(payload)
    pump(raw, server, events, feed_raw=False)
    (disconnected,) = events_of(events, Disconnected)
    assert disconnected.description == f"unexpected message {payload[0]} during key exchange"


def _session_channel(peer: RawClient) -> tuple[int, int]:
    """A raw client logs in and opens a session channel: (its id, the server's)."""
    peer.send(password_request("alice", "pw"))
    peer.server.accept_auth()
    assert peer.pump() == [encode_byte(MsgType.USERAUTH_SUCCESS)]
    ours = 3
    peer.send(
        encode_byte(MsgType.CHANNEL_OPEN)
        + encode_string("session")
        + encode_uint32(ours)
        + encode_uint32(1 << 20)
        + encode_uint32(32768)
    )
    (opened,) = events_of(peer.take_events(), ChannelOpenRequested)
    peer.server.channels.accept_open(opened.channel_id)
    (confirmation,) = peer.pump()
    assert confirmation[0] == MsgType.CHANNEL_OPEN_CONFIRMATION
    return ours, opened.channel_id


@pytest.mark.parametrize("where", ["after-ecdh-init", "before-ecdh-init"])
def test_putty_channel_close_inside_its_rekey_is_accepted(where: str) -> None:
    # PuTTY sends CHANNEL_CLOSE after its own KEX_ECDH_INIT, before NEWKEYS
    # (issue 13, defect 10): hashiked ended the connection with "unexpected
    # message 97 during key exchange", where OpenSSH carries on.
    peer = RawClient(auth_methods=("password",))
    ours, theirs = _session_channel(peer)
    peer.raw.hold_ecdh = True
    peer.raw.send_kexinit()
    assert peer.pump() == []  # the server's KEXINIT; it awaits our ECDH_INIT
    close = encode_byte(MsgType.CHANNEL_CLOSE) + encode_uint32(theirs)
    if where == "after-ecdh-init":
        peer.raw.send_ecdh_init()
        peer.raw.send(close)
    else:
        peer.raw.send(close)
        peer.raw.send_ecdh_init()
    received = len(peer.raw.received)
    assert peer.pump() == [encode_byte(MsgType.CHANNEL_CLOSE) + encode_uint32(ours)]
    events = peer.take_events()
    assert not events_of(events, Disconnected)
    assert events_of(events, ChannelClosed) == [ChannelClosed(channel_id=theirs)]
    assert _kex_flags(events) == [False]
    # The server's answer waited for its NEWKEYS (RFC 4253 §7.1).
    after = [p[0] for p in peer.raw.received[received:]]
    assert after.index(MsgType.NEWKEYS) < after.index(MsgType.CHANNEL_CLOSE)


@pytest.mark.parametrize(
    ("rekey", "limit"),
    [(False, MAX_CHATTER_DURING_KEX), (True, MAX_PACKETS_DURING_REKEY)],
    ids=["initial", "rekey"],
)
@pytest.mark.parametrize("extra", [0, 1], ids=["at-limit", "over-limit"])
def test_transport_chatter_during_kex_is_bounded(rekey: bool, limit: int, extra: int) -> None:
    server = new_server()
    raw = raw_for(server, strict=False)
    events: list[Event] = []
    if rekey:
        pump(raw, server, events)
        raw.hold_ecdh = True
        raw.send_kexinit()
    else:
        raw.hold_ecdh = True
        raw.receive_data(server.data_to_send())  # the server's version and KEXINIT: ours follows
    for _ in range(limit + extra):
        raw.send(IGNORE)
    pump(raw, server, events)
    if extra:
        (disconnected,) = events_of(events, Disconnected)
        assert disconnected.reason == DisconnectReason.PROTOCOL_ERROR
        return
    assert not events_of(events, Disconnected)
    raw.send_ecdh_init()
    pump(raw, server, events)
    assert _kex_flags(events) == ([True, False] if rekey else [True])


@pytest.mark.parametrize(
    "bad",
    ["second-kexinit", "newkeys-first", "reply-from-client"],
)
def test_kex_messages_out_of_order_disconnect(bad: str) -> None:
    server = new_server()
    raw = raw_for(server)
    events = pump(raw, server)
    raw.hold_ecdh = True
    payload = raw.send_kexinit()
    if bad == "second-kexinit":
        raw.send(payload)
    elif bad == "newkeys-first":
        raw.send(encode_byte(MsgType.NEWKEYS))
    else:
        raw.send(encode_byte(MsgType.KEX_ECDH_REPLY) + encode_string(b"") * 3)
    pump(raw, server, events, feed_raw=False)
    (disconnected,) = events_of(events, Disconnected)
    assert disconnected.reason == DisconnectReason.PROTOCOL_ERROR
    assert _kex_flags(events) == [True]


def test_host_key_change_during_rekey_is_refused() -> None:
    client = new_client()
    raw = raw_for(client)
    events = pump(raw, client)
    raw.host_key = host_key("ecdsa-sha2-nistp256")
    raw.send_kexinit(host_key=("ecdsa-sha2-nistp256",))
    pump(raw, client, events)
    assert raw.negotiated is not None and raw.negotiated.host_key == "ecdsa-sha2-nistp256"
    (disconnected,) = events_of(events, Disconnected)
    assert disconnected.reason == DisconnectReason.KEY_EXCHANGE_FAILED
    assert _kex_flags(events) == [True]
