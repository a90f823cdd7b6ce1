"""Hostile input where the first fuzzing did not reach (issue 13, "Also"): the
values of the mlkem768x25519 and nistp256 exchanges, and frames sealed
correctly under chacha20-poly1305 and AES-GCM whose length and padding fields
lie. The verdict is the one of :mod:`tests.fuzz.test_hostile_input`: a
documented exception, or DISCONNECT, and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import event, given
from hypothesis import strategies as st

from hashike.proto.config import SUPPORTED_KEX, TransportConfig
from hashike.proto.constants import MsgType
from hashike.proto.errors import KeyExchangeFailed
from hashike.proto.events import Event
from hashike.proto.kex import KEX_METHODS
from hashike.proto.packet import MAX_PACKET_LENGTH
from hashike.proto.transport import State
from hashike.proto.wire import Reader, encode_byte, encode_string, encode_uint32
from tests.fuzz.test_hostile_input import (
    FAST,
    ROLES,
    SLOW,
    Connection,
    _check_outcome,
    _feed,
    _opened,
    hostile_payloads,
    mutated,
)
from tests.proto.rawpeer import RawPeer, new_client, new_server, raw_for

MLKEM = "mlkem768x25519-sha256"
NISTP256 = "ecdh-sha2-nistp256"
AEAD = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
_P256 = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF  # the field prime


def _p256_specials() -> list[bytes]:
    point = ec.generate_private_key(ec.SECP256R1()).public_key()
    raw = point.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    x, y = raw[1:33], int.from_bytes(raw[33:], "big")
    return [
        b"",
        b"\x00",  # the point at infinity (SEC 1 §2.3.4)
        b"\x04" + bytes(64),  # (0, 0): not on the curve
        b"\x04" + _P256.to_bytes(32, "big") + raw[33:],  # x = p: out of the field
        point.public_bytes(Encoding.X962, PublicFormat.CompressedPoint),  # RFC 5656 §4 wants uncompressed
        b"\x04" + x + (_P256 - y).to_bytes(32, "big"),  # -P: a valid point
        raw[:-1] + bytes([raw[-1] ^ 1]),  # off the curve by one bit
        b"\x04" + b"\xff" * 64,
        raw + b"\x00",
    ]


def _mlkem_specials(valid: bytes) -> list[bytes]:
    size = len(valid)
    low_order = (1).to_bytes(32, "little")  # an X25519 point of order 1: the shared secret is zero
    return [
        b"",
        bytes(size),  # ML-KEM part all zero, and a zero X25519 point
        b"\xff" * size,  # ML-KEM coefficients beyond q (FIPS 203 §7.2 modulus check)
        valid[:-32] + low_order,
        valid[:-1],
        valid + b"\x00",
        valid[: size - 32 - 1] + b"\xff" + valid[-32:],
    ]


def _specials(kex: str, valid: bytes) -> list[bytes]:
    return _p256_specials() if kex == NISTP256 else _mlkem_specials(valid)


def _values(kex: str, valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(_specials(kex, valid)),
        mutated(valid),
        st.binary(max_size=len(valid) + 40),
    )


# ------------------------------------------------------------- the methods


def _valid_pair(kex: str) -> tuple[bytes, bytes]:
    """A client's value, and a server's answer to it."""
    client = KEX_METHODS[kex].start(os.urandom)
    server_public, _ = KEX_METHODS[kex].reply(client.public, os.urandom)
    return client.public, server_public


def _agrees_or_refuses(compute: Callable[[], bytes]) -> None:
    try:
        secret = compute()
    except KeyExchangeFailed:
        return
    assert isinstance(secret, bytes) and secret


@pytest.mark.parametrize("kex", [MLKEM, NISTP256])
@FAST
@given(data=st.data())
def test_server_side_of_the_exchange_takes_any_client_value(kex: str, data: st.DataObject) -> None:
    client_public, _ = _valid_pair(kex)
    value = data.draw(_values(kex, client_public))
    _agrees_or_refuses(lambda: KEX_METHODS[kex].reply(value, os.urandom)[1])


@pytest.mark.parametrize("kex", [MLKEM, NISTP256])
@FAST
@given(data=st.data())
def test_client_side_of_the_exchange_takes_any_server_value(kex: str, data: st.DataObject) -> None:
    client = KEX_METHODS[kex].start(os.urandom)
    server_public, _ = KEX_METHODS[kex].reply(client.public, os.urandom)
    value = data.draw(_values(kex, server_public))
    _agrees_or_refuses(lambda: client.finish(value))


@pytest.mark.parametrize("kex", [MLKEM, NISTP256])
def test_known_bad_values_are_refused(kex: str) -> None:
    client_public, server_public = _valid_pair(kex)
    refused = [b"", b"\x00", b"\x04" + bytes(64)] if kex == NISTP256 else [b"", b"\xff" * len(client_public)]
    for value in refused:
        with pytest.raises(KeyExchangeFailed):
            KEX_METHODS[kex].reply(value, os.urandom)
    if kex == MLKEM:  # a zero X25519 secret, on either side (RFC 7748 §6.1)
        with pytest.raises(KeyExchangeFailed):
            KEX_METHODS[kex].reply(client_public[:-32] + bytes(32), os.urandom)
        with pytest.raises(KeyExchangeFailed):
            KEX_METHODS[kex].start(os.urandom).finish(server_public[:-32] + bytes(32))


# ------------------------------------------------------- whole connections


def _with_value(payload: bytes, value: bytes) -> bytes:
    """The raw peer's ECDH_INIT or ECDH_REPLY with its exchange value replaced."""
    r = Reader(payload, 1)
    if payload[0] == MsgType.KEX_ECDH_INIT:
        return encode_byte(MsgType.KEX_ECDH_INIT) + encode_string(value)
    host_key, _, signature = r.string(), r.string(), r.string()
    return (
        encode_byte(MsgType.KEX_ECDH_REPLY)
        + encode_string(host_key)
        + encode_string(value)
        + encode_string(signature)
    )


@pytest.mark.parametrize("kex", [MLKEM, NISTP256])
@SLOW
@given(role=st.sampled_from(ROLES), data=st.data())
def test_connection_takes_hostile_exchange_values(kex: str, role: str, data: st.DataObject) -> None:
    config = TransportConfig(kex_algorithms=SUPPORTED_KEX)
    conn: Connection = new_client(config) if role == "hashike-client" else new_server(config)
    raw = raw_for(conn, kex=(kex,))
    valid = _valid_pair(kex)[1 if role == "hashike-client" else 0]
    value = data.draw(_values(kex, valid))
    raw.rewrite_ecdh = lambda payload: _with_value(payload, value)
    events: list[Event] = []
    raw.receive_data(conn.data_to_send())  # the core's version and KEXINIT
    if role == "hashike-client":
        _feed(conn, raw.data_to_send(), events)  # the raw server's KEXINIT
        raw.receive_data(conn.data_to_send())  # the client's ECDH_INIT: the raw server replies
    _feed(conn, raw.data_to_send(), events)
    _check_outcome(conn, events)
    event("refused" if conn.closed else "accepted")
    if not conn.closed:
        assert conn.transport.state in (State.AWAIT_NEWKEYS, State.OPEN)


# ------------------------------------------------------------ AEAD framing


def _seal(raw: RawPeer, plain: bytes) -> bytes:
    """``plain`` (packet_length field and all, whatever they say) sealed under the raw peer's keys."""
    sealer = raw.writer._sealer
    out = bytearray(len(plain) + sealer.tag_size + 16)
    sealer.seal(raw.writer.seq, memoryview(bytearray(plain)), memoryview(out))
    raw.writer.seq = (raw.writer.seq + 1) & 0xFFFFFFFF
    return bytes(out[: len(plain) + sealer.tag_size])


@st.composite
def lying_frames(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A packet's plaintext whose length and padding fields may not match it,
    and whether they do (RFC 4253 §6)."""
    payload = draw(hostile_payloads)
    if draw(st.booleans()):
        # A truthful frame, aligned for both ciphers' blocks (8 and 16): it must open.
        size = -(1 + len(payload)) % 16
        size += 16 if size < 4 else 0
        padding = draw(st.binary(min_size=size, max_size=size))
        return encode_uint32(1 + len(payload) + size) + bytes([size]) + payload + padding, True
    padding = draw(st.binary(max_size=40))
    pad = draw(st.one_of(st.just(len(padding)), st.integers(0, 255)))
    body = bytes([pad]) + payload + padding
    honest = len(body)
    length = draw(
        st.one_of(st.just(honest), st.integers(0, 0xFFFFFFFF), st.integers(max(0, honest - 32), honest + 32))
    )
    return encode_uint32(length) + body, length == honest and pad == len(padding)


@SLOW
@given(role=st.sampled_from(ROLES), cipher=st.sampled_from(AEAD), frame=lying_frames())
def test_aead_frames_with_lying_fields(role: str, cipher: str, frame: tuple[bytes, bool]) -> None:
    conn, raw, events = _opened(role, cipher)
    plain, consistent = frame
    _feed(conn, _seal(raw, plain), events)
    _check_outcome(conn, events)
    event("refused" if conn.closed else "waiting" if conn.transport._reader.buffered else "opened")
    if conn.closed:
        return
    reader = conn.transport._reader
    if reader.buffered:
        # A longer length than sent: the reader waits, within one packet's bound.
        assert reader.buffered <= 4 + MAX_PACKET_LENGTH + 16
        assert not consistent
    else:
        # Opened and taken: then every field told the truth, and the padding was legal.
        length, pad = len(plain) - 4, plain[4]
        assert consistent and 4 <= pad < length - 1
