"""The SOCKS codec: every message of each protocol, fed whole and byte by
byte, the refusals it answers with, and the reply encoders."""

from __future__ import annotations

import pytest

from hashike.proto.constants import OpenFailureReason
from hashike.proto.socks import (
    MAX_NAME,
    Reply,
    SocksError,
    SocksRequest,
    SocksServer,
    State,
    encode_socks4_reply,
    encode_socks5_reply,
    reply_for_open_failure,
)
from tests.socks_client import socks4_request, socks5_greeting, socks5_request

HANDSHAKES = [
    (socks5_greeting() + socks5_request("192.0.2.7", 443), SocksRequest(5, "192.0.2.7", 443, False)),
    (socks5_greeting(2, 0) + socks5_request("2001:db8::1", 22), SocksRequest(5, "2001:db8::1", 22, False)),
    (socks5_greeting() + socks5_request("example.org", 80), SocksRequest(5, "example.org", 80, True)),
    (socks4_request("192.0.2.7", 110, user=b"alice"), SocksRequest(4, "192.0.2.7", 110, False)),
    (socks4_request("example.org", 110, by_name=True), SocksRequest(4, "example.org", 110, True)),
]


@pytest.mark.parametrize(("data", "request_"), HANDSHAKES)
@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_handshakes_in_pieces(data: bytes, request_: SocksRequest, piece: int) -> None:
    socks = SocksServer()
    out = b""
    for i in range(0, len(data), piece):
        socks.receive_data(data[i : i + piece])
        out += socks.data_to_send()
    assert socks.state is State.REQUESTED and socks.request == request_
    assert socks.early_data == b""
    # SOCKS5 says which method first; SOCKS4 has no such step.
    assert out == (b"\x05\x00" if request_.version == 5 else b"")
    socks.accept()
    granted = b"\x00\x5a" + bytes(6) if request_.version == 4 else b"\x05\x00\x00\x01" + bytes(6)
    assert socks.data_to_send() == granted
    assert socks.state.name == "DONE"  # (by name: mypy narrowed the state above)


def test_labels() -> None:
    assert [r.label for _, r in HANDSHAKES] == ["socks5", "socks5", "socks5", "socks4", "socks4a"]


def test_nothing_fed_is_nothing_done() -> None:
    socks = SocksServer()
    socks.receive_data(b"")
    assert socks.state is State.VERSION and socks.data_to_send() == b""


def test_early_data_is_kept() -> None:
    socks = SocksServer()
    socks.receive_data(socks4_request("127.0.0.1", 80) + b"GET / HTTP/1.0\r\n")
    assert socks.early_data == b"GET / HTTP/1.0\r\n"


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        (b"\x03", b""),
        (b"GET / HTTP/1.1\r\n", b""),
        (socks5_greeting(1, 2), b"\x05\xff"),
        (b"\x05\x00", b"\x05\xff"),  # no methods at all
        (socks5_greeting() + b"\x04\x01\x00\x01" + bytes(6), b"\x05\x00\x05\x01\x00\x01" + bytes(6)),
        (socks5_greeting() + socks5_request("h", 1, command=3), b"\x05\x00\x05\x07\x00\x01" + bytes(6)),
        (socks5_greeting() + b"\x05\x01\x00\x09\x00", b"\x05\x00\x05\x08\x00\x01" + bytes(6)),
        (socks5_greeting() + b"\x05\x01\x00\x03\x00\x00\x50", b"\x05\x00\x05\x01\x00\x01" + bytes(6)),
        (socks5_greeting() + b"\x05\x01\x00\x03\x03a\x00b\x00\x50", b"\x05\x00\x05\x01\x00\x01" + bytes(6)),
        (socks4_request("127.0.0.1", 80, command=2), b"\x00\x5b" + bytes(6)),
        (b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * (MAX_NAME + 1), b"\x00\x5b" + bytes(6)),
        (b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"h" * (MAX_NAME + 1), b"\x00\x5b" + bytes(6)),
        (b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00", b"\x00\x5b" + bytes(6)),  # SOCKS4A, empty name
    ],
    ids=[
        "version-3", "http", "no-acceptable-method", "zero-methods", "request-version", "udp-associate",
        "address-type", "empty-domain", "nul-in-domain", "socks4-bind", "socks4-userid-too-long",
        "socks4a-name-too-long", "socks4a-empty-name",
    ],
)  # fmt: skip
def test_refusals(data: bytes, refusal: bytes) -> None:
    socks = SocksServer()
    with pytest.raises(SocksError):
        socks.receive_data(data)
    assert socks.data_to_send() == refusal
    assert socks.state is State.FAILED
    with pytest.raises(SocksError, match=r"failed|no SOCKS handshake"):
        socks.receive_data(b"\x05")  # nothing more is read


def test_reject_codes_per_protocol() -> None:
    five, four = SocksServer(), SocksServer()
    five.receive_data(socks5_greeting() + socks5_request("10.0.0.1", 1))
    four.receive_data(socks4_request("10.0.0.1", 1))
    five.data_to_send()
    five.reject(Reply.CONNECTION_REFUSED)
    four.reject(Reply.CONNECTION_REFUSED)
    assert five.data_to_send() == b"\x05\x05\x00\x01" + bytes(6)
    assert four.data_to_send() == b"\x00\x5b" + bytes(6)


def test_answers_need_a_request() -> None:
    socks = SocksServer()
    with pytest.raises(SocksError):
        socks.accept()
    socks.receive_data(socks4_request("10.0.0.1", 1))
    socks.accept()
    with pytest.raises(SocksError):
        socks.reject(Reply.GENERAL_FAILURE)  # answered already
    with pytest.raises(SocksError):
        socks.receive_data(b"data")  # the connection's, not the handshake's


def test_encoders() -> None:
    assert encode_socks4_reply(True) == b"\x00\x5a\x00\x00\x00\x00\x00\x00"
    assert encode_socks4_reply(False) == b"\x00\x5b\x00\x00\x00\x00\x00\x00"
    assert encode_socks5_reply(Reply.HOST_UNREACHABLE) == b"\x05\x04\x00\x01\x00\x00\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("reason", "description", "reply"),
    [
        (OpenFailureReason.ADMINISTRATIVELY_PROHIBITED, "open failed", Reply.NOT_ALLOWED),
        (OpenFailureReason.CONNECT_FAILED, "Connection refused", Reply.CONNECTION_REFUSED),
        (OpenFailureReason.CONNECT_FAILED, "Network is unreachable", Reply.NETWORK_UNREACHABLE),
        (OpenFailureReason.CONNECT_FAILED, "No route to host", Reply.HOST_UNREACHABLE),
        (OpenFailureReason.CONNECT_FAILED, "Name or service not known", Reply.HOST_UNREACHABLE),
        (OpenFailureReason.RESOURCE_SHORTAGE, "", Reply.GENERAL_FAILURE),
        (OpenFailureReason.UNKNOWN_CHANNEL_TYPE, "", Reply.GENERAL_FAILURE),
    ],
)
def test_reply_for_open_failure(reason: int, description: str, reply: Reply) -> None:
    assert reply_for_open_failure(reason, description) is reply
