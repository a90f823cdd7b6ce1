"""Hostile KRLs: whatever bytes a RevokedKeys file holds, parse_krl ends in
a KRL or KRLFormatError, and asking a parsed one about a key or a
certificate is a plain answer, never an exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hashike.proto.krl import KRLFormatError, parse_krl
from hashike.proto.wire import encode_byte, encode_string, encode_uint64
from tests.fuzz.test_hostile_input import FAST, mutated
from tests.proto.test_krl import CA, USER, cert, cert_section, extension, header, section

SEEDS = [
    header("seed")
    + cert_section(
        section(0x20, encode_uint64(5)),
        section(0x21, encode_uint64(10) + encode_uint64(20)),
        section(0x22, encode_uint64(30) + encode_string(b"\x7f\x01")),
        section(0x23, encode_string("alice")),
        section(0x39, extension("cert-bloom-serial", False)),
    )
    + section(2, encode_string(USER.public_key.blob))
    + section(5, encode_string(b"\1" * 32) + encode_string(b"\2" * 32))
    + section(255, extension("bloom-explicit-key", False)),
    header() + cert_section(section(0x23, encode_string("bob")), ca=b""),
    header() + section(2, encode_string(CA.public_key.blob)),
]
_SECTION = st.tuples(
    st.sampled_from([1, 2, 3, 4, 5, 255, 0x20, 0x21, 0x22, 0x23, 0x39]), st.binary(max_size=64)
)
PROBES = [USER.public_key, CA.public_key, cert(5), cert(0), cert(31, key_id="bob")]


def _exercise(data: bytes) -> None:
    try:
        krl = parse_krl(data)
    except KRLFormatError:
        return
    for key in PROBES:
        assert isinstance(krl.revokes(key), bool)


@FAST
@given(st.data())
def test_mutated_krls(data: st.DataObject) -> None:
    _exercise(data.draw(mutated(data.draw(st.sampled_from(SEEDS)))))


@FAST
@given(st.lists(_SECTION, max_size=6))
def test_random_sections(sections: list[tuple[int, bytes]]) -> None:
    _exercise(header() + b"".join(encode_byte(kind) + encode_string(body) for kind, body in sections))


@FAST
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    _exercise(data)
    _exercise(header() + data)
