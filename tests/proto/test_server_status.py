"""The status socket codec (proto/server_status.py): round trips, limits,
and malformed frames refused with DecodeError."""

from __future__ import annotations

import pytest

from hashike.proto import server_status as ss
from hashike.proto.errors import DecodeError
from hashike.proto.wire import encode_byte, encode_string, encode_uint32

MESSAGES: list[ss.StatusMessage] = [
    ss.StatusRequest(),
    ss.StatusRequest(7),
    ss.StatusReply('{"schema":1,"connections":[]}'),
    ss.StatusReply("é" * 10),
    ss.Failure("not allowed"),
    ss.Failure(""),
]


@pytest.mark.parametrize("message", MESSAGES)
def test_round_trip_in_pieces(message: ss.StatusMessage) -> None:
    frame = ss.encode(message)
    decoder = ss.StatusDecoder()
    for i in range(len(frame) - 1):
        decoder.feed(frame[i : i + 1])
        assert decoder.next() is None
    decoder.feed(frame[-1:])
    assert decoder.next() == message
    assert decoder.pending == 0


def test_two_frames_in_one_read() -> None:
    decoder = ss.StatusDecoder()
    decoder.feed(ss.encode(MESSAGES[0]) + ss.encode(MESSAGES[2]))
    assert [decoder.next(), decoder.next(), decoder.next()] == [MESSAGES[0], MESSAGES[2], None]


def test_largest_document_round_trips_and_one_more_byte_is_refused() -> None:
    largest = ss.StatusReply("x" * ss.MAX_DOCUMENT)
    assert ss.decode(ss.encode(largest)[4:]) == largest
    with pytest.raises(ValueError, match="more than"):
        ss.encode(ss.StatusReply("x" * (ss.MAX_DOCUMENT + 1)))


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no type
        encode_byte(9),  # unknown type
        encode_byte(1),  # a request without its version
        encode_byte(1) + encode_uint32(1) + b"!",  # trailing byte
        encode_byte(2) + encode_uint32(10) + b"abc",  # truncated string
        encode_byte(2) + encode_string(b"\xff\xfe"),  # not UTF-8
        encode_byte(3) + encode_string(b"r" * (ss.MAX_REASON + 1)),  # reason too long
        encode_byte(2) + encode_uint32(ss.MAX_DOCUMENT + 1),  # document length beyond the limit
    ],
)
def test_malformed_messages_are_refused(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        ss.decode(payload)


@pytest.mark.parametrize("length", [0, ss.MAX_FRAME + 1, 0xFFFFFFFF])
def test_a_bad_frame_length_is_refused_from_the_length_alone(length: int) -> None:
    decoder = ss.StatusDecoder()
    with pytest.raises(DecodeError, match="frame of"):
        decoder.feed(encode_uint32(length))


def test_a_small_limit_refuses_a_reply_sized_frame() -> None:
    decoder = ss.StatusDecoder(limit=64)
    with pytest.raises(DecodeError):
        decoder.feed(ss.encode(ss.StatusReply("x" * 100))[:4])
