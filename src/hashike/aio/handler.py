"""What the pump asks of whatever handles one channel at runtime: a socket
bridge for forwarded connections, a session for shells and commands."""

from __future__ import annotations

from typing import Protocol

from hashike.proto.events import ChannelRequestReceived

__all__ = ["ChannelHandler"]


class ChannelHandler(Protocol):
    def channel_open(self) -> None:
        """The open was confirmed (or, on the accepting side, accepted)."""

    def channel_refused(self, reason: int, description: str) -> None:
        """The open was refused (RFC 4254 §5.1); the channel is gone."""

    def channel_data(self, data: bytes | memoryview, extended: int | None) -> None:
        """Data (or extended data, RFC 4254 §5.2) arrived: a view that is
        valid while held, of a buffer reused once it is dropped
        (proto/packet.py); copy it to keep it beyond this batch of input."""

    def channel_eof(self) -> None:
        """The peer will send no more data (RFC 4254 §5.3)."""

    def channel_closed(self) -> None:
        """CLOSE went both ways; the id is gone."""

    def channel_request(self, event: ChannelRequestReceived) -> bool:
        """Handle a channel request (RFC 4254 §5.4), replying if it wants a
        reply; False leaves it to the pump, which refuses it."""

    def channel_request_replied(self, success: bool) -> None:
        """The peer answered our oldest want_reply request on this channel
        (RFC 4254 §5.4: replies come in request order)."""

    def pump_data(self) -> None:
        """The peer's window opened or the connection can send again."""
