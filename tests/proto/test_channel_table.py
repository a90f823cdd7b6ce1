"""The channel-state table (``PEER_MAY_SEND``) walked pair by pair: for each
of our channel states and each message that names a channel (RFC 4254
§5), a well-formed message is handled when the table lists it and ends the
connection (RemoteProtocolError) when it does not; random bytes after any
connection-protocol message number end in RemoteProtocolError or nothing,
never in another exception."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashike.proto.channels import CHANNEL_MESSAGES, PEER_MAY_SEND, Channels, ChannelState
from hashike.proto.constants import MsgType
from hashike.proto.errors import RemoteProtocolError
from hashike.proto.events import UnimplementedReceived
from hashike.proto.wire import encode_bool, encode_byte, encode_string, encode_uint32
from tests.proto.authkit import logged_in

PEER_ID = 5


def _feed(ch: Channels, payload: bytes) -> None:
    ch.handle(payload[0], memoryview(payload))


def _msg(msg: MsgType, body: bytes) -> bytes:
    return encode_byte(msg) + body


def _confirmation(cid: int) -> bytes:
    return _msg(
        MsgType.CHANNEL_OPEN_CONFIRMATION,
        encode_uint32(cid) + encode_uint32(PEER_ID) + encode_uint32(1 << 20) + encode_uint32(32768),
    )


def _opening(ch: Channels) -> int:
    return ch.open("session")


def _pending(ch: Channels) -> int:
    """The peer's open, not answered yet."""
    _feed(
        ch,
        _msg(
            MsgType.CHANNEL_OPEN,
            encode_string("session") + encode_uint32(PEER_ID) + encode_uint32(1 << 20) + encode_uint32(32768),
        ),
    )
    return 0


def _open(ch: Channels) -> int:
    cid = ch.open("session")
    _feed(ch, _confirmation(cid))
    ch.send_request(cid, "exec", True)  # so that a SUCCESS/FAILURE has a request to answer
    return cid


def _closing(ch: Channels) -> int:
    cid = _open(ch)
    ch.close(cid)
    return cid


SETUP: dict[ChannelState, Callable[[Channels], int]] = {
    ChannelState.OPENING: _opening,
    ChannelState.PENDING: _pending,
    ChannelState.OPEN: _open,
    ChannelState.CLOSING: _closing,
}

# One well-formed message of each type that names channel ``cid``.
MESSAGES: dict[MsgType, Callable[[int], bytes]] = {
    MsgType.CHANNEL_OPEN_CONFIRMATION: _confirmation,
    MsgType.CHANNEL_OPEN_FAILURE: lambda cid: _msg(
        MsgType.CHANNEL_OPEN_FAILURE,
        encode_uint32(cid) + encode_uint32(2) + encode_string("no") + encode_string(""),
    ),
    MsgType.CHANNEL_WINDOW_ADJUST: lambda cid: _msg(
        MsgType.CHANNEL_WINDOW_ADJUST, encode_uint32(cid) + encode_uint32(10)
    ),
    MsgType.CHANNEL_DATA: lambda cid: _msg(MsgType.CHANNEL_DATA, encode_uint32(cid) + encode_string(b"abc")),
    MsgType.CHANNEL_EXTENDED_DATA: lambda cid: _msg(
        MsgType.CHANNEL_EXTENDED_DATA, encode_uint32(cid) + encode_uint32(1) + encode_string(b"abc")
    ),
    MsgType.CHANNEL_EOF: lambda cid: _msg(MsgType.CHANNEL_EOF, encode_uint32(cid)),
    MsgType.CHANNEL_CLOSE: lambda cid: _msg(MsgType.CHANNEL_CLOSE, encode_uint32(cid)),
    MsgType.CHANNEL_REQUEST: lambda cid: _msg(
        MsgType.CHANNEL_REQUEST, encode_uint32(cid) + encode_string("env") + encode_bool(False)
    ),
    MsgType.CHANNEL_SUCCESS: lambda cid: _msg(MsgType.CHANNEL_SUCCESS, encode_uint32(cid)),
    MsgType.CHANNEL_FAILURE: lambda cid: _msg(MsgType.CHANNEL_FAILURE, encode_uint32(cid)),
}


def _channels() -> Channels:
    return Channels(lambda head, data: None, [])


def test_the_table_covers_every_state_and_only_channel_messages() -> None:
    assert set(PEER_MAY_SEND) == set(ChannelState)
    assert set().union(*PEER_MAY_SEND.values()) == set(MESSAGES)


@pytest.mark.parametrize("state", list(ChannelState))
@pytest.mark.parametrize("msg", list(MESSAGES))
def test_each_state_and_message_pair(state: ChannelState, msg: MsgType) -> None:
    ch = _channels()
    cid = SETUP[state](ch)
    assert ch.channel(cid).state is state
    payload = MESSAGES[msg](cid)
    if msg in PEER_MAY_SEND[state]:
        _feed(ch, payload)  # handled: no error
    else:
        with pytest.raises(RemoteProtocolError, match=f"{msg.name} for"):
            _feed(ch, payload)


@settings(max_examples=400, deadline=None)
@given(
    state=st.sampled_from(list(ChannelState)),
    msg=st.sampled_from(sorted(CHANNEL_MESSAGES)),
    body=st.binary(max_size=64),
    cid=st.sampled_from([0, 1, 0xFFFFFFFF]),
)
def test_random_messages_in_every_state_end_only_in_remote_protocol_errors(
    state: ChannelState, msg: int, body: bytes, cid: int
) -> None:
    ch = _channels()
    SETUP[state](ch)
    payload = encode_byte(msg) + encode_uint32(cid) + body
    with contextlib.suppress(RemoteProtocolError):
        _feed(ch, payload)


@pytest.mark.parametrize("msg", [n for n in range(80, 128) if n not in CHANNEL_MESSAGES])
def test_unassigned_connection_messages_are_answered_unimplemented(msg: int) -> None:
    """RFC 4250 §4.1.2 leaves 83-89 and 101-127 unassigned; RFC 4253 §11.4:
    an unrecognised message gets UNIMPLEMENTED, and the connection goes on."""
    pair = logged_in()
    pair.server.transport.send(encode_byte(msg) + b"anything")
    pair.pump()
    assert not pair.client.closed and not pair.server.closed
    assert [type(e) for e in pair.server_events] == [UnimplementedReceived]
