"""Events the core emits for the runtime. Frozen, slotted, keyword-only."""

from __future__ import annotations

from dataclasses import dataclass, field

from hashike.proto.hostkey import PublicKey
from hashike.proto.kex.negotiate import Negotiated

__all__ = [
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

# What a server's runtime decides along with a login, for its connection layer
# to apply (hashiked's: the authorized_keys options of the key). The core only
# carries it, so its type is the runtime's business: the core never imports
# hashike.keys.
AuthPolicy = object


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
    ``data_to_send()`` and the runtime should flush it and close the socket.
    ``eof`` is True when the peer closed the socket without a DISCONNECT
    (``reason`` is then CONNECTION_LOST and ``description`` ours)."""

    reason: int
    description: str
    by_peer: bool
    eof: bool = False


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
    policy: AuthPolicy | None = None


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
    """Server: may ``username`` log in with ``key``? When ``signed``, the core
    verifies the signature (RFC 4252 §7) only once the runtime accepts, so
    that no signature is checked for a key nobody accepts: ``authenticated``
    then tells whether it did verify (a bad one fails as a rejection would).
    Otherwise this is a query and accepting it only sends
    SSH_MSG_USERAUTH_PK_OK. Answer with ``accept_auth(policy)`` or
    ``reject_auth()``."""

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


# --------------------------------------------------------------------------
# The connection protocol (RFC 4254), hashike.proto.channels


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelOpenRequested:
    """The peer wants a channel (RFC 4254 §5.1). Answer with ``accept_open``
    or ``reject_open``. ``extra`` is the type-specific data; for the types
    below it is also decoded: host/port/orig_host/orig_port for
    ``direct-tcpip`` (§7.2) and ``forwarded-tcpip`` (§7.1, where host/port
    are the address and port that were connected), socket_path for
    ``direct-streamlocal@openssh.com`` and ``forwarded-streamlocal@openssh.com``
    (OpenSSH PROTOCOL §2.4)."""

    channel_id: int
    kind: str
    window: int
    max_packet: int
    extra: bytes
    host: str | None = None
    port: int | None = None
    orig_host: str | None = None
    orig_port: int | None = None
    socket_path: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelOpenConfirmed:
    channel_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelOpenRefused:
    """The peer refused our open; the id is free again. ``reason`` is an
    RFC 4254 §5.1 code (see :class:`OpenFailureReason`)."""

    channel_id: int
    reason: int
    description: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelData:
    """Data from the peer. Call ``acknowledge(channel_id, len(data))`` once it
    has been written onward; that is what reopens the peer's window. ``data``
    is a view of the packet reader's arena (proto/packet.py): drop it once written
    onward, and copy it (``bytes(data)``) to keep it."""

    channel_id: int
    data: bytes | memoryview
    extended: int | None  # None for CHANNEL_DATA, else the data type code (1 = stderr)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelWindowOpened:
    """The peer's window for us went from 0 to ``window``: resume sending."""

    channel_id: int
    window: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelEofReceived:
    channel_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelClosed:
    """CLOSE has been sent and received: the id is free and may be reused."""

    channel_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelRequestReceived:
    """RFC 4254 §5.4. If ``want_reply``, answer with ``reply_request``; the
    replies go out in the order the requests came."""

    channel_id: int
    name: str
    want_reply: bool
    extra: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelRequestReplied:
    channel_id: int
    name: str  # the request this answers (replies are matched in order)
    success: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalRequestReceived:
    """RFC 4254 §4. If ``want_reply``, answer with ``reply_global_request``,
    passing ``request_id`` to answer this request rather than the oldest
    unanswered one (a handler may answer later than the next request's)."""

    name: str
    want_reply: bool
    extra: bytes
    request_id: int | None = None  # set when want_reply


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalRequestReplied:
    name: str  # the request this answers (replies are matched in order)
    success: bool
    extra: bytes  # e.g. the allocated port of "tcpip-forward" with port 0 (§7.1)


ChannelEvent = (
    ChannelOpenRequested
    | ChannelOpenConfirmed
    | ChannelOpenRefused
    | ChannelData
    | ChannelWindowOpened
    | ChannelEofReceived
    | ChannelClosed
    | ChannelRequestReceived
    | ChannelRequestReplied
    | GlobalRequestReceived
    | GlobalRequestReplied
)


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
