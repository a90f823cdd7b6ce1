"""End-to-end flow control between a local stream and an SSH channel
(RFC 4254 §5.2), for the socket bridge and the session's pipes alike.

Towards the channel (:class:`Outflow`): what was read but did not fit the
peer's window waits in one memoryview, and the local stream is not read while
anything waits or the connection cannot send. From the channel
(:class:`Credit`): window credit for data written to the local stream is
granted only while its write buffer is below the high mark, and held from
``pause_writing`` to ``resume_writing``, so a slow local reader slows the
peer down instead of filling our memory.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashike.proto.channels import Channels

__all__ = ["Credit", "Outflow"]


class Outflow:
    """Bytes read from a local stream on their way into a channel."""

    __slots__ = ("_reading", "pending")

    def __init__(self) -> None:
        self.pending: memoryview | None = None  # read, not yet sent (window full)
        self._reading = True

    def add(self, data: bytes) -> None:
        # Reading is paused whenever something waits, so this joins nothing
        # but a rare leftover.
        self.pending = memoryview(data) if self.pending is None else memoryview(bytes(self.pending) + data)

    def offer(self, channels: Channels, channel_id: int, data: memoryview) -> int:
        """Send ``data`` (nothing waits before it) as far as the window
        allows; a copy of the rest waits (``data`` is a reused buffer's).
        The bytes sent."""
        n = channels.send_data(channel_id, data)
        if n < len(data):
            self.add(bytes(data[n:]))
        return n

    def send(self, channels: Channels, channel_id: int, extended: int | None = None) -> int:
        """Send what waits, as far as the window allows; the bytes sent."""
        assert self.pending is not None
        n = channels.send_data(channel_id, self.pending, extended)
        rest = self.pending[n:]
        self.pending = rest if len(rest) else None
        return n

    def read(self, transport: asyncio.ReadTransport | None, on: bool) -> None:
        """Resume (``on``) or pause reading ``transport``, if not already so."""
        if on != self._reading and transport is not None and not transport.is_closing():
            self._reading = on
            if on:
                transport.resume_reading()
            else:
                transport.pause_reading()


class Credit:
    """Window credit for channel data written to a local stream."""

    __slots__ = ("_held", "_paused")

    def __init__(self) -> None:
        self._paused = False
        self._held = 0  # written while paused: credit waits for resume_writing

    def grant(self, n: int) -> int:
        """``n`` bytes were written: how many may be acknowledged now."""
        if self._paused:
            self._held += n
            return 0
        return n

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> int:
        """The write buffer drained below its low mark: the credit held back."""
        self._paused = False
        return self.release()

    def release(self) -> int:
        """All credit held back, now due (the stream drained, or is gone)."""
        n, self._held = self._held, 0
        return n
