"""Hostile status-socket input: whatever bytes a peer sends, in whatever
pieces, the decoder yields messages or raises DecodeError, never another
exception, and never holds more than one frame and one read."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from hashike.proto import server_status as ss
from hashike.proto.errors import DecodeError
from tests.fuzz.test_hostile_input import FAST, mutated
from tests.proto.test_server_status import MESSAGES

SEEDS = [ss.encode(m) for m in MESSAGES]
LIMIT = 4096  # a small decoder, as the server's for requests


def _drain(data: bytes, cuts: list[int], limit: int) -> list[ss.StatusMessage]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    decoder, found = ss.StatusDecoder(limit), list[ss.StatusMessage]()
    for a, b in itertools.pairwise(points):
        try:
            decoder.feed(data[a:b])
            while (message := decoder.next()) is not None:
                found.append(message)
        except DecodeError:
            return found
        assert decoder.pending <= 4 + limit + (b - a)
    return found


@FAST
@given(
    st.binary(max_size=4096),
    st.lists(st.integers(min_value=0), max_size=20),
    st.sampled_from([LIMIT, ss.MAX_FRAME]),
)
def test_random_bytes(data: bytes, cuts: list[int], limit: int) -> None:
    for message in _drain(data, cuts, limit):
        assert ss.decode(ss.encode(message)[4:]) == message  # what parses, re-encodes


@FAST
@given(st.data())
def test_mutated_messages(data: st.DataObject) -> None:
    seeds = data.draw(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=4))
    stream = b"".join(data.draw(mutated(seed)) for seed in seeds)
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=10))
    for message in _drain(stream, cuts, ss.MAX_FRAME):
        assert ss.decode(ss.encode(message)[4:]) == message
