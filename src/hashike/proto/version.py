"""RFC 4253 §4.2 protocol version exchange, with hard limits.

The server may send other lines before its ``SSH-`` line; the client may not.
We accept at most :data:`MAX_PRE_LINES` such lines and :data:`MAX_PRE_BYTES`
bytes in all, and no line longer than 255 characters including CR LF (§4.2),
so a peer that never sends a version line cannot make us buffer without end.
"""

from __future__ import annotations

from dataclasses import dataclass

from hashike.proto.constants import DisconnectReason
from hashike.proto.errors import RemoteProtocolError

__all__ = [
    "MAX_LINE",
    "MAX_PRE_BYTES",
    "MAX_PRE_LINES",
    "PeerVersion",
    "VersionParser",
    "identification_line",
]

MAX_LINE = 255  # RFC 4253 §4.2, including CR LF
MAX_PRE_LINES = 1024
MAX_PRE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerVersion:
    line: bytes  # without CR LF: V_C / V_S in the exchange hash (RFC 4253 §8)
    software: str
    comments: str
    banner_lines: tuple[str, ...]


def identification_line(software_version: str) -> bytes:
    return f"SSH-2.0-{software_version}\r\n".encode("ascii")


class VersionParser:
    """Consumes bytes until the peer's identification line is complete."""

    def __init__(self, *, peer_is_server: bool) -> None:
        self._peer_is_server = peer_is_server
        self._buf = bytearray()
        self._pre: list[str] = []
        self._pre_bytes = 0

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[PeerVersion, bytes] | None:
        """Feed bytes; return the version and any bytes after its line once complete."""
        self._buf += data
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    raise RemoteProtocolError("identification line too long")
                return None
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if len(line) + 1 > MAX_LINE:
                raise RemoteProtocolError("identification line too long")
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.startswith(b"SSH-"):
                return self._parse(line), bytes(self._buf)
            if not self._peer_is_server:
                raise RemoteProtocolError("client sent data before its identification line")
            self._pre_bytes += end + 1
            if len(self._pre) >= MAX_PRE_LINES or self._pre_bytes > MAX_PRE_BYTES:
                raise RemoteProtocolError("too many lines before the identification line")
            self._pre.append(line.decode("utf-8", "replace"))

    def _parse(self, line: bytes) -> PeerVersion:
        if b"\x00" in line:
            raise RemoteProtocolError("NUL in identification line")
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("identification line is not US-ASCII") from None
        ident, _, comments = text.partition(" ")
        parts = ident.split("-", 2)
        # "1.99" means a server that also speaks 2.0 (RFC 4253 §5.1).
        if len(parts) != 3 or parts[1] not in ("2.0", "1.99") or not parts[2]:
            raise RemoteProtocolError(
                f"protocol version not supported: {text!r}", DisconnectReason.PROTOCOL_VERSION_NOT_SUPPORTED
            )
        return PeerVersion(line=line, software=parts[2], comments=comments, banner_lines=tuple(self._pre))
