"""Events the core emits for the runtime. Frozen, slotted, keyword-only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hashike.keys.keypair import PublicKey
from hashike.proto.channels import ChannelEvent
from hashike.proto.kex.negotiate import Negotiated

if TYPE_CHECKING:  # the core only carries it: no import of a file-reading module at run time
    from hashike.keys.authorized_keys import KeyOptions

__all__ = [
    "AuthBanner",
    "AuthFailed",
    "AuthPrompts",
    "AuthSucceeded",
    "DebugReceived",
    "Disconnected",
    "Event",
    "ExtInfoReceived",
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


# --------------------------------------------------------------------------
# User authentication (RFC 4252, RFC 4256), hashike.proto.auth


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthBanner:
    """Client: RFC 4252 §5.4 text the server wants shown before authentication.
    It comes from the peer: strip control characters before displaying it."""

    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthFailed:
    """Client: the last request failed (RFC 4252 §5.1). ``methods`` are the
    methods that can continue. ``password_change_requested`` is set (and
    ``methods`` empty) when the server answered a password request with
    SSH_MSG_USERAUTH_PASSWD_CHANGEREQ (RFC 4252 §8), which hashike does not
    follow: ``prompt`` is the server's explanation."""

    methods: tuple[str, ...]
    partial_success: bool
    password_change_requested: bool = False
    prompt: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSucceeded:
    """Both sides: ``username`` is authenticated by ``method``; the connection
    layer may start. On the server, ``policy`` is what the runtime passed to
    ``accept_auth()``: the authorized_keys options of the key, or None for no
    restrictions. On the client it is None."""

    username: str
    method: str
    policy: KeyOptions | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicKeyAccepted:
    """Client: SSH_MSG_USERAUTH_PK_OK (RFC 4252 §7) — the server would accept
    a signature by this key; call ``auth_publickey_sign()`` next."""

    key: PublicKey
    algorithm: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthPrompts:
    """Client: a keyboard-interactive SSH_MSG_USERAUTH_INFO_REQUEST (RFC 4256
    §3.2). ``prompts`` are (text, echo) pairs; answer with ``answer_prompts()``
    (one response per prompt, possibly none). All text comes from the peer."""

    name: str
    instruction: str
    prompts: tuple[tuple[str, bool], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicKeyAuthRequested:
    """Server: may ``username`` log in with ``key``? When ``signed`` the core
    has already verified the signature (RFC 4252 §7); otherwise this is a query
    and accepting it only sends SSH_MSG_USERAUTH_PK_OK. Answer with
    ``accept_auth(policy)`` or ``reject_auth()``."""

    username: str
    key: PublicKey
    algorithm: str
    signed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordAuthRequested:
    """Server: is ``password`` right for ``username``? ``method`` is
    ``"password"`` or ``"keyboard-interactive"`` (whose single "Password: "
    prompt the core asked). Answer with ``accept_auth(policy)`` or
    ``reject_auth()``."""

    username: str
    password: str = field(repr=False)  # never in logs
    method: str = "password"


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
    | AuthBanner
    | AuthFailed
    | AuthSucceeded
    | PublicKeyAccepted
    | AuthPrompts
    | PublicKeyAuthRequested
    | PasswordAuthRequested
    | ChannelEvent
)
