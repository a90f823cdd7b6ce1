"""hashike's sans-IO SSH-2 core: no sockets, no clock, no randomness of its own.

Feed a :class:`ClientConnection` or :class:`ServerConnection` the bytes that
arrived, send what it has to send, and act on the events it reports. The
names here are the core's public API; the submodules hold the rest.
"""

from __future__ import annotations

from hashike.proto.channels import Channel, Channels, ChannelState
from hashike.proto.config import TransportConfig
from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import DisconnectReason, MsgType, OpenFailureReason
from hashike.proto.errors import (
    AuthenticationFailed,
    ChannelOpenFailed,
    ConnectionClosed,
    DecodeError,
    HostKeyNotVerified,
    KeyExchangeFailed,
    LocalProtocolError,
    MACError,
    ProtocolError,
    RemoteProtocolError,
    SSHError,
)
from hashike.proto.transport import State
from hashike.proto.events import (
    AuthBanner,
    AuthFailed,
    AuthPolicy,
    AuthPrompts,
    AuthSucceeded,
    ChannelClosed,
    ChannelData,
    ChannelEofReceived,
    ChannelEvent,
    ChannelOpenConfirmed,
    ChannelOpenRefused,
    ChannelOpenRequested,
    ChannelRequestReceived,
    ChannelRequestReplied,
    ChannelWindowOpened,
    DebugReceived,
    Disconnected,
    Event,
    ExtInfoReceived,
    GlobalRequestReceived,
    GlobalRequestReplied,
    HostKeyReceived,
    KexCompleted,
    PasswordAuthRequested,
    PeerVersionReceived,
    PongReceived,
    PublicKeyAccepted,
    PublicKeyAuthRequested,
    ServiceAccepted,
    UnimplementedReceived,
)
from hashike.proto.hostkey import KeyFormatError, PrivateKey, PublicKey

__all__ = [
    "# connections and their channel table
    "ClientConnection",
    "# errors
    "AuthenticationFailed",
    "# events
    "AuthBanner",
    "# keys
    "KeyFormatError",
    "# protocol numbers
    "DisconnectReason",
    "AuthFailed",
    "AuthPolicy",
    "AuthPrompts",
    "AuthSucceeded",
    "Channel",
    "ChannelClosed",
    "ChannelData",
    "ChannelEofReceived",
    "ChannelEvent",
    "ChannelOpenConfirmed",
    "ChannelOpenFailed",
    "ChannelOpenRefused",
    "ChannelOpenRequested",
    "ChannelRequestReceived",
    "ChannelRequestReplied",
    "ChannelState",
    "ChannelWindowOpened",
    "Channels",
    "ConnectionClosed",
    "DebugReceived",
    "DecodeError",
    "Disconnected",
    "Event",
    "ExtInfoReceived",
    "GlobalRequestReceived",
    "GlobalRequestReplied",
    "HostKeyNotVerified",
    "HostKeyReceived",
    "KexCompleted",
    "KeyExchangeFailed",
    "LocalProtocolError",
    "MACError",
    "MsgType",
    "OpenFailureReason",
    "PasswordAuthRequested",
    "PeerVersionReceived",
    "PongReceived",
    "PrivateKey",
    "ProtocolError",
    "PublicKey",
    "PublicKeyAccepted",
    "PublicKeyAuthRequested",
    "RemoteProtocolError",
    "SSHError",
    "ServerConnection",
    "ServiceAccepted",
    "State",
    "TransportConfig",
    "UnimplementedReceived",
]
