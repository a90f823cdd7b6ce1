"""Reused buffers whose contents are handed out as memoryviews.

Theory of operation. Channel data arrives in the packet reader's plaintext
buffer, which the next packet overwrites, so it must be copied before it is
reported. A fresh ``bytes`` per CHANNEL_DATA (256 KiB from a hashike peer)
made glibc trim the heap and grow it back: tens to hundreds of thousands of
page faults per GiB in a new process. :class:`Inbox` copies into one arena
instead and hands out views of it.

Lifetime rule: a view stays valid for as long as anyone holds it. The arena is
rewritten from the start only when no view of it is alive (:func:`exported`
asks CPython, which refuses to resize a buffer that has exports); while views
are alive, new data goes after them, or into a new arena when it is full (the
old one lives on with its views). A runtime that drops its views once it has
written them onward, before it feeds the next input, reuses one arena for
ever; one that keeps them costs an allocation, never a corruption.
"""

from __future__ import annotations

__all__ = ["Inbox", "exported"]

# A new arena holds at least this much (the largest packet OpenSSH sends):
# small first data must not start a string of doublings. It grows to what one
# batch of input holds (a 256 KiB read and a packet left over from the last),
# and no further: a runtime that keeps its views gets arenas of this size.
_MIN_ARENA = 256 * 1024
_MAX_ARENA = 1024 * 1024


def exported(buf: bytearray) -> bool:
    """True while a memoryview of ``buf`` (or of a slice of one) is alive.

    Removing and restoring the last byte is a resize, which CPython refuses
    with BufferError while the buffer is exported. Shrinking by one byte never
    reallocates, and putting it back fits the same allocation."""
    if not buf:
        return False
    try:
        last = buf.pop()
    except BufferError:
        return True
    buf.append(last)
    return False


class Inbox:
    """An arena that channel data is copied into, and views of it handed out."""

    __slots__ = ("_buf", "_fill")

    def __init__(self) -> None:
        # Empty until the first channel data: a connection that never gets
        # that far (unauthenticated, say) costs nothing here.
        self._buf = bytearray()
        self._fill = 0

    def keep(self, data: memoryview) -> memoryview:
        """A copy of ``data`` that stays valid while it is referenced."""
        n = len(data)
        if self._fill and not exported(self._buf):
            self._fill = 0  # every earlier view is gone: start over
        start = self._fill
        if start + n > len(self._buf):
            # Full, with live views (or too small): a new arena, the old one is
            # freed with its last view.
            self._buf = bytearray(max(n, min(2 * len(self._buf), _MAX_ARENA), _MIN_ARENA))
            start = 0
        self._fill = start + n
        view = memoryview(self._buf)[start : start + n]
        view[:] = data
        return view

    @property
    def size(self) -> int:
        """The arena's size: the memory this costs while idle."""
        return len(self._buf)
