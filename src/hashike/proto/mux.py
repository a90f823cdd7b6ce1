"""OpenSSH's connection-multiplexing protocol (PROTOCOL.mux), as a pure codec.

A control socket carries frames of ``uint32 length`` then that many bytes,
whose first uint32 is the message type (PROTOCOL.mux, introduction). Both
ends open with MUX_MSG_HELLO and version 4 (§1); every later request carries
a request id that its reply echoes (§10).

:class:`MuxDecoder` takes bytes in any pieces and yields whole messages. It
holds at most one frame of :data:`MAX_FRAME` bytes: a longer length is
refused before anything is buffered, as is a message that does not parse to
its last byte. :func:`encode` turns a message back into a frame. Descriptor
passing (the stdio of MUX_C_NEW_SESSION, §2) is the runtime's: the codec
only parses the message that precedes it.

Where the text and OpenSSH's mux.c differ, the code is followed, since it is
what ssh sends: the flags of MUX_C_NEW_SESSION are uint32, and the connect
port of MUX_C_NEW_STDIO_FWD is a uint32, not a string.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from hashike.proto.errors import DecodeError
from hashike.proto.wire import Reader, encode_string, encode_uint32

__all__ = [
    "MAX_FRAME",
    "MAX_STATUS",
    "MUX_VERSION",
    "SOCKET_PORT",
    "AliveCheck",
    "AliveReply",
    "ExitMessage",
    "Failure",
    "ForwardKind",
    "ForwardRequest",
    "Hello",
    "MuxDecoder",
    "MuxMessage",
    "MuxType",
    "NewSession",
    "NewStdioForward",
    "Ok",
    "PermissionDenied",
    "RemotePort",
    "SessionOpened",
    "StatusReply",
    "StatusRequest",
    "StopListening",
    "Terminate",
    "TtyAllocFail",
    "UnknownMuxType",
    "decode",
    "encode",
]

MUX_VERSION = 4
# OpenSSH's mux messages are a few hundred bytes (a command line, an
# environment); 256 KiB bounds a hostile peer while leaving room for those.
MAX_FRAME = 256 * 1024
MAX_FIELD = 64 * 1024  # one host name, path, command or variable
MAX_STATUS = MAX_FRAME - 64  # a status document, within one frame
MAX_ENV = 4096  # as mux.c's MUX_MAX_ENV_VARS
# A port of (unsigned) -2: the host field is a Unix socket path (§6).
SOCKET_PORT = 0xFFFFFFFE
_U32 = struct.Struct(">I")


class MuxType(IntEnum):
    """PROTOCOL.mux §11."""

    HELLO = 0x00000001
    NEW_SESSION = 0x10000002
    ALIVE_CHECK = 0x10000004
    TERMINATE = 0x10000005
    OPEN_FWD = 0x10000006
    CLOSE_FWD = 0x10000007
    NEW_STDIO_FWD = 0x10000008
    STOP_LISTENING = 0x10000009
    OK = 0x80000001
    PERMISSION_DENIED = 0x80000002
    FAILURE = 0x80000003
    EXIT_MESSAGE = 0x80000004
    ALIVE = 0x80000005
    SESSION_OPENED = 0x80000006
    REMOTE_PORT = 0x80000007
    TTY_ALLOC_FAIL = 0x80000008
    # hashike's own, far from OpenSSH's 0x1xxxxxxx requests and 0x8xxxxxxx
    # replies ("HAS" + 1): an ssh master answers it "unsupported request".
    HASHIKE_STATUS = 0x48415301
    HASHIKE_STATUS_REPLY = 0xC8415301


class ForwardKind(IntEnum):
    LOCAL = 1
    REMOTE = 2
    DYNAMIC = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    version: int = MUX_VERSION
    extensions: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AliveCheck:
    request_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Terminate:
    request_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StopListening:
    request_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardRequest:
    """MUX_C_OPEN_FWD (§6), or MUX_C_CLOSE_FWD (§7) when ``cancel``, with
    the same fields as the forward it cancels. ``listen_host`` "" is none
    given; a port of SOCKET_PORT makes its host a socket path;
    ``connect_host`` "" with port 0 is a dynamic forward's."""

    request_id: int
    cancel: bool = False
    kind: ForwardKind
    listen_host: str
    listen_port: int
    connect_host: str
    connect_port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NewSession:
    """§2; its three descriptors follow it out of band."""

    request_id: int
    want_tty: bool
    want_x11: bool
    want_agent: bool
    subsystem: bool
    escape_char: int | None  # None: 0xffffffff, no escapes
    term: str
    command: str
    env: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NewStdioForward:
    request_id: int
    host: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ok:
    request_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PermissionDenied:
    request_id: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    request_id: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitMessage:
    session_id: int
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AliveReply:
    request_id: int
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOpened:
    request_id: int
    session_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RemotePort:
    request_id: int
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TtyAllocFail:
    session_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRequest:
    """hashike's MUX_C_HASHIKE_STATUS: what ``hashike status`` asks."""

    request_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReply:
    """The master's counters as one JSON document (README, "hashike status")."""

    request_id: int
    document: str


MuxMessage = (
    Hello
    | AliveCheck
    | Terminate
    | StopListening
    | ForwardRequest
    | NewSession
    | NewStdioForward
    | Ok
    | PermissionDenied
    | Failure
    | ExitMessage
    | AliveReply
    | SessionOpened
    | RemotePort
    | TtyAllocFail
    | StatusRequest
    | StatusReply
)

_ESCAPE_NONE = 0xFFFFFFFF


def _u32(*values: int) -> bytes:
    return b"".join(encode_uint32(v) for v in values)


def _forward_body(m: ForwardRequest) -> bytes:
    return (
        _u32(m.request_id, m.kind)
        + encode_string(m.listen_host)
        + _u32(m.listen_port)
        + encode_string(m.connect_host)
        + _u32(m.connect_port)
    )


def _session_body(m: NewSession) -> bytes:
    escape = _ESCAPE_NONE if m.escape_char is None else m.escape_char
    flags = _u32(m.want_tty, m.want_x11, m.want_agent, m.subsystem, escape)
    head = _u32(m.request_id) + encode_string(b"") + flags
    return head + encode_string(m.term) + encode_string(m.command) + b"".join(map(encode_string, m.env))


def _body(m: MuxMessage) -> tuple[MuxType, bytes]:
    match m:
        case Hello():
            extensions = b"".join(encode_string(k) + encode_string(v) for k, v in m.extensions)
            return MuxType.HELLO, _u32(m.version) + extensions
        case AliveCheck() | Terminate() | StopListening() | Ok():
            return _SIMPLE_TYPES[type(m)], _u32(m.request_id)
        case ForwardRequest():
            return MuxType.CLOSE_FWD if m.cancel else MuxType.OPEN_FWD, _forward_body(m)
        case NewSession():
            return MuxType.NEW_SESSION, _session_body(m)
        case NewStdioForward():
            return MuxType.NEW_STDIO_FWD, _u32(m.request_id) + encode_string(b"") + encode_string(
                m.host
            ) + _u32(m.port)
        case PermissionDenied() | Failure():
            kind = MuxType.FAILURE if isinstance(m, Failure) else MuxType.PERMISSION_DENIED
            return kind, _u32(m.request_id) + encode_string(m.reason)
        case ExitMessage():
            return MuxType.EXIT_MESSAGE, _u32(m.session_id, m.status)
        case AliveReply():
            return MuxType.ALIVE, _u32(m.request_id, m.pid)
        case SessionOpened():
            return MuxType.SESSION_OPENED, _u32(m.request_id, m.session_id)
        case RemotePort():
            return MuxType.REMOTE_PORT, _u32(m.request_id, m.port)
        case TtyAllocFail():
            return MuxType.TTY_ALLOC_FAIL, _u32(m.session_id)
        case StatusRequest():
            return MuxType.HASHIKE_STATUS, _u32(m.request_id)
        case StatusReply():
            return MuxType.HASHIKE_STATUS_REPLY, _u32(m.request_id) + encode_string(m.document)
    raise TypeError(f"not a mux message: {m!r}")  # pragma: no cover - the union is closed


_SIMPLE_TYPES: dict[type, MuxType] = {
    AliveCheck: MuxType.ALIVE_CHECK,
    Terminate: MuxType.TERMINATE,
    StopListening: MuxType.STOP_LISTENING,
    Ok: MuxType.OK,
}


def encode(message: MuxMessage) -> bytes:
    """The whole frame: length, type, body."""
    kind, body = _body(message)
    return encode_string(encode_uint32(kind) + body)


def _port(value: int) -> int:
    # mux.c refuses a port above 65535 unless it is the socket marker.
    if value > 0xFFFF and value != SOCKET_PORT:
        raise DecodeError(f"mux: port {value} out of range")
    return value


def _decode_forward(r: Reader, cancel: bool) -> ForwardRequest:
    request_id, kind = r.uint32(), r.uint32()
    if kind not in ForwardKind._value2member_map_:
        raise DecodeError(f"mux: unknown forwarding type {kind}")
    return ForwardRequest(
        request_id=request_id,
        cancel=cancel,
        kind=ForwardKind(kind),
        listen_host=r.text(MAX_FIELD),
        listen_port=_port(r.uint32()),
        connect_host=r.text(MAX_FIELD),
        connect_port=_port(r.uint32()),
    )


def _decode_session(r: Reader) -> NewSession:
    request_id = r.uint32()
    r.string(MAX_FIELD)  # reserved, ignored (§2)
    tty, x11, agent, subsystem, escape = (r.uint32() for _ in range(5))
    term, command = r.text(MAX_FIELD), r.text(MAX_FIELD)
    env: list[str] = []
    while r.remaining:
        if len(env) == MAX_ENV:
            raise DecodeError(f"mux: more than {MAX_ENV} environment strings")
        env.append(r.text(MAX_FIELD))
    return NewSession(
        request_id=request_id,
        want_tty=bool(tty),
        want_x11=bool(x11),
        want_agent=bool(agent),
        subsystem=bool(subsystem),
        escape_char=None if escape == _ESCAPE_NONE else escape,
        term=term,
        command=command,
        env=tuple(env),
    )


def _decode_hello(r: Reader) -> Hello:
    version = r.uint32()
    extensions: list[tuple[str, bytes]] = []
    while r.remaining:
        if len(extensions) == 64:  # none is defined (§1): a few would already be odd
            raise DecodeError("mux: too many hello extensions")
        extensions.append((r.ascii(MAX_FIELD), r.string(MAX_FIELD)))
    return Hello(version=version, extensions=tuple(extensions))


def _decode_body(kind: int, r: Reader) -> MuxMessage:
    match kind:
        case MuxType.HELLO:
            return _decode_hello(r)
        case MuxType.ALIVE_CHECK:
            return AliveCheck(request_id=r.uint32())
        case MuxType.TERMINATE:
            return Terminate(request_id=r.uint32())
        case MuxType.STOP_LISTENING:
            return StopListening(request_id=r.uint32())
        case MuxType.OPEN_FWD | MuxType.CLOSE_FWD:
            return _decode_forward(r, cancel=kind == MuxType.CLOSE_FWD)
        case MuxType.NEW_SESSION:
            return _decode_session(r)
        case MuxType.NEW_STDIO_FWD:
            request_id, _reserved = r.uint32(), r.string(MAX_FIELD)
            return NewStdioForward(request_id=request_id, host=r.text(MAX_FIELD), port=_port(r.uint32()))
        case MuxType.OK:
            return Ok(request_id=r.uint32())
        case MuxType.PERMISSION_DENIED:
            return PermissionDenied(request_id=r.uint32(), reason=r.text(MAX_FIELD))
        case MuxType.FAILURE:
            return Failure(request_id=r.uint32(), reason=r.text(MAX_FIELD))
        case MuxType.EXIT_MESSAGE:
            return ExitMessage(session_id=r.uint32(), status=r.uint32())
        case MuxType.ALIVE:
            return AliveReply(request_id=r.uint32(), pid=r.uint32())
        case MuxType.SESSION_OPENED:
            return SessionOpened(request_id=r.uint32(), session_id=r.uint32())
        case MuxType.REMOTE_PORT:
            return RemotePort(request_id=r.uint32(), port=_port(r.uint32()))
        case MuxType.TTY_ALLOC_FAIL:
            return TtyAllocFail(session_id=r.uint32())
        case MuxType.HASHIKE_STATUS:
            return StatusRequest(request_id=r.uint32())
        case MuxType.HASHIKE_STATUS_REPLY:
            return StatusReply(request_id=r.uint32(), document=r.text(MAX_STATUS))
    raise UnknownMuxType(kind, r)


class UnknownMuxType(DecodeError):
    """A type this codec does not know. A master answers it with MUX_S_FAILURE
    "unsupported request" (as mux.c does) when a request id can be read."""

    def __init__(self, kind: int, r: Reader) -> None:
        super().__init__(f"mux: unsupported message type 0x{kind:08x}")
        self.kind = kind
        self.request_id = r.uint32() if r.remaining >= 4 else None


def decode(payload: bytes) -> MuxMessage:
    """One message (a frame without its length); DecodeError unless it parses exactly."""
    r = Reader(payload)
    message = _decode_body(r.uint32(), r)
    r.check_end()
    return message


class MuxDecoder:
    """Frames out of a byte stream, at most one frame of MAX_FRAME buffered."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Take bytes; the caller then calls :meth:`next` until it returns None."""
        self._buffer += data

    def next(self) -> MuxMessage | None:
        """The next whole message, or None for now. DecodeError on a hostile
        or malformed frame: the stream is then useless and must be closed,
        except after UnknownMuxType, whose frame is consumed."""
        if len(self._buffer) < 4:
            return None
        (length,) = _U32.unpack_from(self._buffer)
        if length > MAX_FRAME or length < 4:
            raise DecodeError(f"mux: frame of {length} bytes")
        if len(self._buffer) < 4 + length:
            return None
        payload = bytes(self._buffer[4 : 4 + length])
        del self._buffer[: 4 + length]
        return decode(payload)

    def take(self, n: int) -> bytes | None:
        """``n`` raw bytes from the stream, once there are that many: the bytes
        each passed descriptor rides on, after MUX_C_NEW_SESSION (one per
        descriptor, as ssh's mm_send_fd sends them)."""
        if len(self._buffer) < n:
            return None
        taken = bytes(self._buffer[:n])
        del self._buffer[:n]
        return taken

    @property
    def pending(self) -> int:
        """Bytes held for a frame not yet whole."""
        return len(self._buffer)
