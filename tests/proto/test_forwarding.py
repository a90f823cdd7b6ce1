"""The data of tcpip-forward, cancel-tcpip-forward and their reply (RFC 4254
§7.1), and of (cancel-)streamlocal-forward@openssh.com (PROTOCOL §2.4)."""

from __future__ import annotations

import pytest

from hashike.proto.errors import DecodeError
from hashike.proto.forwarding import (
    decode_allocated_port,
    decode_streamlocal_forward,
    decode_tcpip_forward,
    encode_allocated_port,
    encode_streamlocal_forward,
    encode_tcpip_forward,
)
from hashike.proto.wire import encode_string, encode_uint32


def test_round_trip() -> None:
    assert decode_tcpip_forward(encode_tcpip_forward("localhost", 40001)) == ("localhost", 40001)
    assert decode_tcpip_forward(encode_tcpip_forward("", 0)) == ("", 0)
    assert decode_allocated_port(encode_allocated_port(41873)) == 41873


def test_out_of_range_port_is_refused_not_fatal() -> None:
    assert decode_tcpip_forward(encode_string("localhost") + encode_uint32(65536)) is None
    with pytest.raises(ValueError, match="between 0 and 65535"):
        encode_tcpip_forward("localhost", 65536)


@pytest.mark.parametrize(
    "extra",
    [
        b"",
        encode_string("localhost"),
        encode_string("localhost") + encode_uint32(1) + b"x",
        encode_string("local\x00host") + encode_uint32(1),
        encode_string(b"\xff") + encode_uint32(1),
        encode_string("h" * 1025) + encode_uint32(1),
    ],
)
def test_malformed_requests_are_decode_errors(extra: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_tcpip_forward(extra)


@pytest.mark.parametrize(
    "extra", [b"", b"\x00\x00", encode_uint32(0), encode_uint32(65536), encode_uint32(1) + b"x"]
)
def test_a_reply_without_a_usable_port(extra: bytes) -> None:
    assert decode_allocated_port(extra) is None


def test_streamlocal_round_trip() -> None:
    assert decode_streamlocal_forward(encode_streamlocal_forward("/run/pop.sock")) == "/run/pop.sock"


@pytest.mark.parametrize(
    "extra",
    [
        b"",
        encode_string(""),
        encode_string("/a\x00b"),
        encode_string(b"\xff"),
        encode_string("/x") + b"x",
        encode_string("/" * 4097),
    ],
    ids=["empty", "empty-path", "nul", "not-utf8", "trailing", "too-long"],
)
def test_malformed_streamlocal_requests_are_decode_errors(extra: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_streamlocal_forward(extra)
