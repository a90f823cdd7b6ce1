"""Strict key exchange (OpenSSH PROTOCOL §1.10 "kex-strict"), the Terrapin countermeasure.

When both sides put kex-strict-*-v00@openssh.com in their first KEXINIT:
the peer's KEXINIT must be its very first packet, nothing but kex messages may
arrive during the first exchange, and every NEWKEYS resets the sequence number
of its direction. Without the peer's marker, the RFC 4253 rules apply.
"""

from __future__ import annotations

import pytest

from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.events import (
    DebugReceived,
    Disconnected,
    Event,
    ExtInfoReceived,
    HostKeyReceived,
    KexCompleted,
    PongReceived,
)
from hashike.proto.wire import encode_byte, encode_string, encode_uint32
from tests.proto.pair import ConnectionPair, events_of
from tests.proto.rawpeer import RawPeer, ext_info_payload, new_client, new_server, pump, raw_for

Connection = ClientConnection | ServerConnection
ROLES = ["hashike-client", "hashike-server"]
# Ciphers whose packet protection depends on the sequence number (AES-GCM's does not).
SEQ_CIPHERS = [
    pytest.param("chacha20-poly1305@openssh.com", id="chacha20"),
    pytest.param("aes128-ctr", id="aes128-ctr-etm"),
    pytest.param("aes256-gcm@openssh.com", id="aes256-gcm"),
]

IGNORE = encode_byte(MsgType.IGNORE) + encode_string(b"")
DEBUG = encode_byte(MsgType.DEBUG) + b"\x00" + encode_string("hello") + encode_string(b"")


def _conn(role: str) -> Connection:
    return new_client() if role == "hashike-client" else new_server()


def _refused_with_protocol_error(events: list[Event], conn: Connection) -> Disconnected:
    (disconnected,) = events_of(events, Disconnected)
    assert disconnected.reason == DisconnectReason.PROTOCOL_ERROR
    assert not disconnected.by_peer
    assert conn.closed
    assert not events_of(events, KexCompleted)
    return disconnected


def _plaintext_packet(payload: bytes) -> bytes:
    """RFC 4253 §6 framing with no cipher: whole packet a multiple of 8, >= 4 bytes padding."""
    pad = 8 - (4 + 1 + len(payload)) % 8
    if pad < 4:
        pad += 8
    return encode_uint32(1 + len(payload) + pad) + bytes([pad]) + payload + bytes(pad)


@pytest.mark.parametrize("role", ROLES)
def test_cve_2023_48795_ignore_before_newkeys_is_refused(role: str) -> None:
    conn = _conn(role)
    raw = raw_for(conn)
    raw.pre_newkeys = [IGNORE]
    events = pump(raw, conn)
    disconnected = _refused_with_protocol_error(events, conn)
    assert "strict" in disconnected.description


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "not-strict"])
def test_cve_2023_48795_terrapin_prefix_truncation(strict: bool) -> None:
    """The attack itself: a man in the middle injects an unencrypted IGNORE into
    the server->client stream before NEWKEYS (so the client's receive sequence
    number runs one ahead) and deletes the first encrypted packet, EXT_INFO.

    With strict kex the client refuses the injected IGNORE. The non-strict run
    is the control: it shows the injection and deletion are real (ChaCha20's
    nonce is the sequence number, so a wrong count would fail the MAC), which is
    exactly the truncation that strict kex exists to stop."""
    client = new_client()
    raw = raw_for(client, ciphers=("chacha20-poly1305@openssh.com",), strict=strict)
    held: list[bytes] = []
    # Split the server's flight right before its NEWKEYS, so the attacker can splice.
    raw.before_newkeys = lambda: held.append(raw.data_to_send())
    injected = _plaintext_packet(IGNORE)
    events: list[Event] = []
    for _ in range(20):
        c2s = client.data_to_send()
        if c2s and not client.closed:
            raw.receive_data(c2s)
        s2c = raw.data_to_send()
        if held:
            s2c = held.pop() + injected + s2c
        if not c2s and not s2c:
            break
        client.receive_data(s2c)
        for event in client.events_received():
            events.append(event)
            if isinstance(event, HostKeyReceived):
                client.accept_host_key()
    if strict:
        _refused_with_protocol_error(events, client)
        return
    # Not strict: the client completed the kex, tolerated the IGNORE ...
    assert events_of(events, KexCompleted)
    assert not client.transport.strict
    raw.send(ext_info_payload({"server-sig-algs": b"ssh-ed25519", "ping@openssh.com": b"0"}))
    raw.data_to_send()  # ... and the attacker drops EXT_INFO,
    raw.send(DEBUG)
    client.receive_data(raw.data_to_send())
    events += client.events_received()
    # ... which goes unnoticed: the next packet opens fine and EXT_INFO is simply gone.
    assert events_of(events, DebugReceived) == [DebugReceived(message="hello", always_display=False)]
    assert not events_of(events, ExtInfoReceived)
    assert not events_of(events, Disconnected)


@pytest.mark.parametrize("role", ROLES)
def test_strict_kexinit_must_be_first_packet(role: str) -> None:
    conn = _conn(role)
    raw = raw_for(conn)
    raw.auto_kexinit = False
    raw.send(IGNORE)
    raw.send_kexinit()
    disconnected = _refused_with_protocol_error(pump(raw, conn), conn)
    assert "first packet" in disconnected.description


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("payload", [IGNORE, DEBUG], ids=["ignore", "debug"])
def test_strict_refuses_transport_chatter_anywhere_in_initial_kex(role: str, payload: bytes) -> None:
    # After KEXINIT but before the ECDH message, too.
    conn = _conn(role)
    raw = raw_for(conn)
    raw.auto_kexinit = False
    raw.send_kexinit()
    raw.send(payload)
    _refused_with_protocol_error(pump(raw, conn), conn)


@pytest.mark.parametrize("role", ROLES)
def test_non_strict_peer_may_send_ignore_and_debug_during_initial_kex(role: str) -> None:
    conn = _conn(role)
    raw = raw_for(conn, strict=False)
    raw.auto_kexinit = False
    raw.send(IGNORE)  # before KEXINIT: fine without strict kex
    raw.send_kexinit()
    raw.send(DEBUG)
    raw.pre_newkeys = [IGNORE, DEBUG]
    events = pump(raw, conn)
    assert not events_of(events, Disconnected)
    (completed,) = events_of(events, KexCompleted)
    assert completed.initial and not completed.negotiated.strict
    assert not conn.transport.strict
    assert len(events_of(events, DebugReceived)) == 2
    assert conn.transport.session_id == raw.session_id


@pytest.mark.parametrize("role", ROLES)
def test_non_strict_peer_still_may_not_send_upper_layer_messages_during_initial_kex(role: str) -> None:
    conn = _conn(role)
    raw = raw_for(conn, strict=False)
    raw.pre_newkeys = [encode_byte(MsgType.SERVICE_REQUEST) + encode_string("ssh-userauth")]
    _refused_with_protocol_error(pump(raw, conn), conn)


@pytest.mark.parametrize("role", ROLES)
def test_strict_needs_both_markers(role: str) -> None:
    # The raw peer sends only ext-info: hashike's own marker alone does not make kex strict.
    conn = _conn(role)
    raw = raw_for(conn, strict=False)
    pump(raw, conn)
    assert conn.transport.negotiated is not None
    assert not conn.transport.strict and not conn.transport.negotiated.strict
    conn2 = _conn(role)
    raw2 = raw_for(conn2, strict=True)
    pump(raw2, conn2)
    assert conn2.transport.strict and raw2.strict


def _check_seq(conn: Connection, raw: RawPeer, strict: bool) -> None:
    """conn's sequence numbers against the raw peer's own count of packets."""
    t = conn.transport
    if strict:  # counted from the last NEWKEYS of each direction
        assert t._reader.seq == raw.sent_since_newkeys
        assert t._writer.seq == raw.received_since_newkeys
    else:  # counted from the first packet, never reset
        assert t._reader.seq == raw.sent_total
        assert t._writer.seq == len(raw.received)


@pytest.mark.parametrize("cipher", SEQ_CIPHERS)
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "not-strict"])
@pytest.mark.parametrize("role", ROLES)
def test_sequence_numbers_reset_at_each_newkeys_only_when_strict(
    role: str, strict: bool, cipher: str
) -> None:
    conn = _conn(role)
    raw = raw_for(conn, strict=strict, ciphers=(cipher,))
    events = pump(raw, conn)
    assert not events_of(events, Disconnected)
    assert conn.transport.strict is strict
    _check_seq(conn, raw, strict)
    if strict:
        # The packets since NEWKEYS are few; the handshake before them is not counted.
        assert conn.transport._reader.seq < raw.sent_total
    # Traffic keeps counting in step (a wrong count fails chacha20's and EtM's checks).
    for _ in range(3):
        raw.send(IGNORE)
    raw.send(DEBUG)
    pump(raw, conn, events)
    assert len(events_of(events, DebugReceived)) == 1
    _check_seq(conn, raw, strict)
    # A rekey started by the raw peer: its KEXINIT carries no markers, yet strict
    # mode, agreed in the first exchange, holds for the rest of the connection.
    sent_before = raw.sent_total
    raw.send_kexinit()
    pump(raw, conn, events)
    completed = events_of(events, KexCompleted)
    assert [c.initial for c in completed] == [True, False]
    assert raw.kex_count == 2
    assert not events_of(events, Disconnected)
    _check_seq(conn, raw, strict)
    if strict:
        assert conn.transport._reader.seq < raw.sent_total - sent_before


def test_strict_pair_resets_sequence_numbers() -> None:
    # Two hashike peers: right after the handshake the counters only cover the
    # few packets sent under the new keys, and traffic after a rekey still flows.
    pair = ConnectionPair()
    pair.pump()
    c, s = pair.client.transport, pair.server.transport
    assert c.strict and s.strict
    assert c._writer.seq == s._reader.seq and s._writer.seq == c._reader.seq
    # Client sent EXT_INFO and SERVICE_REQUEST; server sent EXT_INFO and SERVICE_ACCEPT.
    assert (c._writer.seq, s._writer.seq) == (2, 2)
    pair.client.start_rekey()
    pair.pump()
    assert (c._writer.seq, s._writer.seq) == (0, 0)
    c.send_ping(b"p")
    pair.pump()
    assert events_of(pair.client_events, PongReceived) == [PongReceived(data=b"p")]
    assert (c._writer.seq, s._writer.seq) == (1, 1)
