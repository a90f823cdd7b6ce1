"""RFC 8308 extension negotiation: the EXT_INFO message we send, and the
peer's, decoded with bounds."""

from __future__ import annotations

from hashike.proto.config import SUPPORTED_HOST_KEY_ALGORITHMS
from hashike.proto.constants import MsgType
from hashike.proto.errors import RemoteProtocolError
from hashike.proto.packet import BULK_PACKET_LENGTH
from hashike.proto.wire import Reader, encode_byte, encode_string, encode_uint32

__all__ = [
    "DEFAULT_PEER_MAX_PACKET",
    "EXT_MAX_PACKET",
    "decode_ext_info",
    "encode_ext_info",
    "peer_max_packet",
]

# Our own transport extension (RFC 8308 §2.2 naming): the largest packet we
# accept once the user is authenticated (before it, OpenSSH's 256 KiB), so two
# hashike peers can use packets beyond RFC 4253's 35000 bytes.
EXT_MAX_PACKET = "max-packet-length@hashike.dev"
DEFAULT_PEER_MAX_PACKET = 35000  # RFC 4253 §6.1
_MAX_EXTENSIONS = 64
_NAME_LIMIT = 256
_VALUE_LIMIT = 64 * 1024


def encode_ext_info(is_client: bool) -> bytes:
    """Our EXT_INFO (RFC 8308 §2.3)."""
    extensions: list[tuple[str, bytes]] = [(EXT_MAX_PACKET, str(BULK_PACKET_LENGTH).encode())]
    if not is_client:
        # RFC 8308 §3.1: what user authentication accepts, which is every
        # signature algorithm we verify (never ssh-rsa).
        sig_algs = ",".join(SUPPORTED_HOST_KEY_ALGORITHMS)
        extensions = [("server-sig-algs", sig_algs.encode()), ("ping@openssh.com", b"0"), *extensions]
    return (
        encode_byte(MsgType.EXT_INFO)
        + encode_uint32(len(extensions))
        + b"".join(encode_string(name) + encode_string(value) for name, value in extensions)
    )


def decode_ext_info(payload: memoryview) -> dict[str, bytes]:
    """The peer's EXT_INFO (RFC 8308 §2.3), message number included."""
    r = Reader(payload, 1)
    count = r.uint32()
    if count > _MAX_EXTENSIONS:
        raise RemoteProtocolError(f"EXT_INFO with {count} extensions")
    extensions: dict[str, bytes] = {}
    for _ in range(count):
        name = r.ascii(_NAME_LIMIT)
        extensions[name] = r.string(_VALUE_LIMIT)
    r.check_end()
    return extensions


def peer_max_packet(extensions: dict[str, bytes]) -> int:
    """The largest packet the peer accepts: what it said in our extension,
    within RFC 4253's floor and our own bound."""
    value = extensions.get(EXT_MAX_PACKET)
    if value is None or not value.isdigit():
        return DEFAULT_PEER_MAX_PACKET
    return max(DEFAULT_PEER_MAX_PACKET, min(int(value), BULK_PACKET_LENGTH))
