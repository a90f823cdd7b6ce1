"""hashiked's status socket protocol (issue 11): one request, one reply.

hashike's own; nothing like it is in OpenSSH. Each message is a frame: a
uint32 length, then the message (RFC 4251 §5 types):

- ``byte 1 STATUS_REQUEST, uint32 version`` (client to server);
- ``byte 2 STATUS_REPLY, string document``: the status as one UTF-8 JSON
  document (README, "hashike status --server"), at most :data:`MAX_DOCUMENT`;
- ``byte 3 FAILURE, string reason``: why there is no document.

A client connects, sends a request, reads one reply; the server then closes.
The supervisor of ``Workers`` asks each worker the same way. The codec is
pure: :class:`StatusDecoder` holds at most one frame; a longer length is
refused before anything is buffered, and a message must parse to its last
byte, or :class:`DecodeError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hashike.proto.errors import DecodeError
from hashike.proto.wire import Reader, encode_byte, encode_string, encode_uint32

__all__ = [
    "MAX_DOCUMENT",
    "MAX_FRAME",
    "MAX_REASON",
    "VERSION",
    "Failure",
    "StatusDecoder",
    "StatusMessage",
    "StatusReply",
    "StatusRequest",
    "decode",
    "encode",
]

VERSION = 1
MAX_DOCUMENT = 256 * 1024  # as a client master's status (proto/mux.py MAX_STATUS)
MAX_REASON = 1024
MAX_FRAME = 1 + 4 + MAX_DOCUMENT  # the largest message: a reply's type, length, document
_U32 = struct.Struct(">I")
_REQUEST, _REPLY, _FAILURE = 1, 2, 3


@dataclass(frozen=True, slots=True)
class StatusRequest:
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class StatusReply:
    document: str  # JSON


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str


StatusMessage = StatusRequest | StatusReply | Failure


def encode(message: StatusMessage) -> bytes:
    """The whole frame: length, type, body. ValueError for a field too long
    to decode (the sender's bug: it must trim first)."""
    match message:
        case StatusRequest():
            body = encode_byte(_REQUEST) + encode_uint32(message.version)
        case StatusReply():
            body = encode_byte(_REPLY) + _bounded(message.document, MAX_DOCUMENT)
        case Failure():
            body = encode_byte(_FAILURE) + _bounded(message.reason, MAX_REASON)
    return encode_string(body)


def _bounded(text: str, limit: int) -> bytes:
    data = text.encode("utf-8")
    if len(data) > limit:
        raise ValueError(f"server status: {len(data)} bytes, more than {limit}")
    return encode_string(data)


def decode(payload: bytes) -> StatusMessage:
    """One message (a frame without its length); DecodeError unless it parses exactly."""
    r = Reader(payload)
    kind = r.byte()
    message: StatusMessage
    if kind == _REQUEST:
        message = StatusRequest(r.uint32())
    elif kind == _REPLY:
        message = StatusReply(r.text(MAX_DOCUMENT))
    elif kind == _FAILURE:
        message = Failure(r.text(MAX_REASON))
    else:
        raise DecodeError(f"server status: unknown message type {kind}")
    r.check_end()
    return message


class StatusDecoder:
    """Messages out of a byte stream, at most one frame of ``limit`` buffered
    (a server reading requests gives a small one)."""

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> None:
        """Take bytes; DecodeError at once if they cannot be the start of a
        frame within the limit (so a caller never buffers more)."""
        self._buffer += data
        if len(self._buffer) >= 4:
            (length,) = _U32.unpack_from(self._buffer)
            if length > self._limit or length < 1:
                raise DecodeError(f"server status: frame of {length} bytes")

    def next(self) -> StatusMessage | None:
        """The next whole message, or None for now."""
        if len(self._buffer) < 4:
            return None
        (length,) = _U32.unpack_from(self._buffer)
        if len(self._buffer) < 4 + length:
            return None
        payload = bytes(self._buffer[4 : 4 + length])
        del self._buffer[: 4 + length]
        message = decode(payload)
        if self._buffer:
            self.feed(b"")  # the next frame's length is checked now, too
        return message

    @property
    def pending(self) -> int:
        """Bytes held for a frame not yet whole."""
        return len(self._buffer)
