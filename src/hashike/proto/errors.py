"""The exception tree (DESIGN.md). Every failure the core can meet is one of these."""

from __future__ import annotations

from hashike.proto.constants import DisconnectReason

__all__ = [
    "AuthenticationFailed",
    "ChannelOpenFailed",
    "ConnectionClosed",
    "DecodeError",
    "HostKeyNotVerified",
    "KeyExchangeFailed",
    "LocalProtocolError",
    "MACError",
    "ProtocolError",
    "RemoteProtocolError",
    "SSHError",
]


class SSHError(Exception):
    """Base of every error hashike raises."""


class ProtocolError(SSHError):
    """A protocol violation; carries the RFC 4253 §11.1 disconnect reason to send."""

    def __init__(self, message: str, reason: DisconnectReason = DisconnectReason.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.reason = reason


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol does not allow right now."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol. The core queues a DISCONNECT and enters the ERROR state."""


class DecodeError(RemoteProtocolError):
    """A message from the peer could not be decoded (truncated, oversized, trailing bytes)."""


class KeyExchangeFailed(RemoteProtocolError):
    """No common algorithm, a bad kex reply, or a signature that does not verify."""

    def __init__(self, message: str) -> None:
        super().__init__(message, DisconnectReason.KEY_EXCHANGE_FAILED)


class MACError(RemoteProtocolError):
    """A packet failed its MAC or AEAD tag check (RFC 4253 §6.4)."""

    def __init__(self, message: str = "message authentication code incorrect") -> None:
        super().__init__(message, DisconnectReason.MAC_ERROR)


class HostKeyNotVerified(SSHError):
    """The client's user (or known_hosts) refused the server's host key."""


class ConnectionClosed(SSHError):
    """The connection is closed: a DISCONNECT was sent or received, or the peer hung up."""

    def __init__(
        self, message: str, reason: DisconnectReason = DisconnectReason.CONNECTION_LOST, *, peer: str = ""
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.peer = peer  # "ADDR port N" when the peer's DISCONNECT ended it, as ssh names it


class AuthenticationFailed(SSHError):
    """Every authentication method the client could try was refused."""


class ChannelOpenFailed(SSHError):
    """RFC 4254 §5.1: the peer refused a channel open; carries the reason code."""

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason
