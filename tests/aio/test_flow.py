"""Tests for hashike.aio.flow: the flow control the socket bridge and the session's pipes share."""

from __future__ import annotations

from typing import Any

from hashike.aio.flow import Credit, Outflow


class _Channels:
    """Takes at most ``window`` bytes per send, as Channels.send_data does."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.sent: list[tuple[int, bytes, int | None]] = []

    def send_data(self, channel_id: int, data: memoryview, extended: int | None = None) -> int:
        n = min(self.window, len(data))
        self.window -= n
        self.sent.append((channel_id, bytes(data[:n]), extended))
        return n


class _Transport:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def test_outflow_keeps_what_the_window_cannot_take() -> None:
    out = Outflow()
    out.add(b"hello")
    out.add(b" world")
    channels: Any = _Channels(8)
    assert out.send(channels, 3, 1) == 8
    assert out.pending is not None and bytes(out.pending) == b"rld"
    channels.window = 100
    assert out.send(channels, 3) == 3
    assert out.pending is None
    assert channels.sent == [(3, b"hello wo", 1), (3, b"rld", None)]


def test_outflow_pauses_and_resumes_reading_once_each_way() -> None:
    out = Outflow()
    transport: Any = _Transport()
    out.read(transport, True)  # already reading
    out.read(transport, False)
    out.read(transport, False)
    out.read(transport, True)
    assert transport.calls == ["pause", "resume"]
    out.read(None, False)  # no transport yet: nothing to do, nothing recorded
    transport.closing = True
    out.read(transport, False)
    assert transport.calls == ["pause", "resume"]


def test_credit_is_held_while_paused() -> None:
    credit = Credit()
    assert credit.grant(10) == 10
    credit.pause()
    assert credit.grant(5) == 0
    assert credit.grant(7) == 0
    assert credit.resume() == 12
    assert credit.grant(3) == 3
    assert credit.release() == 0


def test_credit_released_when_the_stream_is_gone() -> None:
    credit = Credit()
    credit.pause()
    credit.grant(4)
    assert credit.release() == 4
    assert credit.release() == 0
