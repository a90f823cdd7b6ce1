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
from hashike.proto.transport import State

__all__ = [
    # connections and their channel table
    "ClientConnection",
    "ServerConnection",
    "State",
    "TransportConfig",
    "Channel",
    "ChannelState",
    "Channels",
    # keys
    "KeyFormatError",
    "PrivateKey",
    "PublicKey",
    # protocol numbers
    "DisconnectReason",
    "MsgType",
    "OpenFailureReason",
    # errors
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
    # events
    "AuthBanner",
    "AuthFailed",
    "AuthPolicy",
    "AuthPrompts",
    "AuthSucceeded",
    "ChannelClosed",
    "ChannelData",
    "ChannelEofReceived",
    "ChannelEvent",
    "ChannelOpenConfirmed",
    "ChannelOpenRefused",
    "ChannelOpenRequested",
    "ChannelRequestReceived",
    "ChannelRequestReplied",
    "ChannelWindowOpened",
    "DebugReceived",
    "Disconnected",
    "Event",
    "ExtInfoReceived",
    "GlobalRequestReceived",
    "GlobalRequestReplied",
    "HostKeyReceived",
    "KexCompleted",
    "PasswordAuthRequested",
    "PeerVersionReceived",
    "PongReceived",
    "PublicKeyAccepted",
    "PublicKeyAuthRequested",
    "ServiceAccepted",
    "UnimplementedReceived",
]
