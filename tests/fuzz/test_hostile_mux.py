"""Hostile control-socket input: whatever bytes a peer sends, in whatever
pieces, the mux decoder yields messages or raises DecodeError, never another
exception, and never holds more than one frame."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from hashike.proto import mux
from hashike.proto.errors import DecodeError
from tests.fuzz.test_hostile_input import FAST, mutated
from tests.proto.test_mux import MESSAGES

SEEDS = [mux.encode(m) for m in MESSAGES]


def _drain(data: bytes, cuts: list[int]) -> list[mux.MuxMessage]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    decoder, found = mux.MuxDecoder(), list[mux.MuxMessage]()
    for a, b in itertools.pairwise(points):
        decoder.feed(data[a:b])
        while True:
            try:
                message = decoder.next()
            except mux.UnknownMuxType:
                continue  # consumed: a master replies and goes on
            except DecodeError:
                return found
            if message is None:
                break
            found.append(message)
        assert decoder.pending <= 4 + mux.MAX_FRAME
    return found


@FAST
@given(st.binary(max_size=4096), st.lists(st.integers(min_value=0), max_size=20))
def test_random_bytes(data: bytes, cuts: list[int]) -> None:
    for message in _drain(data, cuts):
        assert mux.decode(mux.encode(message)[4:]) == message  # what parses, re-encodes


@FAST
@given(st.data())
def test_mutated_messages(data: st.DataObject) -> None:
    seeds = data.draw(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=4))
    stream = b"".join(data.draw(mutated(seed)) for seed in seeds)
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=10))
    for message in _drain(stream, cuts):
        assert mux.decode(mux.encode(message)[4:]) == message
