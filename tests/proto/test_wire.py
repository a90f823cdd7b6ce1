"""RFC 4251 §5 data types: the encoders, and the bounded Reader that decodes them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashike.proto.errors import DecodeError
from hashike.proto.wire import (
    MAX_NAMELIST_ITEMS,
    MAX_STRING,
    Reader,
    encode_bool,
    encode_byte,
    encode_mpint,
    encode_namelist,
    encode_string,
    encode_uint32,
    encode_uint64,
)

# ------------------------------------------------------------ fixed sizes


def test_fixed_size_encodings() -> None:
    assert encode_byte(0xAB) == b"\xab"
    assert (encode_bool(True), encode_bool(False)) == (b"\x01", b"\x00")
    # RFC 4251 §5: network byte order.
    assert encode_uint32(0x29B7F4AA) == bytes.fromhex("29b7f4aa")
    assert encode_uint64(0x0102030405060708) == bytes.fromhex("0102030405060708")


@given(byte=st.integers(0, 0xFF), u32=st.integers(0, 2**32 - 1), u64=st.integers(0, 2**64 - 1))
def test_fixed_sizes_round_trip(byte: int, u32: int, u64: int) -> None:
    r = Reader(encode_byte(byte) + encode_uint32(u32) + encode_uint64(u64) + encode_bool(True))
    assert (r.byte(), r.uint32(), r.uint64(), r.boolean()) == (byte, u32, u64, True)
    r.check_end()


@pytest.mark.parametrize("value", [1, 2, 0x80, 0xFF])
def test_any_nonzero_byte_is_true(value: int) -> None:
    # RFC 4251 §5: "All non-zero values MUST be interpreted as TRUE".
    assert Reader(bytes([value])).boolean() is True
    assert Reader(b"\x00").boolean() is False


@pytest.mark.parametrize(
    ("read", "size"),
    [(Reader.byte, 1), (Reader.boolean, 1), (Reader.uint32, 4), (Reader.uint64, 8)],
)
def test_fixed_sizes_truncated(read: Callable[[Reader], object], size: int) -> None:
    for short in range(size):
        with pytest.raises(DecodeError, match="truncated"):
            read(Reader(bytes(short)))


# ---------------------------------------------------------------- strings


def test_string_encoding() -> None:
    # RFC 4251 §5: "testing" is 00 00 00 07 t e s t i n g; text is UTF-8.
    assert encode_string(b"testing") == b"\x00\x00\x00\x07testing"
    assert encode_string("") == b"\x00\x00\x00\x00"
    assert encode_string("é") == b"\x00\x00\x00\x02\xc3\xa9"
    assert encode_string(bytearray(b"ab")) == encode_string(memoryview(b"ab")) == b"\x00\x00\x00\x02ab"


@given(value=st.binary(max_size=300), limit=st.integers(0, 400))
def test_string_round_trip_and_limit(value: bytes, limit: int) -> None:
    r = Reader(encode_string(value))
    if len(value) > limit:
        with pytest.raises(DecodeError, match="exceeds the limit"):
            r.string(limit)
    else:
        assert r.string(limit) == value
        r.check_end()


def test_string_default_limit_is_max_string() -> None:
    assert Reader(encode_string(bytes(MAX_STRING))).string() == bytes(MAX_STRING)
    # The length alone is refused: no MAX_STRING + 1 bytes are needed to say so.
    with pytest.raises(DecodeError, match="exceeds the limit"):
        Reader(encode_uint32(MAX_STRING + 1)).string()


def test_string_longer_than_the_message_is_truncated() -> None:
    with pytest.raises(DecodeError, match="wanted 5 bytes, 4 left"):
        Reader(encode_uint32(5) + b"abcd").string()
    with pytest.raises(DecodeError, match="truncated"):
        Reader(encode_uint32(2**32 - 1)).string(2**32)
    with pytest.raises(DecodeError, match="truncated"):
        Reader(b"\x00\x00\x00").string()  # not even the length


def test_text_and_ascii() -> None:
    assert Reader(encode_string("naïve")).text() == "naïve"
    assert Reader(encode_string("ssh-ed25519")).ascii() == "ssh-ed25519"
    with pytest.raises(DecodeError, match="UTF-8"):
        Reader(encode_string(b"\xff\xfe")).text()
    with pytest.raises(DecodeError, match="US-ASCII"):
        Reader(encode_string("é")).ascii()
    with pytest.raises(DecodeError, match="exceeds the limit"):
        Reader(encode_string("abc")).text(2)
    with pytest.raises(DecodeError, match="exceeds the limit"):
        Reader(encode_string("abc")).ascii(2)


# ----------------------------------------------------------------- mpints

# RFC 4251 §5, the examples of mpint, verbatim.
RFC_4251_MPINTS = [
    (0, "00000000"),
    (0x9A378F9B2E332A7, "0000000809a378f9b2e332a7"),
    (0x80, "000000020080"),
    (-1234, "00000002fb2e"),
    (-0xDEADBEEF, "00000005ff21524111"),
]


@pytest.mark.parametrize(("value", "wire"), RFC_4251_MPINTS)
def test_mpint_rfc_examples(value: int, wire: str) -> None:
    assert encode_mpint(value).hex() == wire
    assert Reader(bytes.fromhex(wire)).mpint() == value


@pytest.mark.parametrize(
    ("value", "body"),
    [
        (1, "01"),
        (0x7F, "7f"),  # top bit clear: no leading zero
        (0xFF, "00ff"),  # top bit set: a zero byte keeps it positive
        (-1, "ff"),
        (-0x80, "80"),  # a negative power of two needs no 0xff in front
        (-0x81, "ff7f"),
        (-0x8000, "8000"),
    ],
)
def test_mpint_sign_rules(value: int, body: str) -> None:
    # RFC 4251 §5: two's complement, the sign in the top bit, no redundant
    # leading 00 or ff bytes, zero as the empty string.
    encoded = encode_mpint(value)
    assert encoded == encode_string(bytes.fromhex(body))


@given(value=st.integers(-(2**600), 2**600))
def test_mpint_round_trip_is_minimal(value: int) -> None:
    encoded = encode_mpint(value)
    body = encoded[4:]
    assert Reader(encoded).mpint() == value
    if value == 0:
        assert body == b""
    else:
        assert (body[0] >= 0x80) == (value < 0)  # the top bit is the sign
        if len(body) > 1:  # a leading byte that only repeats the sign would be redundant
            assert not (body[0] == 0 and body[1] < 0x80)
            assert not (body[0] == 0xFF and body[1] >= 0x80)


def test_mpint_limit() -> None:
    assert Reader(encode_mpint(2**64)).mpint(9) == 2**64
    with pytest.raises(DecodeError, match="exceeds the limit"):
        Reader(encode_mpint(2**64)).mpint(8)


# ------------------------------------------------------------- name-lists


@pytest.mark.parametrize(
    ("names", "wire"),
    [
        ((), "00000000"),  # RFC 4251 §5 examples
        (("zlib",), "000000047a6c6962"),
        (("zlib", "none"), "000000097a6c69622c6e6f6e65"),
    ],
)
def test_namelist_rfc_examples(names: tuple[str, ...], wire: str) -> None:
    assert encode_namelist(names).hex() == wire
    assert encode_namelist(list(names)).hex() == wire
    assert Reader(bytes.fromhex(wire)).namelist() == names


@pytest.mark.parametrize("text", [",", "a,", ",a", "a,,b", "a\x00b", "\x00"])
def test_namelist_refuses_empty_names_and_nul(text: str) -> None:
    # RFC 4251 §5: names are non-empty and contain no comma or NUL.
    with pytest.raises(DecodeError, match="malformed name-list"):
        Reader(encode_string(text)).namelist()


def test_namelist_must_be_ascii() -> None:
    with pytest.raises(DecodeError, match="US-ASCII"):
        Reader(encode_string("zlïb")).namelist()
    with pytest.raises(UnicodeEncodeError):
        encode_namelist(("zlïb",))


def test_namelist_bounds() -> None:
    names = tuple(f"n{i}" for i in range(MAX_NAMELIST_ITEMS))
    assert Reader(encode_namelist(names)).namelist() == names
    with pytest.raises(DecodeError, match=f"exceeds {MAX_NAMELIST_ITEMS}"):
        Reader(encode_namelist((*names, "one-more"))).namelist()
    # The text of a name-list is capped at 64 KiB.
    with pytest.raises(DecodeError, match="exceeds the limit"):
        Reader(encode_string("a" * (64 * 1024 + 1))).namelist()


names_strategy = st.lists(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","), min_size=1),
    max_size=20,
)


@given(names=names_strategy)
def test_namelist_round_trip(names: list[str]) -> None:
    r = Reader(encode_namelist(names))
    assert r.namelist() == tuple(names)
    r.check_end()


# --------------------------------------------------------- the Reader itself


def test_reader_raw_rest_remaining_and_start() -> None:
    r = Reader(b"\x05abcdef", 1)  # start past the message number
    assert r.remaining == 6
    assert r.raw(2) == b"ab"
    assert r.remaining == 4
    assert r.rest() == b"cdef"
    assert r.remaining == 0
    assert r.rest() == b""
    r.check_end()


def test_reader_raw_bounds() -> None:
    with pytest.raises(DecodeError, match="wanted 3 bytes, 2 left"):
        Reader(b"ab").raw(3)
    with pytest.raises(DecodeError, match="truncated"):
        Reader(b"ab").raw(-1)  # never a read backwards


def test_check_end_refuses_trailing_bytes() -> None:
    r = Reader(encode_uint32(7) + b"xy")
    assert r.uint32() == 7
    with pytest.raises(DecodeError, match="2 unexpected bytes"):
        r.check_end()


def test_a_failed_read_consumes_nothing() -> None:
    r = Reader(encode_uint32(10) + b"abc")
    with pytest.raises(DecodeError):
        r.raw(8)
    assert r.uint32() == 10


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_reader_copies_mutable_input(kind: type[bytearray] | type[memoryview]) -> None:
    source = bytearray(encode_string(b"abc"))
    r = Reader(kind(source))
    source[4:7] = b"xyz"  # the caller's buffer is reused; the reader's copy is not
    assert r.string() == b"abc"
