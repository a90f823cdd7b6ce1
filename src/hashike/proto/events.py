"""Events the core emits for the runtime. Frozen, slotted, keyword-only."""

from __future__ import annotations

from dataclasses import dataclass

from hashike.keys.keypair import PublicKey
from hashike.proto.kex.negotiate import Negotiated

__all__ = [
    "DebugReceived",
    "Disconnected",
    "Event",
    "ExtInfoReceived",
    "HostKeyReceived",
    "KexCompleted",
    "PeerVersionReceived",
    "PongReceived",
    "ServiceAccepted",
    "UnimplementedReceived",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerVersionReceived:
    software: str  # e.g. "OpenSSH_9.2p1"
    comments: str
    banner_lines: tuple[str, ...]  # RFC 4253 §4.2: lines the server sent before its version


@dataclass(frozen=True, slots=True, kw_only=True)
class HostKeyReceived:
    """Client only: the server proved it holds this key. Answer with
    ``accept_host_key()`` or ``reject_host_key()``; nothing is sent to the
    service layer until then."""

    key: PublicKey
    algorithm: str
    fingerprint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KexCompleted:
    negotiated: Negotiated
    initial: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceAccepted:
    service: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtInfoReceived:
    extensions: dict[str, bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class DebugReceived:
    message: str
    always_display: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class UnimplementedReceived:
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PongReceived:
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnected:
    """The connection is over. ``by_peer`` tells who ended it; when it was us
    (a protocol error, or ``close()``), a DISCONNECT is queued in
    ``data_to_send()`` and the runtime should flush it and close the socket."""

    reason: int
    description: str
    by_peer: bool


Event = (
    PeerVersionReceived
    | HostKeyReceived
    | KexCompleted
    | ServiceAccepted
    | ExtInfoReceived
    | DebugReceived
    | UnimplementedReceived
    | PongReceived
    | Disconnected
)
