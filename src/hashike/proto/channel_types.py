"""The type-specific data of a CHANNEL_OPEN (RFC 4254 §5.1): encoded for the
opens we send, decoded for the peer's. A new channel type's fields go here;
which types a side accepts is the runtime's choice (its open handlers)."""

from __future__ import annotations

from hashike.proto.errors import DecodeError
from hashike.proto.wire import Reader, encode_string, encode_uint32

__all__ = ["OpenFields", "decode_open_extra", "encode_streamlocal", "encode_tcpip"]

_HOST_LIMIT = 1024
_PATH_LIMIT = 4096

# host, port, orig_host, orig_port, socket_path: whatever the type carries.
OpenFields = tuple[str | None, int | None, str | None, int | None, str | None]


def encode_tcpip(host: str, port: int, orig_host: str, orig_port: int) -> bytes:
    """direct-tcpip (RFC 4254 §7.2) and forwarded-tcpip (§7.1) open data."""
    for p in (port, orig_port):
        if not 0 <= p <= 0xFFFF:
            raise ValueError(f"port must be between 0 and 65535, not {p}")
    return encode_string(host) + encode_uint32(port) + encode_string(orig_host) + encode_uint32(orig_port)


def encode_streamlocal(path: str, *, direct: bool) -> bytes:
    """direct-streamlocal@openssh.com and forwarded-streamlocal@openssh.com
    open data (PROTOCOL §2.4): the socket path, a reserved string and, for
    direct-, a reserved uint32."""
    return encode_string(path) + encode_string(b"") + (encode_uint32(0) if direct else b"")


def _cstring(r: Reader, limit: int) -> str:
    """A host name or path: UTF-8, and no NUL, which no OS call would accept."""
    value = r.text(limit)
    if "\x00" in value:
        raise DecodeError("NUL byte in a host name or socket path")
    return value


def decode_open_extra(kind: str, extra: bytes) -> OpenFields | None:
    """Type-specific open data as (host, port, orig_host, orig_port,
    socket_path); None if a port is out of range, which (as in OpenSSH)
    refuses the open rather than ending the connection. DecodeError if it
    is malformed; all None for a type with no fields we read."""
    r = Reader(extra)
    if kind in ("direct-tcpip", "forwarded-tcpip"):  # RFC 4254 §7.2, §7.1
        host, port = _cstring(r, _HOST_LIMIT), r.uint32()
        orig_host, orig_port = _cstring(r, _HOST_LIMIT), r.uint32()
        r.check_end()
        if port > 0xFFFF or orig_port > 0xFFFF:
            return None
        return host, port, orig_host, orig_port, None
    if kind in ("direct-streamlocal@openssh.com", "forwarded-streamlocal@openssh.com"):
        # PROTOCOL §2.4: socket path, reserved string (, reserved uint32 for direct-)
        path = _cstring(r, _PATH_LIMIT)
        r.string(_HOST_LIMIT)
        if kind.startswith("direct"):
            r.uint32()
        r.check_end()
        return None, None, None, None, path
    return None, None, None, None, None
