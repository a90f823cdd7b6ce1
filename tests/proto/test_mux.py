"""The mux codec (PROTOCOL.mux): every message round-trips, the bytes are
OpenSSH's, and what is malformed or oversized is refused."""

from __future__ import annotations

import pytest

from hashike.proto import mux
from hashike.proto.errors import DecodeError
from hashike.proto.wire import encode_string, encode_uint32

MESSAGES: list[mux.MuxMessage] = [
    mux.Hello(),
    mux.Hello(version=3, extensions=(("x@example.org", b"v"),)),
    mux.AliveCheck(request_id=1),
    mux.Terminate(request_id=2),
    mux.StopListening(request_id=3),
    mux.ForwardRequest(
        request_id=4, kind=mux.ForwardKind.LOCAL, listen_host="", listen_port=4000,
        connect_host="wisdom", connect_port=110,
    ),
    mux.ForwardRequest(
        request_id=5, cancel=True, kind=mux.ForwardKind.REMOTE, listen_host="/tmp/s",
        listen_port=mux.SOCKET_PORT, connect_host="", connect_port=0,
    ),
    mux.NewSession(
        request_id=6, want_tty=True, want_x11=False, want_agent=True, subsystem=False,
        escape_char=ord("~"), term="xterm", command="echo hi", env=("LANG=C",),
    ),
    mux.NewSession(
        request_id=7, want_tty=False, want_x11=False, want_agent=False, subsystem=True,
        escape_char=None, term="", command="sftp",
    ),
    mux.NewStdioForward(request_id=8, host="wisdom", port=110),
    mux.Ok(request_id=9),
    mux.PermissionDenied(request_id=10, reason="Permission denied"),
    mux.Failure(request_id=11, reason="not supported"),
    mux.ExitMessage(session_id=1, status=3),
    mux.AliveReply(request_id=12, pid=4242),
    mux.SessionOpened(request_id=13, session_id=2),
    mux.RemotePort(request_id=14, port=40001),
    mux.TtyAllocFail(session_id=2),
    mux.StatusRequest(request_id=9),
    mux.StatusReply(request_id=9, document='{"schema": 1, "forwards": []}'),
]  # fmt: skip


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: mux.MuxMessage) -> None:
    frame = mux.encode(message)
    decoder = mux.MuxDecoder()
    for i in range(len(frame)):  # byte by byte: nothing until the frame is whole
        decoder.feed(frame[i : i + 1])
        got = decoder.next()
        assert (got is None) == (i < len(frame) - 1)
    assert got == message
    assert decoder.pending == 0 and decoder.next() is None


def test_openssh_bytes() -> None:
    """ssh's hello, and the check it sends for -O check (mux.c)."""
    assert mux.encode(mux.Hello()) == bytes.fromhex("00000008 00000001 00000004")
    assert mux.encode(mux.AliveCheck(request_id=0)) == bytes.fromhex("00000008 10000004 00000000")
    # A new session's flags are uint32s and its escape "none" is 0xffffffff.
    frame = mux.encode(MESSAGES[8])
    assert frame[12:16] == b"\x00\x00\x00\x00" and frame[28:36] == bytes.fromhex("00000001 ffffffff")


def test_two_frames_in_one_read() -> None:
    decoder = mux.MuxDecoder()
    decoder.feed(mux.encode(MESSAGES[2]) + mux.encode(MESSAGES[3]))
    assert [decoder.next(), decoder.next(), decoder.next()] == [MESSAGES[2], MESSAGES[3], None]


@pytest.mark.parametrize("length", [0, 3, mux.MAX_FRAME + 1, 0xFFFFFFFF])
def test_frame_length_bounded(length: int) -> None:
    decoder = mux.MuxDecoder()
    decoder.feed(encode_uint32(length))
    with pytest.raises(DecodeError, match="frame of"):
        decoder.next()


def _payload(kind: int, *parts: bytes) -> bytes:
    return encode_uint32(kind) + b"".join(parts)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (_payload(mux.MuxType.OK, encode_uint32(1), b"x"), "unexpected bytes"),
        (_payload(mux.MuxType.OK), "truncated"),
        (_payload(mux.MuxType.OPEN_FWD, encode_uint32(1), encode_uint32(9)), "forwarding type 9"),
        (
            _payload(
                mux.MuxType.OPEN_FWD, encode_uint32(1), encode_uint32(1), encode_string(""),
                encode_uint32(70000), encode_string("h"), encode_uint32(1),
            ),
            "port 70000",
        ),
        (_payload(mux.MuxType.FAILURE, encode_uint32(1), encode_string(b"\xff")), "UTF-8"),
        (_payload(mux.MuxType.FAILURE, encode_uint32(1), encode_uint32(mux.MAX_FIELD + 1)), "exceeds"),
        (_payload(mux.MuxType.HELLO, encode_uint32(4), *[encode_string("a") * 2] * 65), "many"),
    ],
)  # fmt: skip
def test_malformed(payload: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        mux.decode(payload)


def test_environment_bounded() -> None:
    head = mux.encode(MESSAGES[8])[8:]
    env = encode_string("A=1") * (mux.MAX_ENV + 1)
    with pytest.raises(DecodeError, match="environment"):
        mux.decode(encode_uint32(mux.MuxType.NEW_SESSION) + head + env)


def test_unknown_type_keeps_its_request_id() -> None:
    """A master answers an unknown request (MUX_C_PROXY here) with a failure
    naming its id, and the stream goes on: the frame was consumed."""
    decoder = mux.MuxDecoder()
    decoder.feed(encode_string(_payload(0x1000000F, encode_uint32(7))) + mux.encode(MESSAGES[2]))
    with pytest.raises(mux.UnknownMuxType) as caught:
        decoder.next()
    assert (caught.value.kind, caught.value.request_id) == (0x1000000F, 7)
    assert decoder.next() == MESSAGES[2]
    with pytest.raises(mux.UnknownMuxType) as caught:
        mux.decode(encode_uint32(0x7))
    assert caught.value.request_id is None


def test_descriptor_bytes_taken_raw() -> None:
    """After a new session, one byte per passed descriptor, then frames again."""
    decoder = mux.MuxDecoder()
    decoder.feed(mux.encode(MESSAGES[7]) + b"\0\0")
    assert decoder.next() == MESSAGES[7]
    assert decoder.take(3) is None
    decoder.feed(b"\0" + mux.encode(MESSAGES[2]))
    assert decoder.take(3) == b"\0\0\0"
    assert decoder.next() == MESSAGES[2]
