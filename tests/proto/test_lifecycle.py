"""The core owns its lifecycle: once the connection is closed, every answer
and housekeeping command is a no-op, and only a new request still raises
(the runtime needs no "is it still open?" guards). The same holds for a
channel that has closed while its id is not reused."""

from __future__ import annotations

import pytest

from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import DisconnectReason, MsgType, OpenFailureReason
from hashike.proto.errors import LocalProtocolError
from hashike.proto.events import (
    ChannelClosed,
    ChannelOpenRequested,
    ChannelRequestReceived,
    Disconnected,
    GlobalRequestReceived,
)
from hashike.proto.transport import State
from hashike.proto.wire import encode_bool, encode_byte, encode_string, encode_uint32
from tests.proto.authkit import auth_pair, logged_in
from tests.proto.pair import ConnectionPair, events_of


def open_channel(pair: ConnectionPair) -> tuple[int, int]:
    """A direct-tcpip channel the client opened and the server accepted:
    (client id, server id)."""
    cid = pair.client.channels.open_direct_tcpip("127.0.0.1", 80, "127.0.0.1", 4000)
    pair.pump()
    (opened,) = events_of(pair.server_events, ChannelOpenRequested)
    pair.server.channels.accept_open(opened.channel_id)
    pair.pump()
    pair.client_events.clear()
    pair.server_events.clear()
    return cid, opened.channel_id


def answer_everything(conn: ClientConnection | ServerConnection, channel_id: int) -> None:
    """Every answer and housekeeping command the runtime may give."""
    ch = conn.channels
    ch.accept_open(channel_id)
    ch.reject_open(channel_id, OpenFailureReason.CONNECT_FAILED, "no")
    assert ch.send_data(channel_id, b"data") == 0
    assert ch.window_available(channel_id) == 0
    ch.send_eof(channel_id)
    ch.acknowledge(channel_id, 1)
    ch.send_request(channel_id, "exit-status", False, encode_uint32(0))
    ch.reply_request(channel_id, True)
    ch.reply_global_request(True)
    ch.close(channel_id)
    conn.close("again")
    conn.start_rekey()
    conn.handle_timer(1e9)
    conn.receive_data(b"SSH-2.0-late\r\n")
    conn.receive_eof()


@pytest.mark.parametrize("who", ["us", "peer"])
def test_every_answer_is_a_no_op_once_closed(who: str) -> None:
    pair = logged_in()
    cid, _sid = open_channel(pair)
    if who == "us":
        pair.client.close("bye")
    else:
        pair.server.close("bye")
        pair.pump()
    assert pair.client.closed
    (disconnected,) = events_of(pair.client.events_received() + pair.client_events, Disconnected)
    assert disconnected.by_peer is (who == "peer")
    pair.client.data_to_send()  # whatever the DISCONNECT was
    answer_everything(pair.client, cid)
    assert pair.client.data_to_send() == b""
    assert pair.client.events_received() == []
    pair.client.accept_host_key()
    pair.client.reject_host_key()
    pair.client.answer_prompts([])
    assert pair.client.data_to_send() == b""


def test_a_protocol_error_ends_in_the_error_state() -> None:
    """errors.py's promise: the peer broke the protocol -> DISCONNECT, ERROR."""
    pair = logged_in()
    pair.server.transport.send(encode_byte(MsgType.CHANNEL_EOF) + encode_uint32(99))  # no channel 99
    pair.pump()
    assert pair.client.state is State.ERROR and pair.client.closed
    (ours,) = events_of(pair.client_events, Disconnected)
    assert (ours.reason, ours.by_peer) == (DisconnectReason.PROTOCOL_ERROR, False)
    assert pair.server.state is State.CLOSED  # it received our DISCONNECT
    answer_everything(pair.client, 0)
    assert pair.client.data_to_send() == b""


def test_an_orderly_close_ends_in_the_closed_state() -> None:
    pair = logged_in()
    pair.client.close()
    pair.pump()
    assert pair.client.state is State.CLOSED and pair.server.state is State.CLOSED


def test_new_requests_still_raise_once_closed() -> None:
    """Nothing could ever answer them: the caller must hear it."""
    pair = logged_in()
    pair.client.close()
    with pytest.raises(LocalProtocolError, match="closed"):
        pair.client.channels.open_direct_tcpip("127.0.0.1", 80, "127.0.0.1", 4000)
    with pytest.raises(LocalProtocolError, match="closed"):
        pair.client.channels.global_request("keepalive@openssh.com", True)
    with pytest.raises(LocalProtocolError, match="closed"):
        pair.client.auth_none("alice")


def test_server_decisions_are_no_ops_once_closed() -> None:
    pair = auth_pair(auth_methods=("password",))
    pair.client.auth_password("alice", "pw")  # never answered: the server's runtime decides late
    pair.pump()
    pair.client.close()
    pair.pump()
    assert pair.server.closed
    pair.server.accept_auth()
    pair.server.reject_auth()
    assert pair.server.data_to_send() == b""
    assert not pair.server.authenticated


def _peer_batch(pair: ConnectionPair, *payloads: bytes) -> None:
    """The server core sends ``payloads`` to the client in one batch."""
    for payload in payloads:
        pair.server.transport.send(payload)
    pair.client.receive_data(pair.server.data_to_send())


def test_a_batch_ending_in_disconnect_can_be_answered_without_guards() -> None:
    """The peer's open, channel request and global request arrive in the
    same batch as its DISCONNECT: answering each is a no-op, not an error."""
    pair = logged_in()
    cid, _sid = open_channel(pair)
    request = (
        encode_byte(MsgType.CHANNEL_REQUEST)
        + encode_uint32(cid)
        + encode_string("exit-status")
        + encode_bool(True)
    )
    request += encode_uint32(0)
    peer_open = (
        encode_byte(MsgType.CHANNEL_OPEN)
        + encode_string("forwarded-tcpip")
        + encode_uint32(7)
        + encode_uint32(1 << 20)
        + encode_uint32(32768)
        + encode_string("127.0.0.1")
        + encode_uint32(1)
        + encode_string("127.0.0.1")
        + encode_uint32(2)
    )
    global_request = encode_byte(MsgType.GLOBAL_REQUEST) + encode_string("x@test.example") + encode_bool(True)
    disconnect = (
        encode_byte(MsgType.DISCONNECT) + encode_uint32(11) + encode_string("bye") + encode_string("")
    )
    _peer_batch(pair, request, peer_open, global_request, disconnect)
    events = pair.client.events_received()
    assert isinstance(events[-1], Disconnected)
    (opened,) = events_of(events, ChannelOpenRequested)
    (requested,) = events_of(events, ChannelRequestReceived)
    (global_req,) = events_of(events, GlobalRequestReceived)
    pair.client.channels.reject_open(opened.channel_id, OpenFailureReason.ADMINISTRATIVELY_PROHIBITED, "no")
    pair.client.channels.accept_open(opened.channel_id)
    pair.client.channels.reply_request(requested.channel_id, False)
    pair.client.channels.reply_global_request(False, request_id=global_req.request_id)
    assert pair.client.data_to_send() == b""


def test_a_channel_closed_earlier_in_the_batch_takes_answers_as_no_ops() -> None:
    pair = logged_in()
    cid, sid = open_channel(pair)
    pair.client.channels.send_data(cid, b"x" * 10)
    pair.pump()
    pair.server_events.clear()
    # The client's request and CLOSE arrive together; the server's runtime
    # answers the request after the core has already freed the channel.
    pair.client.channels.send_request(cid, "x@test.example", True)
    pair.client.channels.close(cid)
    pair.server.receive_data(pair.client.data_to_send())
    events = pair.server.events_received()
    assert [type(e) for e in events] == [ChannelRequestReceived, ChannelClosed]
    sent_before = pair.server.data_to_send()
    pair.server.channels.reply_request(sid, False)
    pair.server.channels.acknowledge(sid, 10)
    assert pair.server.channels.send_data(sid, b"late") == 0
    pair.server.channels.close(sid)
    assert pair.server.data_to_send() == b""
    assert sent_before  # the server's own CLOSE went out
    # An id that was never ours is the runtime's bug, not a late answer.
    with pytest.raises(LocalProtocolError, match="no channel"):
        pair.server.channels.reply_request(sid + 1000, False)
