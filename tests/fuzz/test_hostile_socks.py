"""Hostile SOCKS input: whatever bytes a local program sends, in whatever
pieces, the codec ends in SocksError or a request, never another exception;
it never holds more than a handshake's worth of bytes, and what it asks to
send is only ever a protocol answer."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from hashike.proto.socks import MAX_HANDSHAKE, SocksError, SocksServer, State
from tests.fuzz.test_hostile_input import FAST, mutated
from tests.socks_client import socks4_request, socks5_greeting, socks5_request

SEEDS = [
    socks5_greeting() + socks5_request("127.0.0.1", 80),
    socks5_greeting(1, 2, 0) + socks5_request("::1", 80),
    socks5_greeting() + socks5_request("example.org", 443),
    socks4_request("127.0.0.1", 80, user=b"alice"),
    socks4_request("example.org", 80, by_name=True),
]


def _feed(pieces: list[bytes]) -> SocksServer:
    socks = SocksServer()
    for piece in pieces:
        try:
            socks.receive_data(piece)
        except SocksError:
            assert socks.state is State.FAILED
            break
        if socks.state is State.REQUESTED:
            break
    out = socks.data_to_send()
    # Only a method selection and/or a reply: bounded and well formed.
    assert len(out) <= 12
    assert out[:1] in (b"", b"\x05", b"\x00")
    return socks


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@FAST
@given(st.binary(max_size=2048), st.lists(st.integers(min_value=0), max_size=20))
def test_random_bytes(data: bytes, cuts: list[int]) -> None:
    socks = _feed(_pieces(data, cuts))
    if socks.state is State.REQUESTED:
        consumed = len(data) - len(socks.early_data)
        assert consumed <= MAX_HANDSHAKE
    elif socks.state is not State.FAILED:
        assert len(data) <= MAX_HANDSHAKE  # still waiting: only for a handshake's worth


@FAST
@given(st.data())
def test_mutated_handshakes(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(SEEDS))
    message = data.draw(mutated(seed))
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=10))
    socks = _feed(_pieces(message, cuts))
    if socks.state is State.REQUESTED:
        assert socks.request is not None and 0 <= socks.request.port <= 65535


@FAST
@given(st.sampled_from(SEEDS), st.integers(min_value=0, max_value=300))
def test_truncated_handshakes_wait(seed: bytes, cut: int) -> None:
    """Any strict prefix of a valid handshake is a handshake still to come."""
    prefix = seed[: min(cut, len(seed) - 1)]
    socks = _feed([prefix[i : i + 1] for i in range(len(prefix))])
    assert socks.state not in (State.FAILED, State.REQUESTED)


@FAST
@given(
    st.sampled_from([b"\x04\x01\x00\x50\x7f\x00\x00\x01", b"\x04\x01\x00\x50\x00\x00\x00\x01\x00"]),
    st.integers(1, 8),
)
def test_endless_names_are_cut_off(head: bytes, pieces: int) -> None:
    """A NUL that never comes: refused once the name passes its bound."""
    socks = SocksServer()
    body = head + b"x" * (MAX_HANDSHAKE + 1)
    size = len(body) // pieces + 1
    try:
        for i in range(0, len(body), size):
            socks.receive_data(body[i : i + size])
    except SocksError:
        pass
    assert socks.state is State.FAILED
    assert socks.data_to_send() == b"\x00\x5b" + bytes(6)
