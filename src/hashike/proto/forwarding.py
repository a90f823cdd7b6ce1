"""The data of the remote-forwarding global requests (RFC 4254 §7.1):
``tcpip-forward`` and ``cancel-tcpip-forward`` carry an address to bind and a
port; the reply to a ``tcpip-forward`` for port 0 carries the port the
server chose. ``streamlocal-forward@openssh.com`` and its cancel (OpenSSH
PROTOCOL §2.4) carry a socket path instead. Encoded for the requests we
send, decoded for the peer's."""

from __future__ import annotations

from hashike.proto.errors import DecodeError
from hashike.proto.wire import Reader, encode_string, encode_uint32

__all__ = [
    "decode_allocated_port",
    "decode_streamlocal_forward",
    "decode_tcpip_forward",
    "encode_allocated_port",
    "encode_streamlocal_forward",
    "encode_tcpip_forward",
]

_ADDRESS_LIMIT = 1024  # NI_MAXHOST, as for the host names of channel opens
_PATH_LIMIT = 4096  # PATH_MAX, as for the socket paths of channel opens


def encode_tcpip_forward(address: str, port: int) -> bytes:
    """``string address to bind, uint32 port to bind`` (§7.1)."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port must be between 0 and 65535, not {port}")
    return encode_string(address) + encode_uint32(port)


def decode_tcpip_forward(extra: bytes) -> tuple[str, int] | None:
    """The (address, port) of a peer's (cancel-)tcpip-forward; None if the
    port is out of range (refused, not a protocol error, as OpenSSH does).
    Raises DecodeError when the data is malformed."""
    r = Reader(extra)
    address, port = r.text(_ADDRESS_LIMIT), r.uint32()
    r.check_end()
    if "\x00" in address:
        raise DecodeError("NUL byte in a forwarding address")
    return None if port > 0xFFFF else (address, port)


def encode_allocated_port(port: int) -> bytes:
    """The REQUEST_SUCCESS data when port 0 was asked for: the port bound (§7.1)."""
    return encode_uint32(port)


def decode_allocated_port(extra: bytes) -> int | None:
    """The port in a REQUEST_SUCCESS for port 0; None if it is missing or out
    of range (the server did not say which port it chose)."""
    r = Reader(extra)
    try:
        port = r.uint32()
        r.check_end()
    except DecodeError:
        return None
    return port if 0 < port <= 0xFFFF else None


def encode_streamlocal_forward(path: str) -> bytes:
    """``string socket path`` (PROTOCOL §2.4)."""
    return encode_string(path)


def decode_streamlocal_forward(extra: bytes) -> str:
    """The socket path of a peer's (cancel-)streamlocal-forward. Raises
    DecodeError when the data is malformed or the path holds a NUL."""
    r = Reader(extra)
    path = r.text(_PATH_LIMIT)
    r.check_end()
    if "\x00" in path or not path:
        raise DecodeError("empty socket path, or a NUL byte in it")
    return path
