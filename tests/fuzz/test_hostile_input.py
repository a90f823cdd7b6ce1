"""Hostile input: whatever bytes arrive, the core ends in a documented
exception (hashike.proto.errors) or a Disconnected event — never IndexError,
struct.error, UnicodeDecodeError, ValueError, AssertionError or a large
allocation (DESIGN.md, "Errors").

The parsers are fed random and mutated bytes directly; the connections are fed
random and mutated payloads wrapped in correctly sealed packets by a RawPeer,
after a valid handshake and in the middle of one.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashike.proto.ciphers import CIPHERS, MACS, make_opener, make_sealer
from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.errors import DecodeError, RemoteProtocolError
from hashike.proto.events import Disconnected, Event, HostKeyReceived, KexCompleted
from hashike.proto.kex.negotiate import KexInit
from hashike.proto.packet import (
    BULK_PACKET_LENGTH,
    MAX_PACKET_LENGTH,
    MAX_PAYLOAD,
    PacketReader,
    PacketWriter,
)
from hashike.proto.transport import State
from hashike.proto.version import VersionParser
from hashike.proto.wire import encode_bool, encode_byte, encode_namelist, encode_string, encode_uint32
from tests.proto.pair import events_of
from tests.proto.rawpeer import RawPeer, new_client, new_server, pump, raw_for

Connection = ClientConnection | ServerConnection

# HASHIKE_FUZZ_SCALE=20 (say) multiplies the example counts for a long run.
_SCALE = int(os.environ.get("HASHIKE_FUZZ_SCALE", "1"))
FAST = settings(max_examples=200 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Examples that each need a full handshake.
SLOW = settings(max_examples=75 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ROLES = ["hashike-client", "hashike-server"]
CIPHER_MACS = [(c, None) for c, s in CIPHERS.items() if s.aead] + [
    (c, m) for c, s in CIPHERS.items() if not s.aead for m in MACS
]


def _keys(cipher: str, mac: str | None) -> tuple[bytes, bytes, bytes]:
    spec = CIPHERS[cipher]
    mac_size = MACS[mac].key_size if mac else 0
    return bytes(range(spec.key_size)), bytes(range(64, 64 + spec.iv_size)), bytes(range(80, 80 + mac_size))


# ---------------------------------------------------------------- strategies


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few random flips, insertions, deletions and truncations."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "extend"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


# Wire fields (RFC 4251 §5) glued together: these reach deeper into decoders
# than uniform bytes do.
_FIELD = st.one_of(
    st.integers(0, 0xFFFFFFFF).map(encode_uint32),
    st.sampled_from([0, 1, 2, 3, 4, 5, 16, 64, 255, 256, 0x7FFFFFFF, 0xFFFFFFFF]).map(encode_uint32),
    st.binary(max_size=64).map(encode_string),
    st.text(max_size=32).map(encode_string),
    st.sampled_from(["ssh-userauth", "ssh-connection", "publickey", "password", "none"]).map(encode_string),
    st.booleans().map(encode_bool),
    st.lists(st.sampled_from(["curve25519-sha256", "ssh-ed25519", "x", ""]), max_size=4).map(
        lambda names: encode_string(",".join(names))
    ),
    st.binary(max_size=8),
)
_MSG_NUMBERS = st.one_of(st.sampled_from([int(m) for m in MsgType]), st.integers(0, 255))


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    msg = draw(_MSG_NUMBERS)
    if draw(st.booleans()):
        body = b"".join(draw(st.lists(_FIELD, max_size=8)))
    else:
        body = draw(st.binary(max_size=200))
    return bytes([msg]) + body


def _kexinit_payload() -> bytes:
    return KexInit(
        cookie=bytes(16),
        kex=("curve25519-sha256", "ext-info-c"),
        host_key=("ssh-ed25519",),
        cipher_c2s=("aes128-gcm@openssh.com",),
        cipher_s2c=("aes128-gcm@openssh.com",),
        mac_c2s=("hmac-sha2-256-etm@openssh.com",),
        mac_s2c=("hmac-sha2-256-etm@openssh.com",),
    ).encode()


_VALID_MESSAGES = [
    encode_byte(MsgType.DISCONNECT) + encode_uint32(11) + encode_string("bye") + encode_string(""),
    encode_byte(MsgType.IGNORE) + encode_string(b"x"),
    encode_byte(MsgType.DEBUG) + encode_bool(True) + encode_string("dbg") + encode_string(""),
    encode_byte(MsgType.UNIMPLEMENTED) + encode_uint32(3),
    encode_byte(MsgType.SERVICE_REQUEST) + encode_string("ssh-userauth"),
    encode_byte(MsgType.SERVICE_ACCEPT) + encode_string("ssh-userauth"),
    encode_byte(MsgType.EXT_INFO)
    + encode_uint32(1)
    + encode_string("server-sig-algs")
    + encode_string("a,b"),
    encode_byte(MsgType.USERAUTH_REQUEST)
    + encode_string("user")
    + encode_string("ssh-connection")
    + encode_string("none"),
    encode_byte(MsgType.USERAUTH_FAILURE) + encode_namelist(("publickey",)) + encode_bool(False),
    encode_byte(MsgType.PING) + encode_string(b"ping"),
    encode_byte(MsgType.PONG) + encode_string(b"pong"),
    encode_byte(MsgType.GLOBAL_REQUEST) + encode_string("keepalive@openssh.com") + encode_bool(True),
    encode_byte(MsgType.CHANNEL_OPEN) + encode_string("session") + encode_uint32(0) * 3,
    encode_byte(MsgType.NEWKEYS),
    encode_byte(MsgType.KEX_ECDH_INIT) + encode_string(bytes(32)),
    encode_byte(MsgType.KEX_ECDH_REPLY) + encode_string(b"") * 3,
    _kexinit_payload(),  # a rekey, with mutated lists
]
hostile_payloads = st.one_of(payloads(), st.sampled_from(_VALID_MESSAGES).flatmap(mutated))


# ------------------------------------------------------------- invariants


def _check_outcome(conn: Connection, events: list[Event]) -> None:
    """After hostile input: at most one Disconnected, nothing after it, and it
    agrees with the connection's state; the output can still be taken."""
    disconnected = events_of(events, Disconnected)
    assert len(disconnected) <= 1
    if disconnected:
        assert events[-1] is disconnected[0]
        assert conn.closed
        if not disconnected[0].by_peer:
            assert disconnected[0].reason in set(DisconnectReason)
    else:
        assert not conn.closed
    conn.data_to_send()


def _feed(conn: Connection, data: bytes, events: list[Event]) -> None:
    conn.receive_data(data)  # must not raise: protocol errors become Disconnected
    for event in conn.events_received():
        events.append(event)
        if isinstance(event, HostKeyReceived) and isinstance(conn, ClientConnection):
            conn.accept_host_key()


def _opened(role: str, cipher: str = "aes128-gcm@openssh.com") -> tuple[Connection, RawPeer, list[Event]]:
    conn = new_client() if role == "hashike-client" else new_server()
    raw = raw_for(conn, ciphers=(cipher,))
    events = pump(raw, conn)
    assert events_of(events, KexCompleted) and not events_of(events, Disconnected)
    return conn, raw, events


# ------------------------------------------------------------ version lines


@FAST
@given(
    chunks=st.lists(
        st.one_of(st.binary(max_size=300), mutated(b"SSH-2.0-OpenSSH_9.6 c\r\n"), st.just(b"\r\n")),
        max_size=6,
    ),
    peer_is_server=st.booleans(),
)
def test_version_parser(chunks: list[bytes], peer_is_server: bool) -> None:
    parser = VersionParser(peer_is_server=peer_is_server)
    fed = b""
    try:
        for chunk in chunks:
            fed += chunk
            done = parser.feed(chunk)
            if done is not None:
                version, rest = done
                assert fed.endswith(rest)
                assert version.line.startswith(b"SSH-") and b"\n" not in version.line
                assert isinstance(version.software, str) and version.software
                return
    except RemoteProtocolError:
        return
    # Still waiting: never more than one line's worth of unterminated input.
    assert len(fed.rsplit(b"\n", 1)[-1]) <= 255


def test_version_line_without_end_is_refused_at_255_bytes() -> None:
    parser = VersionParser(peer_is_server=True)
    assert parser.feed(b"x" * 255) is None
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"x")


# ------------------------------------------------------------- packet reader


def _read_all(reader: PacketReader, data: bytes, step: int, out: list[bytes] | None = None) -> list[bytes]:
    out = [] if out is None else out
    for i in range(0, len(data), step):
        reader.feed(data[i : i + step])
        while (payload := reader.next_payload()) is not None:
            assert 1 <= len(payload) <= MAX_PACKET_LENGTH
            out.append(bytes(payload))
    return out


@FAST
@given(data=st.binary(max_size=2000), step=st.integers(1, 600))
def test_packet_reader_unencrypted_random(data: bytes, step: int) -> None:
    reader = PacketReader()
    with contextlib.suppress(RemoteProtocolError):
        _read_all(reader, data, step)
    # Whatever was not refused is at most one incomplete packet, within the limit.
    assert reader.buffered <= 4 + MAX_PACKET_LENGTH


@FAST
@given(
    cipher_mac=st.sampled_from(CIPHER_MACS),
    data=st.binary(max_size=2000),
    step=st.integers(1, 600),
)
def test_packet_reader_encrypted_random(cipher_mac: tuple[str, str | None], data: bytes, step: int) -> None:
    cipher, mac = cipher_mac
    reader = PacketReader()
    key, iv, mac_key = _keys(cipher, mac)
    reader.set_opener(make_opener(cipher, mac, key, iv, mac_key), reset_seq=False)
    try:
        opened = _read_all(reader, data, step)
    except RemoteProtocolError:  # bad length, bad padding, or MACError
        return
    assert opened == []  # random bytes never authenticate


@FAST
@given(
    cipher_mac=st.sampled_from([(None, None), *CIPHER_MACS]),
    originals=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4),
    data=st.data(),
    step=st.integers(1, 600),
)
def test_packet_reader_mutated_packets(
    cipher_mac: tuple[str | None, str | None], originals: list[bytes], data: st.DataObject, step: int
) -> None:
    cipher, mac = cipher_mac
    writer, reader = PacketWriter(bytes), PacketReader()
    if cipher is not None:
        key, iv, mac_key = _keys(cipher, mac)
        writer.set_sealer(make_sealer(cipher, mac, key, iv, mac_key), reset_seq=False)
        reader.set_opener(make_opener(cipher, mac, key, iv, mac_key), reset_seq=False)
    for p in originals:
        writer.write(p)
    wire = bytes(writer.take())
    damaged = data.draw(mutated(wire))
    opened: list[bytes] = []
    try:
        _read_all(reader, damaged, step, opened)
    except RemoteProtocolError:
        assert damaged != wire
    if cipher is not None:
        # Integrity: only untouched packets open, so what opened is a prefix of what was sent.
        assert opened == originals[: len(opened)]
    if damaged == wire:
        assert opened == originals


@pytest.mark.parametrize(("cipher", "mac"), [(None, None), *CIPHER_MACS])
def test_oversized_packet_length_is_refused_from_the_length_alone(
    cipher: str | None, mac: str | None
) -> None:
    reader = PacketReader()
    head = struct.pack(">I", 0xFFFFFFF0)
    if cipher is not None:
        key, iv, mac_key = _keys(cipher, mac)
        reader.set_opener(make_opener(cipher, mac, key, iv, mac_key), reset_seq=False)
        # Encrypt the length the way a sender would (chacha20 encrypts it; the others leave it clear).
        out = bytearray(48 + 64 + 16)  # plain, the largest tag, slack
        make_sealer(cipher, mac, key, iv, mac_key).seal(
            0, memoryview(bytearray(head + bytes(44))), memoryview(out)
        )
        head = bytes(out[:4])
    reader.feed(head[:3])
    assert reader.next_payload() is None  # three bytes: still waiting
    reader.feed(head[3:])
    with pytest.raises(RemoteProtocolError):
        reader.next_payload()  # refused on the fourth byte, with nothing else sent
    assert reader.buffered == 4


@FAST
@given(length=st.integers(MAX_PACKET_LENGTH + 1, 0xFFFFFFFF))
def test_any_length_beyond_the_limit_is_refused(length: int) -> None:
    reader = PacketReader()
    reader.feed(struct.pack(">I", length))
    with pytest.raises(RemoteProtocolError):
        reader.next_payload()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("when", ["initial", "after-handshake"])
def test_oversized_packet_length_disconnects_without_allocating(role: str, when: str) -> None:
    if when == "initial":
        conn: Connection = new_client() if role == "hashike-client" else new_server()
        version = b"SSH-2.0-OpenSSH_9.6\r\n"
        conn.receive_data(version)
        events = conn.events_received()
        length = struct.pack(">I", 0xFFFFFFF0)
    else:
        conn, _, events = _opened(role, cipher="aes256-ctr")
        length = struct.pack(">I", 0xFFFFFFF0)  # aes-ctr with EtM sends the length in the clear
    tracemalloc.start()
    try:
        conn.receive_data(length)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    events += conn.events_received()
    (disconnected,) = events_of(events, Disconnected)
    assert disconnected.reason == DisconnectReason.PROTOCOL_ERROR and not disconnected.by_peer
    assert "packet length" in disconnected.description
    assert conn.transport._reader.buffered == 4
    assert peak < 64 * 1024  # nothing near the 4 GiB the length asked for


# --------------------------------------------------------------- KEXINIT


@FAST
@given(data=st.one_of(st.binary(max_size=600), mutated(_kexinit_payload())))
def test_kexinit_decode(data: bytes) -> None:
    try:
        init = KexInit.decode(data)
    except DecodeError:
        return
    assert len(init.cookie) == 16
    assert all(name and "," not in name for names in (init.kex, init.host_key) for name in names)


@FAST
@given(
    names=st.lists(
        st.text(
            alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=","), min_size=1
        ),
        max_size=5,
    ).map(tuple),
    follows=st.booleans(),
    cookie=st.binary(min_size=16, max_size=16),
)
def test_kexinit_round_trip(names: tuple[str, ...], follows: bool, cookie: bytes) -> None:
    init = KexInit(
        cookie=cookie,
        kex=names,
        host_key=names,
        cipher_c2s=names,
        cipher_s2c=names,
        mac_c2s=names,
        mac_s2c=names,
        languages_c2s=names,
        first_kex_follows=follows,
    )
    assert KexInit.decode(init.encode()) == init


# -------------------------------------------------------- whole connections


@SLOW
@given(role=st.sampled_from(ROLES), data=st.binary(min_size=1, max_size=3000), step=st.integers(1, 700))
def test_connection_random_bytes_after_version(role: str, data: bytes, step: int) -> None:
    conn: Connection = new_client() if role == "hashike-client" else new_server()
    events: list[Event] = []
    _feed(conn, b"SSH-2.0-Fuzz_1.0\r\n", events)
    for i in range(0, len(data), step):
        _feed(conn, data[i : i + step], events)
    _check_outcome(conn, events)


@SLOW
@given(
    role=st.sampled_from(ROLES),
    cipher=st.sampled_from(["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr"]),
    messages=st.lists(hostile_payloads, min_size=1, max_size=6),
    service_first=st.booleans(),
)
def test_connection_hostile_payloads_after_handshake(
    role: str, cipher: str, messages: list[bytes], service_first: bool
) -> None:
    conn, raw, events = _opened(role, cipher)
    if service_first and role == "hashike-server":
        # Reach the userauth decoders too.
        raw.send(encode_byte(MsgType.SERVICE_REQUEST) + encode_string("ssh-userauth"))
    for message in messages:
        raw.send_packet(message)
        _feed(conn, raw.data_to_send(), events)
        if conn.closed:
            break
    _check_outcome(conn, events)


@SLOW
@given(role=st.sampled_from(ROLES), messages=st.lists(hostile_payloads, min_size=1, max_size=4))
def test_connection_hostile_payloads_during_initial_kex(role: str, messages: list[bytes]) -> None:
    conn: Connection = new_client() if role == "hashike-client" else new_server()
    raw = raw_for(conn, strict=False)  # let them past the strict-kex rule, into the decoders
    raw.pre_newkeys = messages
    events = pump(raw, conn)
    _check_outcome(conn, events)


@SLOW
@given(role=st.sampled_from(ROLES), kexinit=st.one_of(mutated(_kexinit_payload()), payloads()))
def test_connection_hostile_kexinit(role: str, kexinit: bytes) -> None:
    conn: Connection = new_client() if role == "hashike-client" else new_server()
    raw = raw_for(conn)
    raw.auto_kexinit = False
    raw.send_packet(bytes([MsgType.KEXINIT]) + kexinit[1:] if kexinit else b"\x14")
    events: list[Event] = []
    _feed(conn, raw.data_to_send(), events)
    _check_outcome(conn, events)


@SLOW
@given(role=st.sampled_from(ROLES), data=st.data())
def test_connection_hostile_ecdh_message(role: str, data: st.DataObject) -> None:
    conn: Connection = new_client() if role == "hashike-client" else new_server()
    raw = raw_for(conn)
    raw.rewrite_ecdh = lambda payload: data.draw(mutated(payload))
    events: list[Event] = []
    if role == "hashike-server":
        raw.receive_data(conn.data_to_send())  # server's version and KEXINIT; raw answers with ECDH_INIT
    else:
        raw.receive_data(conn.data_to_send())  # client's version and KEXINIT; raw answers with its KEXINIT
        _feed(conn, raw.data_to_send(), events)
        raw.receive_data(conn.data_to_send())  # client's ECDH_INIT; raw answers with REPLY and NEWKEYS
    # Only conn's reaction to the rewritten message is of interest from here on.
    _feed(conn, raw.data_to_send(), events)
    _check_outcome(conn, events)
    if not conn.closed:
        # The message was accepted as it is: the exchange moved on.
        assert conn.transport.state in (State.AWAIT_NEWKEYS, State.OPEN)


@SLOW
@given(
    role=st.sampled_from(ROLES),
    size=st.integers(0, 600),
    pad=st.integers(0, 255),
    body=st.binary(max_size=64),
)
def test_connection_odd_padding(role: str, size: int, pad: int, body: bytes) -> None:
    # Sealed correctly, but with any padding length (RFC 4253 §6 wants 4..255 and block alignment).
    conn, raw, events = _opened(role, "chacha20-poly1305@openssh.com")
    raw.send_packet(bytes([MsgType.IGNORE]) + encode_string(body) + bytes(size), pad=pad)
    _feed(conn, raw.data_to_send(), events)
    _check_outcome(conn, events)
    aligned = (1 + 1 + 4 + len(body) + size + pad) % 8 == 0
    if pad < 4 or not aligned:
        assert conn.closed


@pytest.mark.parametrize("role", ROLES)
def test_ping_too_large_to_answer_is_refused(role: str) -> None:
    # Regression: a PING whose PONG would not fit in one of our packets raised
    # ValueError out of receive_data. A peer's largest packet (1 MiB once the
    # bound is raised after authentication, with 15 bytes of padding here)
    # holds more payload than the largest we build, since we keep room for up
    # to 16 bytes of padding.
    conn, raw, events = _opened(role)
    conn.transport.accept_bulk_packets()
    raw.reader.max_length = BULK_PACKET_LENGTH  # and so does the peer's
    largest = bytes(MAX_PAYLOAD - 5)  # the largest data a PONG of ours can carry
    raw.send_packet(encode_byte(MsgType.PING) + encode_string(largest))
    pump(raw, conn, events)
    assert raw.inbox[-1] == encode_byte(MsgType.PONG) + encode_string(largest)
    too_large = encode_byte(MsgType.PING) + encode_string(bytes(MAX_PAYLOAD))
    assert 1 + len(too_large) + 15 == BULK_PACKET_LENGTH  # a legal packet, at the limit
    raw.send_packet(too_large, pad=15)
    _feed(conn, raw.data_to_send(), events)
    _check_outcome(conn, events)
    (disconnected,) = events_of(events, Disconnected)
    assert disconnected.reason == DisconnectReason.PROTOCOL_ERROR
