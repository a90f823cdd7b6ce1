"""RFC 4251 §5 data types: encoders, and a bounded Reader cursor for decoding.

Every decoder in hashike reads through :class:`Reader`. It checks each length it
reads against the bytes that remain *before* slicing, so a hostile length can
never make us allocate or read past the message, and every decoder ends with
:meth:`Reader.check_end` so trailing garbage is refused too.
"""

from __future__ import annotations

import struct

from hashike.proto.errors import DecodeError

__all__ = [
    "MAX_NAMELIST_ITEMS",
    "MAX_STRING",
    "Reader",
    "encode_bool",
    "encode_byte",
    "encode_mpint",
    "encode_namelist",
    "encode_string",
    "encode_uint32",
    "encode_uint64",
]

# A single string inside one SSH message can never exceed the largest packet we
# accept (packet.MAX_PACKET_LENGTH); this cap is a second, independent bound.
MAX_STRING = 256 * 1024
# RFC 4251 §5 puts no limit on name-lists; real ones hold a few dozen names.
MAX_NAMELIST_ITEMS = 256

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def encode_byte(value: int) -> bytes:
    return bytes((value,))


def encode_bool(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def encode_uint32(value: int) -> bytes:
    return _U32.pack(value)


def encode_uint64(value: int) -> bytes:
    return _U64.pack(value)


def encode_string(value: bytes | bytearray | memoryview | str) -> bytes:
    """RFC 4251 §5 ``string``: uint32 length, then the bytes (str is UTF-8)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return _U32.pack(len(value)) + bytes(value)


def encode_mpint(value: int) -> bytes:
    """RFC 4251 §5 ``mpint``: two's complement, big-endian, minimal length."""
    if value == 0:
        return _U32.pack(0)
    length = (value.bit_length() + 8) // 8  # +8 leaves room for the sign bit
    data = value.to_bytes(length, "big", signed=True)
    # Drop a redundant leading 0x00 / 0xff the +8 may have added.
    if len(data) > 1 and ((data[0] == 0 and data[1] < 0x80) or (data[0] == 0xFF and data[1] >= 0x80)):
        data = data[1:]
    return _U32.pack(len(data)) + data


def encode_namelist(names: tuple[str, ...] | list[str]) -> bytes:
    """RFC 4251 §5 ``name-list``: comma-separated US-ASCII names in a string."""
    return encode_string(",".join(names).encode("ascii"))


class Reader:
    """A cursor over one message. Every read is bounds-checked first."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self._data = bytes(data) if not isinstance(data, bytes) else data
        self._pos = pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int) -> bytes:
        if n < 0 or n > len(self._data) - self._pos:
            raise DecodeError(f"message truncated: wanted {n} bytes, {self.remaining} left")
        start = self._pos
        self._pos += n
        return self._data[start : self._pos]

    def byte(self) -> int:
        if self._pos >= len(self._data):
            raise DecodeError("message truncated: wanted 1 byte, 0 left")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def boolean(self) -> bool:
        # RFC 4251 §5: any non-zero value is TRUE.
        return self.byte() != 0

    def uint32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def uint64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def string(self, limit: int = MAX_STRING) -> bytes:
        length = self.uint32()
        if length > limit:
            raise DecodeError(f"string of {length} bytes exceeds the limit of {limit}")
        return self._take(length)

    def text(self, limit: int = MAX_STRING) -> str:
        """A string that RFC 4251 says is UTF-8 (descriptions, user names)."""
        try:
            return self.string(limit).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("string is not valid UTF-8") from exc

    def ascii(self, limit: int = MAX_STRING) -> str:
        try:
            return self.string(limit).decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecodeError("name is not US-ASCII") from exc

    def mpint(self, limit: int = 16 * 1024) -> int:
        data = self.string(limit)
        return int.from_bytes(data, "big", signed=True) if data else 0

    def namelist(self) -> tuple[str, ...]:
        text = self.ascii(64 * 1024)
        if not text:
            return ()
        names = text.split(",")
        if len(names) > MAX_NAMELIST_ITEMS:
            raise DecodeError(f"name-list of {len(names)} names exceeds {MAX_NAMELIST_ITEMS}")
        # RFC 4251 §5: names are non-empty and contain no commas or NULs.
        if any(not name or "\x00" in name for name in names):
            raise DecodeError("malformed name-list")
        return tuple(names)

    def rest(self) -> bytes:
        return self._take(self.remaining)

    def check_end(self) -> None:
        if self._pos != len(self._data):
            raise DecodeError(f"{self.remaining} unexpected bytes at the end of the message")
