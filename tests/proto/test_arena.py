"""The arena that packets are opened into (proto/packet.py): a payload view
is never overwritten while it is held, the arena is reused once none is,
and the same rule covers the writer's output handed out by take()."""

from __future__ import annotations

import os

from hashike.proto.packet import PacketReader, PacketWriter, exported


def test_exported_sees_views_and_slices_of_views() -> None:
    buf = bytearray(b"abc")
    assert not exported(buf)
    view = memoryview(buf)
    piece = view[1:]
    assert exported(buf)
    view.release()
    assert exported(buf)  # the slice still holds the buffer
    del piece
    assert not exported(buf)
    assert buf == b"abc"  # the probe put the byte back


def test_exported_of_an_empty_buffer() -> None:
    assert not exported(bytearray())


def _wire(*payloads: bytes) -> bytes:
    writer = PacketWriter(os.urandom)
    for p in payloads:
        writer.write(p)
    return bytes(writer.take())


def test_held_views_are_never_overwritten() -> None:
    reader = PacketReader()
    chunks = [b"\x5e" + os.urandom(n) for n in (100_000, 200_000, 150_000, 262_000 - 64, 1, 50_000)]
    held = []
    for chunk in chunks:  # one packet per batch, every view kept
        reader.feed(_wire(chunk))
        payload = reader.next_payload()
        assert payload is not None
        held.append(payload)
    assert [bytes(v) for v in held] == chunks


def test_views_of_one_batch_stay_apart() -> None:
    reader = PacketReader()
    chunks = [b"\x5e" + os.urandom(n) for n in (30_000, 1, 70_000, 30_000)]
    reader.feed(_wire(*chunks))
    held = [reader.next_payload() for _ in chunks]
    assert [bytes(v) for v in held if v is not None] == chunks


def test_the_arena_is_reused_once_its_views_are_dropped() -> None:
    reader = PacketReader()
    reader.feed(_wire(b"\x5e" * 200_000))
    first = reader.next_payload()
    arena = reader._arena
    del first
    for _ in range(50):
        data = b"\x5e" + os.urandom(200_000)
        reader.feed(_wire(data))
        view = reader.next_payload()
        assert view is not None and bytes(view) == data
        del view
    assert reader._arena is arena


def test_a_kept_view_only_costs_a_new_arena() -> None:
    reader = PacketReader()
    reader.feed(_wire(b"\x5ex" * 100_000))
    kept = reader.next_payload()
    arena = reader._arena
    reader.feed(_wire(b"\x5ey" * 100_000))  # does not fit after it: a new arena
    later = reader.next_payload()
    assert reader._arena is not arena
    assert kept is not None and bytes(kept) == b"\x5ex" * 100_000
    assert later is not None and bytes(later) == b"\x5ey" * 100_000


def test_taken_output_is_not_overwritten_while_held() -> None:
    writer = PacketWriter(os.urandom)
    writer.write(b"\x02" * 1000)
    first = writer.take()
    copy = bytes(first)
    writer.write(b"\x03" * 1000)  # would land where the first lies
    second = writer.take()
    assert bytes(first) == copy
    assert bytes(second) != copy


def test_taken_output_buffer_is_reused_once_dropped() -> None:
    writer = PacketWriter(os.urandom)
    writer.write(b"\x02" * 1000)
    del_me = writer.take()
    buffer = writer._out
    del del_me
    writer.write(b"\x03" * 1000)
    assert writer._out is buffer
