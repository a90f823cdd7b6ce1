"""The inbox that channel data is copied into (proto/inbox.py): a view is
never overwritten while it is held, and the arena is reused once none is."""

from __future__ import annotations

import os

from hashike.proto.inbox import Inbox, exported


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


def test_held_views_are_never_overwritten() -> None:
    inbox = Inbox()
    chunks = [os.urandom(n) for n in (100_000, 200_000, 150_000, 262_000, 1, 50_000)]
    views = [inbox.keep(memoryview(c)) for c in chunks]
    assert [bytes(v) for v in views] == chunks


def test_the_arena_is_reused_once_its_views_are_dropped() -> None:
    inbox = Inbox()
    first = inbox.keep(memoryview(os.urandom(200_000)))
    size = inbox.size
    del first
    for _ in range(100):
        data = os.urandom(200_000)
        view = inbox.keep(memoryview(data))
        assert view == data
        del view
    assert inbox.size == size


def test_a_kept_view_only_costs_a_new_arena() -> None:
    inbox = Inbox()
    kept = inbox.keep(memoryview(b"x" * 200_000))
    later = inbox.keep(memoryview(b"y" * 200_000))  # does not fit after it: a new arena
    assert kept == b"x" * 200_000
    assert later == b"y" * 200_000
