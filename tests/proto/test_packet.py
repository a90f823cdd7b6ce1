"""RFC 4253 §6 binary packet protocol: framing, padding, lengths and sequence numbers."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashike.proto.ciphers import CIPHERS, MACS, NONE_OPENER, NONE_SEALER, make_opener, make_sealer
from hashike.proto.errors import MACError, RemoteProtocolError
from hashike.proto.packet import (
    BULK_PACKET_LENGTH,
    MAX_PACKET_LENGTH,
    MAX_PAYLOAD,
    MIN_PACKET_LENGTH,
    PacketReader,
    PacketWriter,
)

CIPHER_MACS = [(c, None) for c, s in CIPHERS.items() if s.aead] + [
    (c, m) for c, s in CIPHERS.items() if not s.aead for m in MACS
]


def _keyed(writer: PacketWriter, reader: PacketReader, cipher: str, mac: str | None) -> None:
    spec = CIPHERS[cipher]
    key, iv = bytes(range(spec.key_size)), bytes(spec.iv_size)
    mac_key = b"\x07" * (MACS[mac].key_size if mac else 0)
    writer.set_sealer(make_sealer(cipher, mac, key, iv, mac_key), reset_seq=False)
    reader.set_opener(make_opener(cipher, mac, key, iv, mac_key), reset_seq=False)


def _read_all(reader: PacketReader) -> list[bytes]:
    out = []
    while (payload := reader.next_payload()) is not None:
        out.append(bytes(payload))
    return out


def _clear_packet(payload: bytes, pad: int, length: int | None = None) -> bytes:
    """An unencrypted packet built by hand (RFC 4253 §6), for any padding or length."""
    packet_length = 1 + len(payload) + pad if length is None else length
    return struct.pack(">IB", packet_length, pad) + payload + bytes(pad)


# ---------------------------------------------------------------- framing


@given(payload=st.binary(min_size=1, max_size=2000))
def test_unencrypted_framing_and_padding(payload: bytes) -> None:
    writer = PacketWriter(os.urandom)
    writer.write(payload)
    wire = writer.take()
    packet_length, pad = struct.unpack(">IB", wire[:5])
    # RFC 4253 §6: packet_length counts padding_length, payload and padding;
    # at least 4 bytes of padding; the whole packet (length field included)
    # a multiple of 8 in the clear, with no more padding than needed.
    assert len(wire) == 4 + packet_length
    assert wire[5 : 5 + len(payload)] == payload
    assert packet_length == 1 + len(payload) + pad
    assert 4 <= pad < 4 + 8
    assert (4 + packet_length) % 8 == 0


def test_padding_is_random() -> None:
    writer = PacketWriter(os.urandom)
    for _ in range(2):
        writer.write(b"\x02" * 3)  # 4 + 1 + 3 + 8 bytes of padding
    wire = writer.take()
    assert wire[8:16] != wire[24:32]


def test_padding_pool_is_refilled() -> None:
    calls: list[int] = []

    def rng(n: int) -> bytes:
        calls.append(n)
        return os.urandom(n)

    writer = PacketWriter(rng)
    for _ in range(1000):  # 4 to 11 bytes of padding each: more than one 4 KiB pool
        writer.write(b"\x05")
    assert len(calls) > 1
    reader = PacketReader()
    reader.feed(writer.take())
    assert _read_all(reader) == [b"\x05"] * 1000


@pytest.mark.parametrize(("cipher", "mac"), CIPHER_MACS)
def test_encrypted_round_trip(cipher: str, mac: str | None) -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    _keyed(writer, reader, cipher, mac)
    payloads = [b"\x5e" + bytes(n) for n in (0, 1, 15, 16, 17, 1000, 35000)]
    for payload in payloads:
        writer.write(payload)
    wire = writer.take()
    sealer = writer._sealer
    # RFC 4253 §6: the encrypted part is a multiple of the block size; these
    # modes leave packet_length out of it (PROTOCOL §1.6-1.7, RFC 5647 §7.2).
    overhead = sum(4 + sealer.tag_size for _ in payloads)
    assert (len(wire) - overhead) % sealer.block_size == 0
    for i in range(0, len(wire), 997):  # in awkward pieces
        reader.feed(wire[i : i + 997])
    assert _read_all(reader) == payloads


@pytest.mark.parametrize(("cipher", "mac"), CIPHER_MACS)
def test_a_flipped_bit_fails_the_mac(cipher: str, mac: str | None) -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    _keyed(writer, reader, cipher, mac)
    writer.write(b"\x5e" + bytes(100))
    wire = bytearray(writer.take())
    wire[-1] ^= 0x01
    reader.feed(bytes(wire))
    with pytest.raises(MACError):
        reader.next_payload()


def test_payload_and_data_are_one_payload() -> None:
    a, b = PacketWriter(bytes), PacketWriter(bytes)  # zero padding: comparable output
    a.write(b"\x5e\x00\x00\x00\x01", b"channel data")
    a.write(memoryview(b"\x02"), memoryview(b"xyz"))
    b.write(b"\x5e\x00\x00\x00\x01channel data")
    b.write(b"\x02xyz")
    assert a.take() == b.take()


def _bulk_reader() -> PacketReader:
    """A reader as it is once the user is authenticated (Transport.accept_bulk_packets)."""
    reader = PacketReader()
    reader.max_length = BULK_PACKET_LENGTH
    return reader


def test_largest_payload() -> None:
    writer, reader = PacketWriter(os.urandom), _bulk_reader()
    payload = b"\x5e" * MAX_PAYLOAD
    writer.write(payload)
    wire = bytes(writer.take())
    assert MAX_PACKET_LENGTH < len(wire) - 4 <= BULK_PACKET_LENGTH
    reader.feed(wire)
    assert _read_all(reader) == [payload]
    # Before authentication a reader takes no more than OpenSSH's 256 KiB.
    unauthenticated = PacketReader()
    unauthenticated.feed(wire)
    with pytest.raises(RemoteProtocolError, match="bad packet length"):
        unauthenticated.next_payload()
    with pytest.raises(ValueError, match="exceeds"):
        writer.write(payload, b"x")


# ------------------------------------------------- counters and sequence numbers


def test_counters_and_pending() -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    assert writer.take() == b""
    writer.write(b"\x02")
    writer.write(b"\x02" * 20)
    assert (writer.seq, writer.packets) == (2, 2)
    assert writer.pending == writer.bytes == 16 + 32
    wire = writer.take()
    assert (len(wire), writer.pending, writer.bytes) == (48, 0, 48)
    reader.feed(wire)
    assert len(_read_all(reader)) == 2
    assert (reader.seq, reader.packets, reader.bytes, reader.buffered) == (2, 2, 48, 0)


@pytest.mark.parametrize("reset", [True, False])
def test_new_keys_reset_counters_and_maybe_seq(reset: bool) -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    writer.write(b"\x15")
    reader.feed(writer.take())
    _read_all(reader)
    writer.set_sealer(NONE_SEALER, reset_seq=reset)
    reader.set_opener(NONE_OPENER, reset_seq=reset)
    # RFC 4253 §9 counts from each NEWKEYS; strict kex also restarts the
    # sequence numbers (PROTOCOL §1.10), plain RFC 4253 §6.4 never does.
    assert (writer.packets, writer.bytes, reader.packets, reader.bytes) == (0, 0, 0, 0)
    assert (writer.seq, reader.seq) == ((0, 0) if reset else (1, 1))


def test_sequence_numbers_wrap() -> None:
    # RFC 4253 §6.4: sequence numbers wrap around to 0 after 2^32 - 1.
    writer, reader = PacketWriter(os.urandom), PacketReader()
    _keyed(writer, reader, "aes128-ctr", "hmac-sha2-256-etm@openssh.com")  # the MAC covers the seq
    writer.seq = reader.seq = 0xFFFFFFFF
    writer.write(b"\x02")
    writer.write(b"\x02")
    assert writer.seq == 1
    reader.feed(writer.take())
    assert _read_all(reader) == [b"\x02", b"\x02"]
    assert reader.seq == 1


# -------------------------------------------------------- what the reader refuses


@pytest.mark.parametrize(
    "length",
    [0, 1, MIN_PACKET_LENGTH - 1, 13, MAX_PACKET_LENGTH + 4, 2**32 - 4, 2**32 - 1],
)
def test_bad_packet_length_is_refused_from_four_bytes(length: int) -> None:
    # < 5, > the maximum, or (with its length field) not a multiple of 8.
    reader = PacketReader()
    reader.feed(struct.pack(">I", length))
    with pytest.raises(RemoteProtocolError, match=f"bad packet length {length}"):
        reader.next_payload()


def test_lengths_at_the_bounds_are_accepted() -> None:
    reader = PacketReader()
    reader.feed(_clear_packet(b"\x02" * 7, pad=4))  # packet_length 12: 16 bytes with it
    assert _read_all(reader) == [b"\x02" * 7]
    reader.feed(struct.pack(">I", MAX_PACKET_LENGTH - 4))
    assert reader.next_payload() is None  # waits for the rest, nothing refused


@pytest.mark.parametrize(
    ("payload", "pad", "why"),
    [
        (b"\x02" * 8, 3, "bad padding length 3"),  # fewer than four bytes
        (b"\x02" * 11, 0, "bad padding length 0"),
        (b"", 11, "bad padding length 11"),  # no payload at all
    ],
)
def test_bad_padding_is_refused(payload: bytes, pad: int, why: str) -> None:
    reader = PacketReader()
    packet = _clear_packet(payload, pad)
    assert len(packet) % 8 == 0
    reader.feed(packet)
    with pytest.raises(RemoteProtocolError, match=why):
        reader.next_payload()


def test_padding_longer_than_the_packet_is_refused() -> None:
    reader = PacketReader()
    packet = struct.pack(">IB", 12, 200) + bytes(11)  # padding_length beyond packet_length
    reader.feed(packet)
    with pytest.raises(RemoteProtocolError, match="bad padding length 200"):
        reader.next_payload()


# ------------------------------------------------------------ buffering


def test_one_byte_at_a_time() -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    for n in (1, 50, 3):
        writer.write(b"\x02" * n)
    out = []
    for byte in writer.take():
        reader.feed(bytes([byte]))
        out += _read_all(reader)
    assert out == [b"\x02", b"\x02" * 50, b"\x02" * 3]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_buffer_type_and_a_held_tail(kind: type[bytes] | type[bytearray] | type[memoryview]) -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    writer.write(b"\x02" * 10)
    writer.write(b"\x03" * 10)
    wire = writer.take()
    cut = len(wire) - 5
    reader.feed(kind(wire[:cut]))  # one packet and most of the next
    assert _read_all(reader) == [b"\x02" * 10]
    assert reader.buffered == cut - 24
    reader.feed(kind(wire[cut:]))
    assert _read_all(reader) == [b"\x03" * 10]
    assert reader.buffered == 0
    reader.feed(b"")
    assert reader.next_payload() is None


def test_a_held_payload_view_outlives_the_next_packet() -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    writer.write(b"\x02first")
    writer.write(b"\x02other")
    reader.feed(writer.take())
    first = reader.next_payload()
    assert first is not None and bytes(first) == b"\x02first"
    second = reader.next_payload()
    assert second is not None and bytes(second) == b"\x02other"
    assert bytes(first) == b"\x02first"  # not overwritten while held (tests/proto/test_arena.py)


def test_the_input_buffer_compacts_and_grows() -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    small, big = b"\x02" * 1000, b"\x03" * 100_000
    writer.write(small)
    first = writer.pending
    writer.write(big)
    wire = writer.take()
    reader.feed(bytearray(wire[: first + 60_000]))
    assert _read_all(reader) == [small]
    # More than the free space at the end: the live bytes move to the
    # front, then the buffer grows to hold the whole packet.
    reader.feed(bytearray(wire[first + 60_000 :]))
    assert _read_all(reader) == [big]


def test_burst_buffers_are_given_back() -> None:
    writer, reader = PacketWriter(os.urandom), _bulk_reader()
    payload = b"\x5e" * MAX_PAYLOAD
    for _ in range(5):  # more than 4 MiB
        writer.write(payload)
    wire = bytes(writer.take())
    reader.feed(bytearray(wire))  # copied into the input buffer, which grows
    assert len(_read_all(reader)) == 5
    assert len(reader._buf) == 64 * 1024  # and shrank back once drained
    writer.write(b"\x02")
    assert len(writer._out) == 64 * 1024  # the output buffer shrank back at the next packet
    reader.feed(writer.take())
    assert _read_all(reader) == [b"\x02"]


# ------------------------------------------------------ receiving in place


def _receive_into(reader: PacketReader, wire: bytes | memoryview, step: int) -> list[bytes]:
    """Write ``wire`` into the reader's own buffer() in pieces of at most
    ``step`` bytes, as recv_into would, opening packets after each."""
    out: list[bytes] = []
    pos = 0
    while pos < len(wire):
        room = reader.buffer()
        n = min(step, len(room), len(wire) - pos)
        room[:n] = wire[pos : pos + n]
        del room  # as asyncio drops it after buffer_updated
        reader.commit(n)
        pos += n
        out += _read_all(reader)
    return out


@pytest.mark.parametrize(("cipher", "mac"), CIPHER_MACS)
@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_packets_received_into_the_buffer(cipher: str, mac: str | None, step: int) -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    _keyed(writer, reader, cipher, mac)
    payloads = [b"\x02" * n for n in (1, 300, 40_000, 5)] * (1 if step < 4096 else 20)
    for p in payloads:
        writer.write(p)
    assert _receive_into(reader, writer.take(), step) == payloads
    assert reader.buffered == 0


def test_the_offered_room_follows_the_packets_seen() -> None:
    writer, reader = PacketWriter(os.urandom), _bulk_reader()
    # Before any packet, and while packets are small: a few KiB, so an
    # unauthenticated or idle connection is cheap.
    assert len(reader.buffer()) == 4 * 1024
    writer.write(b"\x5e" * 15_000)
    assert len(_receive_into(reader, writer.take(), 1 << 20)) == 1
    assert len(reader.buffer()) == 4 * 1024
    writer.write(b"\x5e" * 32_000)
    wire = writer.take()
    assert _receive_into(reader, wire, 1 << 20) == [b"\x5e" * 32_000]
    # After 32 KiB packets, room for sixteen of them in one read; never past 1 MiB.
    assert len(reader.buffer()) == 16 * len(wire)
    writer.write(b"\x5e" * MAX_PAYLOAD)
    assert len(_receive_into(reader, writer.take(), 1 << 20)) == 1
    assert len(reader.buffer()) == 1024 * 1024


def test_a_held_tail_moves_into_the_buffer_first() -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    writer.write(b"\x02" * 10)
    writer.write(b"\x03" * 10)
    wire = writer.take()
    reader.feed(wire[:30])  # bytes: held in place, with a partial second packet
    assert _read_all(reader) == [b"\x02" * 10]
    assert _receive_into(reader, wire[30:], 100) == [b"\x03" * 10]


def test_committing_more_than_the_room_is_refused() -> None:
    reader = PacketReader()
    room = len(reader.buffer())
    with pytest.raises(ValueError, match="more than the buffer had room for"):
        reader.commit(room + 1)


@pytest.mark.parametrize(("cipher", "mac"), CIPHER_MACS)
def test_a_reserved_payload_is_sealed_where_it_lies(cipher: str, mac: str | None) -> None:
    writer, reader = PacketWriter(os.urandom), PacketReader()
    _keyed(writer, reader, cipher, mac)
    head, data = b"\x5e" + bytes(8), os.urandom(100_000)
    room = writer.reserve(len(head), len(data))
    assert len(room) == len(data)
    room[:] = data
    del room
    writer.write(head, reserved=len(data))
    writer.write(b"\x02after")  # the next packet is built in the same buffer
    reader.feed(bytes(writer.take()))
    assert _read_all(reader) == [head + data, b"\x02after"]


def test_a_reservation_past_the_largest_payload_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        PacketWriter(os.urandom).reserve(9, MAX_PAYLOAD)
