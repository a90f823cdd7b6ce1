"""The channel layer (RFC 4254 §4, §5, §7) on its own: two Channels tables
wired together in memory, and hand-built peer messages. No sockets."""

from __future__ import annotations

import array
import contextlib
import struct
from collections.abc import Iterable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashike.proto.channels import (
    KEEPALIVE,
    MAX_PENDING_GLOBAL_REQUESTS,
    MAX_PENDING_REQUESTS,
    Channels,
    ChannelState,
)
from hashike.proto.constants import MsgType, OpenFailureReason
from hashike.proto.errors import (
    ChannelOpenFailed,
    DecodeError,
    LocalProtocolError,
    RemoteProtocolError,
    SSHError,
)
from hashike.proto.events import (
    ChannelClosed,
    ChannelData,
    ChannelEofReceived,
    ChannelOpenConfirmed,
    ChannelOpenRefused,
    ChannelOpenRequested,
    ChannelRequestReceived,
    ChannelRequestReplied,
    ChannelWindowOpened,
    GlobalRequestReceived,
    GlobalRequestReplied,
)
from hashike.proto.wire import encode_bool, encode_byte, encode_string

_E = TypeVar("_E")


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def of(events: Iterable[object], kind: type[_E]) -> list[_E]:
    return [e for e in events if isinstance(e, kind)]


class Side:
    """One Channels table with its outbox (the (head, data) pairs it sent) and events."""

    def __init__(self, **kwargs: Any) -> None:
        self.sent: list[tuple[bytes, bytes | memoryview]] = []
        self.events: list[object] = []
        self.ch = Channels(lambda head, data: self.sent.append((head, data)), self.events, **kwargs)

    def take(self) -> list[object]:
        events, self.events[:] = list(self.events), []
        self.ch.recycle()  # as the connection does when the runtime takes events
        return events

    def feed(self, *payloads: bytes) -> None:
        """Hand-built peer messages, each starting with its message number."""
        for p in payloads:
            self.ch.handle(p[0], memoryview(p))


class Pair:
    def __init__(self, a: dict[str, int] | None = None, b: dict[str, int] | None = None) -> None:
        self.a = Side(**(a or {}))
        self.b = Side(**(b or {}))

    def pump(self) -> int:
        """Deliver everything sent, both ways, until quiet. Returns the number of messages moved."""
        moved = 0
        while self.a.sent or self.b.sent:
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                out, src.sent[:] = list(src.sent), []
                for head, data in out:
                    dst.feed(head + bytes(data))
                    moved += 1
        return moved

    def open(self, **kwargs: int) -> tuple[int, int]:
        """A opens a direct-tcpip channel, B accepts. Returns (A's id, B's id)."""
        aid = self.a.ch.open_direct_tcpip("localhost", 80, "127.0.0.1", 40000, **kwargs)
        self.pump()
        (req,) = of(self.b.take(), ChannelOpenRequested)
        self.b.ch.accept_open(req.channel_id)
        self.pump()
        assert of(self.a.take(), ChannelOpenConfirmed) == [ChannelOpenConfirmed(channel_id=aid)]
        return aid, req.channel_id


def received(side: Side, cid: int) -> bytes:
    return b"".join(e.data for e in of(side.take(), ChannelData) if e.channel_id == cid)


# ------------------------------------------------------------------ opening


def test_open_confirm_decodes_direct_tcpip() -> None:
    p = Pair()
    aid = p.a.ch.open_direct_tcpip("example.com", 443, "192.0.2.7", 51234)
    assert p.a.ch.channel(aid).state is ChannelState.OPENING
    assert p.a.ch.channel(aid).remote_id is None
    p.pump()
    (req,) = p.b.take()
    assert isinstance(req, ChannelOpenRequested)
    assert (req.kind, req.host, req.port, req.orig_host, req.orig_port) == (
        "direct-tcpip",
        "example.com",
        443,
        "192.0.2.7",
        51234,
    )
    assert req.window == 2 * 1024 * 1024 and req.max_packet == 32 * 1024
    assert req.socket_path is None
    assert p.b.ch.channel(req.channel_id).state is ChannelState.PENDING
    p.b.ch.accept_open(req.channel_id)
    p.pump()
    assert p.a.take() == [ChannelOpenConfirmed(channel_id=aid)]
    a_view, b_view = p.a.ch.channel(aid), p.b.ch.channel(req.channel_id)
    assert a_view.state is b_view.state is ChannelState.OPEN
    assert a_view.remote_id == req.channel_id and b_view.remote_id == aid
    assert a_view.remote_window == b_view.local_window
    assert len(p.a.ch) == len(p.b.ch) == 1


def test_forwarded_tcpip_and_streamlocal_decoding() -> None:
    p = Pair()
    p.a.ch.open_forwarded_tcpip("::", 8080, "2001:db8::1", 1)
    p.a.ch.open(
        "direct-streamlocal@openssh.com", encode_string("/run/app.sock") + encode_string(b"") + u32(0)
    )
    p.a.ch.open("forwarded-streamlocal@openssh.com", encode_string("/tmp/x") + encode_string(b""))
    p.a.ch.open("session")
    p.pump()
    fwd, direct_sl, fwd_sl, session = of(p.b.take(), ChannelOpenRequested)
    assert (fwd.kind, fwd.host, fwd.port, fwd.orig_host, fwd.orig_port) == (
        "forwarded-tcpip",
        "::",
        8080,
        "2001:db8::1",
        1,
    )
    assert direct_sl.socket_path == "/run/app.sock" and direct_sl.host is None
    assert fwd_sl.socket_path == "/tmp/x"
    assert session.kind == "session" and session.extra == b"" and session.host is None


@pytest.mark.parametrize(
    "reason",
    [
        OpenFailureReason.ADMINISTRATIVELY_PROHIBITED,
        OpenFailureReason.CONNECT_FAILED,
        OpenFailureReason.UNKNOWN_CHANNEL_TYPE,
        OpenFailureReason.RESOURCE_SHORTAGE,
    ],
)
def test_refuse_with_reason(reason: OpenFailureReason) -> None:
    p = Pair()
    aid = p.a.ch.open("x-unknown@example.com")
    p.pump()
    (req,) = of(p.b.take(), ChannelOpenRequested)
    p.b.ch.reject_open(req.channel_id, reason, "no, thanks ✓")
    assert len(p.b.ch) == 0
    p.pump()
    assert p.a.take() == [ChannelOpenRefused(channel_id=aid, reason=reason, description="no, thanks ✓")]
    assert len(p.a.ch) == 0
    assert p.a.ch.open("session") == aid  # the id is free again


def test_bad_port_in_open_is_refused_not_fatal() -> None:
    p = Pair()
    extra = encode_string("h") + u32(70000) + encode_string("o") + u32(1)
    aid = p.a.ch.open("direct-tcpip", extra)
    p.pump()
    assert p.b.take() == [] and len(p.b.ch) == 0
    (refused,) = p.a.take()
    assert refused == ChannelOpenRefused(
        channel_id=aid, reason=OpenFailureReason.CONNECT_FAILED, description="invalid port"
    )


def test_malformed_open_extra_is_a_protocol_error() -> None:
    b = Side()
    head = encode_byte(MsgType.CHANNEL_OPEN) + encode_string("direct-tcpip") + u32(0) + u32(100) + u32(100)
    with pytest.raises(DecodeError):
        b.feed(head + encode_string("h\x00st") + u32(1) + encode_string("o") + u32(1))
    with pytest.raises(DecodeError):
        b.feed(head + encode_string("host") + u32(1))  # truncated
    with pytest.raises(DecodeError):
        b.feed(head + encode_string("host") + u32(1) + encode_string("o") + u32(1) + b"x")  # trailing


def test_open_with_zero_max_packet_is_a_protocol_error() -> None:
    b = Side()
    with pytest.raises(RemoteProtocolError, match="maximum packet"):
        b.feed(encode_byte(MsgType.CHANNEL_OPEN) + encode_string("session") + u32(0) + u32(100) + u32(0))


def test_local_argument_checks() -> None:
    a = Side()
    with pytest.raises(ValueError):
        a.ch.open_direct_tcpip("h", 65536, "o", 1)
    with pytest.raises(ValueError):
        a.ch.open("session", window=2**32)
    with pytest.raises(ValueError):
        a.ch.open("session", max_packet=0)
    with pytest.raises(ValueError):
        Channels(lambda h, d: None, [], max_channels=0)
    assert a.sent == [] and len(a.ch) == 0


# --------------------------------------------------------------------- data


def test_data_both_ways() -> None:
    p = Pair()
    aid, bid = p.open()
    assert p.a.ch.send_data(aid, b"hello") == 5
    assert p.b.ch.send_data(bid, memoryview(b"world!")) == 6
    p.pump()
    assert p.b.take() == [ChannelData(channel_id=bid, data=b"hello", extended=None)]
    assert p.a.take() == [ChannelData(channel_id=aid, data=b"world!", extended=None)]
    assert p.a.ch.send_data(aid, b"err", extended=1) == 3
    assert p.a.ch.send_data(aid, b"") == 0
    p.pump()
    assert p.b.take() == [ChannelData(channel_id=bid, data=b"err", extended=1)]
    assert p.b.ch.channel(bid).local_window == 2 * 1024 * 1024 - 8
    assert p.a.ch.window_available(aid) == 2 * 1024 * 1024 - 8


def test_data_split_by_peer_max_packet_without_copies() -> None:
    p = Pair(b={"max_packet": 1000})
    aid, bid = p.open()
    data = bytes(range(256)) * 20  # 5120 bytes
    assert p.a.ch.send_data(aid, data) == len(data)
    sizes = []
    for head, chunk in p.a.sent:
        assert isinstance(chunk, memoryview) and chunk.obj is data  # a slice, not a copy
        assert head[0] == MsgType.CHANNEL_DATA and len(head) == 9
        sizes.append(len(chunk))
    assert sizes == [1000] * 5 + [120]
    p.pump()
    assert [len(e.data) for e in of(p.b.events, ChannelData)] == sizes
    assert received(p.b, bid) == data


def test_data_is_a_view_of_the_payload_and_any_buffer_is_sent() -> None:
    p = Pair()
    aid, bid = p.open()
    buf = bytearray(data_msg(bid, b"abc"))
    p.b.ch.handle(buf[0], memoryview(buf))
    buf[9:] = b"xyz"  # the event's data is the payload's own bytes, not a copy
    assert received(p.b, bid) == b"xyz"
    words = memoryview(array.array("I", [1, 2]))
    assert p.a.ch.send_data(aid, words) == 8
    p.pump()
    assert received(p.b, bid) == bytes(words)


def test_data_split_by_transport_packet_limit() -> None:
    p = Pair(a={"peer_max_packet": 4096})
    aid, _ = p.open()
    p.a.ch.send_data(aid, bytes(10000))
    sizes = [len(d) for _, d in p.a.sent]
    assert max(sizes) <= 4096 - 100 and sum(sizes) == 10000
    for head, d in p.a.sent:
        assert len(head) + len(d) + 4 + 1 + 19 + 64 <= 4096  # RFC 4253 §6.1 worst case


def test_window_exhaustion_and_batched_adjust() -> None:
    p = Pair(b={"window": 4096, "max_packet": 1024})
    aid, bid = p.open()
    assert p.a.ch.send_data(aid, bytes(5000)) == 4096
    assert p.a.ch.window_available(aid) == 0
    assert p.a.ch.send_data(aid, b"more") == 0
    assert p.pump() == 4
    assert len(received(p.b, bid)) == 4096
    # Acknowledging less than an eighth of the window sends nothing.
    p.b.ch.acknowledge(bid, 511)
    assert p.b.sent == []
    p.b.ch.acknowledge(bid, 1)
    assert len(p.b.sent) == 1 and p.b.sent[0][0][0] == MsgType.CHANNEL_WINDOW_ADJUST
    p.pump()
    assert p.a.take() == [ChannelWindowOpened(channel_id=aid, window=512)]
    assert p.b.ch.channel(bid).local_window == 512
    # A second adjust while the window is open emits no event.
    p.b.ch.acknowledge(bid, 3584)
    p.pump()
    assert p.a.take() == []
    assert p.a.ch.window_available(aid) == 4096


def test_acknowledge_more_than_received_is_a_local_error() -> None:
    p = Pair()
    aid, bid = p.open()
    p.a.ch.send_data(aid, b"abc")
    p.pump()
    with pytest.raises(LocalProtocolError):
        p.b.ch.acknowledge(bid, 4)
    p.b.ch.acknowledge(bid, 3)


def test_zero_window_at_open() -> None:
    p = Pair(b={"window": 0})
    aid, _ = p.open()
    assert p.a.ch.send_data(aid, b"x") == 0
    assert p.a.sent == []


def data_msg(cid: int, data: bytes) -> bytes:
    return encode_byte(MsgType.CHANNEL_DATA) + u32(cid) + encode_string(data)


def test_delivered_data_skips_the_event_only_while_no_event_waits() -> None:
    # Channels.deliver: CHANNEL_DATA goes to the sink instead of a ChannelData
    # event, in the wire's order: once an event is queued in the batch, data
    # after it is an event too, and extended data always is. The window is
    # counted either way.
    p = Pair()
    aid, bid = p.open()
    sunk: list[bytes] = []
    p.b.ch.deliver(bid, lambda data: sunk.append(bytes(data)))
    p.b.feed(data_msg(bid, b"one"), data_msg(bid, b"two"))
    assert sunk == [b"one", b"two"] and p.b.take() == []
    ext = encode_byte(MsgType.CHANNEL_EXTENDED_DATA) + u32(bid) + u32(1) + encode_string(b"err")
    p.b.feed(ext, data_msg(bid, b"three"))
    assert sunk == [b"one", b"two"]
    assert p.b.take() == [
        ChannelData(channel_id=bid, data=b"err", extended=1),
        ChannelData(channel_id=bid, data=b"three", extended=None),
    ]
    p.b.feed(data_msg(bid, b"four"))
    assert sunk[-1] == b"four"
    assert p.b.ch.channel(bid).local_window == 2 * 1024 * 1024 - len(b"onetwoerrthreefour")
    # On a channel that has closed, deliver is a no-op, like every command.
    p.a.ch.close(aid)
    p.pump()
    p.b.take()
    p.a.take()
    p.b.ch.deliver(bid, lambda data: sunk.append(bytes(data)))


def test_data_past_window_is_a_protocol_error() -> None:
    p = Pair(b={"window": 100, "max_packet": 100})
    _, bid = p.open()
    p.b.feed(data_msg(bid, bytes(60)))
    with pytest.raises(RemoteProtocolError, match="window"):
        p.b.feed(data_msg(bid, bytes(41)))


def test_oversized_packet_is_a_protocol_error() -> None:
    p = Pair(b={"max_packet": 100})
    _, bid = p.open()
    with pytest.raises(RemoteProtocolError, match="maximum"):
        p.b.feed(data_msg(bid, bytes(101)))
    ext = encode_byte(MsgType.CHANNEL_EXTENDED_DATA) + u32(bid) + u32(1) + encode_string(bytes(101))
    with pytest.raises(RemoteProtocolError, match="maximum"):
        p.b.feed(ext)


def test_data_length_mismatch_is_a_decode_error() -> None:
    p = Pair()
    _, bid = p.open()
    with pytest.raises(DecodeError):
        p.b.feed(data_msg(bid, b"abc") + b"x")
    with pytest.raises(DecodeError):
        p.b.feed(data_msg(bid, b"abc")[:-1])
    with pytest.raises(DecodeError):
        p.b.feed(encode_byte(MsgType.CHANNEL_DATA) + u32(bid))


def test_window_adjust_overflow_is_a_protocol_error() -> None:
    p = Pair()
    aid, _ = p.open()
    adjust = encode_byte(MsgType.CHANNEL_WINDOW_ADJUST) + u32(aid)
    p.a.feed(adjust + u32(2**32 - 1 - 2 * 1024 * 1024))  # exactly to the limit is fine
    assert p.a.ch.window_available(aid) == 2**32 - 1
    with pytest.raises(RemoteProtocolError, match="overflow"):
        p.a.feed(adjust + u32(1))


# ---------------------------------------------------------------- EOF, close


def test_adjusts_after_eof_are_fine() -> None:
    p = Pair(b={"window": 1000, "max_packet": 1000})
    aid, bid = p.open()
    p.a.ch.send_data(aid, bytes(1000))
    p.a.ch.send_eof(aid)
    p.pump()
    assert len(received(p.b, bid)) == 1000
    p.b.ch.acknowledge(bid, 1000)  # EOF received: no credit is sent
    assert p.b.sent == []
    # A peer that does adjust after our EOF is within the rules; no event.
    p.a.feed(encode_byte(MsgType.CHANNEL_WINDOW_ADJUST) + u32(aid) + u32(500))
    assert p.a.take() == []


def test_eof_a_then_b() -> None:
    p = Pair()
    aid, bid = p.open()
    p.a.ch.send_data(aid, b"request")
    p.a.ch.send_eof(aid)
    p.pump()
    assert p.b.take() == [
        ChannelData(channel_id=bid, data=b"request", extended=None),
        ChannelEofReceived(channel_id=bid),
    ]
    # Half-closed: B still sends, A still receives (RFC 4254 §5.3).
    assert p.b.ch.send_data(bid, b"response") == 8
    p.b.ch.send_eof(bid)
    p.pump()
    assert p.a.take() == [
        ChannelData(channel_id=aid, data=b"response", extended=None),
        ChannelEofReceived(channel_id=aid),
    ]
    assert len(p.a.ch) == len(p.b.ch) == 1
    view = p.a.ch.channel(aid)
    assert view.eof_sent and view.eof_received and not view.close_sent
    p.b.ch.close(bid)
    p.pump()
    assert p.a.take() == [ChannelClosed(channel_id=aid)]
    assert p.b.take() == [ChannelClosed(channel_id=bid)]
    assert len(p.a.ch) == len(p.b.ch) == 0


def test_eof_b_then_a_and_misuse_after_eof() -> None:
    p = Pair()
    aid, bid = p.open()
    p.b.ch.send_eof(bid)
    p.pump()
    assert p.a.take() == [ChannelEofReceived(channel_id=aid)]
    with pytest.raises(LocalProtocolError, match="EOF"):
        p.b.ch.send_data(bid, b"x")
    with pytest.raises(LocalProtocolError):
        p.b.ch.send_eof(bid)
    assert p.b.ch.window_available(bid) == 0
    p.a.ch.send_data(aid, b"late but legal")
    p.a.ch.send_eof(aid)
    p.pump()
    assert received(p.b, bid) == b"late but legal"
    # The peer sent EOF: more data or a second EOF breaks the protocol.
    with pytest.raises(RemoteProtocolError, match="after EOF"):
        p.b.feed(data_msg(bid, b"x"))
    with pytest.raises(RemoteProtocolError, match="second EOF"):
        p.b.feed(encode_byte(MsgType.CHANNEL_EOF) + u32(bid))


def test_close_both_at_once() -> None:
    p = Pair()
    aid, bid = p.open()
    p.a.ch.close(aid)
    p.b.ch.close(bid)
    p.a.ch.close(aid)  # a second close sends nothing
    assert len(p.a.sent) == len(p.b.sent) == 1
    p.pump()
    assert p.a.take() == [ChannelClosed(channel_id=aid)]
    assert p.b.take() == [ChannelClosed(channel_id=bid)]
    assert len(p.a.ch) == len(p.b.ch) == 0


def test_data_racing_our_close_is_dropped_but_window_checked() -> None:
    p = Pair(a={"window": 1000, "max_packet": 1000})
    aid, bid = p.open()
    p.b.ch.send_data(bid, bytes(600))
    p.b.ch.send_eof(bid)
    p.b.ch.send_request(bid, "exit-status", False, u32(0))
    p.a.ch.close(aid)
    assert p.a.ch.channel(aid).state is ChannelState.CLOSING
    with pytest.raises(LocalProtocolError):
        p.a.ch.send_data(aid, b"x")
    p.pump()
    assert p.a.take() == [ChannelClosed(channel_id=aid)]  # no data, no EOF, no request
    assert p.b.take() == [ChannelClosed(channel_id=bid)]

    aid, bid = p.open()
    p.a.ch.close(aid)
    with pytest.raises(RemoteProtocolError, match="window"):
        p.a.feed(data_msg(aid, bytes(1001)))


def test_peer_close_is_answered() -> None:
    p = Pair()
    aid, bid = p.open()
    p.a.ch.close(aid)
    p.pump()
    assert p.b.take() == [ChannelClosed(channel_id=bid)]
    assert p.a.take() == [ChannelClosed(channel_id=aid)]
    # After the peer's CLOSE nothing more may arrive for that id.
    for msg in (
        data_msg(bid, b"x"),
        encode_byte(MsgType.CHANNEL_EOF) + u32(bid),
        encode_byte(MsgType.CHANNEL_CLOSE) + u32(bid),
    ):
        with pytest.raises(RemoteProtocolError, match="unknown channel"):
            p.b.feed(msg)


def test_close_while_opening() -> None:
    p = Pair()
    aid = p.a.ch.open("session")
    p.a.ch.close(aid)
    assert len(p.a.sent) == 1  # only the OPEN so far
    p.pump()
    (req,) = of(p.b.take(), ChannelOpenRequested)
    p.b.ch.accept_open(req.channel_id)
    p.pump()
    assert p.a.take() == [ChannelClosed(channel_id=aid)]
    assert p.b.take() == [ChannelClosed(channel_id=req.channel_id)]

    aid = p.a.ch.open("session")
    p.a.ch.close(aid)
    p.pump()
    (req,) = of(p.b.take(), ChannelOpenRequested)
    p.b.ch.reject_open(req.channel_id, OpenFailureReason.CONNECT_FAILED, "")
    p.pump()
    assert of(p.a.take(), ChannelOpenRefused)[0].channel_id == aid
    assert len(p.a.ch) == len(p.b.ch) == 0


def test_close_of_a_pending_open_refuses_it() -> None:
    p = Pair()
    aid = p.a.ch.open("session")
    p.pump()
    (req,) = of(p.b.take(), ChannelOpenRequested)
    p.b.ch.close(req.channel_id)
    p.pump()
    (refused,) = p.a.take()
    assert isinstance(refused, ChannelOpenRefused) and refused.channel_id == aid
    assert refused.reason == OpenFailureReason.ADMINISTRATIVELY_PROHIBITED


# ---------------------------------------------------------------------- ids


def test_ids_reused_only_after_close_both_ways() -> None:
    p = Pair()
    a0, _ = p.open()
    a1, _ = p.open()
    assert (a0, a1) == (0, 1)
    p.a.ch.close(a0)
    assert p.a.ch.open("session") == 2  # CLOSE sent but not received: 0 is not free
    p.pump()
    p.a.take()
    p.b.take()
    assert p.a.ch.open("session") == 0  # lowest free


def test_many_channels_sequentially() -> None:
    p = Pair()
    seen: set[int] = set()
    for i in range(10000):
        aid, bid = p.open()
        seen.update((aid, bid))
        p.a.ch.send_data(aid, b"x")
        if i % 2:
            p.a.ch.close(aid)
        else:
            p.b.ch.close(bid)
        p.pump()
        p.a.take()
        p.b.take()
    assert len(p.a.ch) == len(p.b.ch) == 0
    assert seen == {0}


def test_many_channels_at_once_then_closed() -> None:
    p = Pair()
    ids = [p.a.ch.open("session") for _ in range(300)]
    p.pump()
    for req in of(p.b.take(), ChannelOpenRequested):
        p.b.ch.accept_open(req.channel_id)
    p.pump()
    assert len(of(p.a.take(), ChannelOpenConfirmed)) == 300
    for aid in ids:
        p.a.ch.close(aid)
    p.pump()
    assert len(of(p.a.take(), ChannelClosed)) == len(of(p.b.take(), ChannelClosed)) == 300
    assert len(p.a.ch) == len(p.b.ch) == 0
    assert p.a.ch.open("session") == 0


def test_max_channels_refuses_with_resource_shortage() -> None:
    p = Pair(b={"max_channels": 2})
    for _ in range(3):
        p.a.ch.open("session")
    p.pump()
    assert len(of(p.b.take(), ChannelOpenRequested)) == 2
    (refused,) = p.a.take()
    assert isinstance(refused, ChannelOpenRefused) and refused.channel_id == 2
    assert refused.reason == OpenFailureReason.RESOURCE_SHORTAGE
    assert len(p.b.ch) == 2 and len(p.a.ch) == 2

    a = Side(max_channels=1)
    a.ch.open("session")
    with pytest.raises(ChannelOpenFailed) as info:
        a.ch.open("session")
    assert info.value.reason == OpenFailureReason.RESOURCE_SHORTAGE


# ----------------------------------------------------------------- requests


def test_channel_requests_replied_in_order() -> None:
    p = Pair()
    aid, bid = p.open()
    p.a.ch.send_request(aid, "first", True)
    p.a.ch.send_request(aid, "quiet", False, b"\x01\x02")
    p.a.ch.send_request(aid, KEEPALIVE, True)
    p.a.ch.send_request(aid, "second", True, u32(7))
    p.pump()
    reqs = p.b.take()
    assert reqs == [
        ChannelRequestReceived(channel_id=bid, name="first", want_reply=True, extra=b""),
        ChannelRequestReceived(channel_id=bid, name="quiet", want_reply=False, extra=b"\x01\x02"),
        ChannelRequestReceived(channel_id=bid, name="second", want_reply=True, extra=u32(7)),
    ]
    # The keepalive's automatic FAILURE waits behind "first" (RFC 4254 §5.4 order).
    assert p.b.sent == []
    p.b.ch.reply_request(bid, True)
    assert len(p.b.sent) == 2
    p.b.ch.reply_request(bid, False)
    p.pump()
    assert p.a.take() == [
        ChannelRequestReplied(channel_id=aid, name="first", success=True),
        ChannelRequestReplied(channel_id=aid, name=KEEPALIVE, success=False),
        ChannelRequestReplied(channel_id=aid, name="second", success=False),
    ]
    with pytest.raises(LocalProtocolError):
        p.b.ch.reply_request(bid, True)


def test_keepalive_is_answered_automatically() -> None:
    p = Pair()
    aid, _ = p.open()
    p.a.ch.send_request(aid, KEEPALIVE, True)
    p.a.ch.send_request(aid, KEEPALIVE, False)
    p.a.ch.global_request(KEEPALIVE, True)
    p.a.ch.global_request(KEEPALIVE, False)
    p.pump()
    assert p.b.take() == []
    assert p.a.take() == [
        ChannelRequestReplied(channel_id=aid, name=KEEPALIVE, success=False),
        GlobalRequestReplied(name=KEEPALIVE, success=False, extra=b""),
    ]


def test_global_requests_replied_in_order_with_data() -> None:
    p = Pair()
    p.a.ch.global_request("tcpip-forward", True, encode_string("localhost") + u32(0))
    p.a.ch.global_request(KEEPALIVE, True)
    p.a.ch.global_request("no-more-sessions@openssh.com", False)
    p.a.ch.global_request("cancel-tcpip-forward", True, encode_string("localhost") + u32(1))
    p.pump()
    assert p.b.take() == [
        GlobalRequestReceived(
            name="tcpip-forward", want_reply=True, extra=encode_string("localhost") + u32(0), request_id=0
        ),
        GlobalRequestReceived(name="no-more-sessions@openssh.com", want_reply=False, extra=b""),
        GlobalRequestReceived(  # id 1 went to the keepalive, answered by the core
            name="cancel-tcpip-forward",
            want_reply=True,
            extra=encode_string("localhost") + u32(1),
            request_id=2,
        ),
    ]
    with pytest.raises(LocalProtocolError):
        p.b.ch.reply_global_request(False, b"data")
    p.b.ch.reply_global_request(True, u32(40123))  # RFC 4254 §7.1: the port allocated
    p.b.ch.reply_global_request(False)
    p.pump()
    assert p.a.take() == [
        GlobalRequestReplied(name="tcpip-forward", success=True, extra=u32(40123)),
        GlobalRequestReplied(name=KEEPALIVE, success=False, extra=b""),
        GlobalRequestReplied(name="cancel-tcpip-forward", success=False, extra=b""),
    ]
    with pytest.raises(LocalProtocolError):
        p.b.ch.reply_global_request(True)


def test_a_global_request_answered_by_id_keeps_the_reply_order() -> None:
    """RFC 4254 §4: a handler that answers later (a bind in progress) keeps
    its place; the later request's answer waits for it."""
    p = Pair()
    p.a.ch.global_request("tcpip-forward", True, encode_string("localhost") + u32(0))
    p.a.ch.global_request("unknown@test.example", True)
    p.pump()
    first, second = p.b.take()
    assert isinstance(first, GlobalRequestReceived) and isinstance(second, GlobalRequestReceived)
    p.b.ch.reply_global_request(False, request_id=second.request_id)
    p.pump()
    assert p.a.take() == []  # held until the first is answered
    with pytest.raises(LocalProtocolError, match="does not await"):
        p.b.ch.reply_global_request(False, request_id=second.request_id)
    p.b.ch.reply_global_request(True, u32(40124), request_id=first.request_id)
    p.pump()
    assert p.a.take() == [
        GlobalRequestReplied(name="tcpip-forward", success=True, extra=u32(40124)),
        GlobalRequestReplied(name="unknown@test.example", success=False, extra=b""),
    ]
    with pytest.raises(LocalProtocolError, match="does not await"):
        p.b.ch.reply_global_request(True, request_id=first.request_id)


def test_unsolicited_replies_are_protocol_errors() -> None:
    p = Pair()
    aid, _ = p.open()
    with pytest.raises(RemoteProtocolError, match="did not make"):
        p.a.feed(encode_byte(MsgType.CHANNEL_SUCCESS) + u32(aid))
    with pytest.raises(RemoteProtocolError, match="did not make"):
        p.a.feed(encode_byte(MsgType.CHANNEL_FAILURE) + u32(aid))
    with pytest.raises(RemoteProtocolError, match="did not make"):
        p.a.feed(encode_byte(MsgType.REQUEST_SUCCESS))
    with pytest.raises(RemoteProtocolError, match="did not make"):
        p.a.feed(encode_byte(MsgType.REQUEST_FAILURE))


def test_pending_request_flood_is_bounded() -> None:
    p = Pair()
    _, bid = p.open()
    req = encode_byte(MsgType.CHANNEL_REQUEST) + u32(bid) + encode_string("x") + encode_bool(True)
    for _ in range(MAX_PENDING_REQUESTS):
        p.b.feed(req)
    with pytest.raises(RemoteProtocolError, match="awaiting a reply"):
        p.b.feed(req)
    glob = encode_byte(MsgType.GLOBAL_REQUEST) + encode_string(KEEPALIVE) + encode_bool(True)
    p.b.feed(encode_byte(MsgType.GLOBAL_REQUEST) + encode_string("x") + encode_bool(True))
    for _ in range(MAX_PENDING_GLOBAL_REQUESTS - 1):
        p.b.feed(glob)  # automatic answers wait behind the undecided "x"
    with pytest.raises(RemoteProtocolError, match="awaiting a reply"):
        p.b.feed(glob)


def test_requests_after_close_sent() -> None:
    p = Pair()
    aid, bid = p.open()
    p.a.ch.send_request(aid, "exec", True)
    p.pump()
    p.a.ch.close(aid)
    with pytest.raises(LocalProtocolError):
        p.a.ch.send_request(aid, "x", False)
    p.b.ch.reply_request(bid, True)  # crosses our CLOSE: matched, then dropped
    p.pump()
    assert p.a.take() == [ChannelClosed(channel_id=aid)]


# ------------------------------------------------------------ unknown ids


@pytest.mark.parametrize(
    "message",
    [
        encode_byte(MsgType.CHANNEL_DATA) + u32(7) + encode_string(b"x"),
        encode_byte(MsgType.CHANNEL_EXTENDED_DATA) + u32(7) + u32(1) + encode_string(b"x"),
        encode_byte(MsgType.CHANNEL_WINDOW_ADJUST) + u32(7) + u32(1),
        encode_byte(MsgType.CHANNEL_EOF) + u32(7),
        encode_byte(MsgType.CHANNEL_CLOSE) + u32(7),
        encode_byte(MsgType.CHANNEL_REQUEST) + u32(7) + encode_string("x") + encode_bool(False),
        encode_byte(MsgType.CHANNEL_SUCCESS) + u32(7),
        encode_byte(MsgType.CHANNEL_FAILURE) + u32(7),
        encode_byte(MsgType.CHANNEL_OPEN_CONFIRMATION) + u32(7) + u32(0) + u32(1) + u32(1),
        encode_byte(MsgType.CHANNEL_OPEN_FAILURE) + u32(7) + u32(1) + encode_string("") + encode_string(""),
    ],
)
def test_unknown_channel_ids(message: bytes) -> None:
    a = Side()
    with pytest.raises(RemoteProtocolError, match="7"):
        a.feed(message)


def test_ids_the_peer_cannot_know_yet() -> None:
    p = Pair()
    aid = p.a.ch.open("session")  # OPENING: only a confirmation or failure may name it
    with pytest.raises(RemoteProtocolError):
        p.a.feed(data_msg(aid, b"x"))
    p.pump()
    (req,) = of(p.b.take(), ChannelOpenRequested)  # PENDING: the peer does not know our id
    with pytest.raises(RemoteProtocolError):
        p.b.feed(encode_byte(MsgType.CHANNEL_EOF) + u32(req.channel_id))
    p.b.ch.accept_open(req.channel_id)
    p.pump()
    with pytest.raises(RemoteProtocolError, match="not opening"):
        p.a.feed(encode_byte(MsgType.CHANNEL_OPEN_CONFIRMATION) + u32(aid) + u32(0) + u32(1) + u32(1))


def test_local_misuse() -> None:
    p = Pair()
    aid = p.a.ch.open("session")
    with pytest.raises(LocalProtocolError):
        p.a.ch.send_data(aid, b"x")  # not confirmed yet
    with pytest.raises(LocalProtocolError):
        p.a.ch.accept_open(aid)
    with pytest.raises(LocalProtocolError):
        p.a.ch.close(99)
    with pytest.raises(LocalProtocolError):
        p.a.ch.channel(99)
    with pytest.raises(LocalProtocolError):
        p.a.ch.handle(85, memoryview(b"\x55"))


# ----------------------------------------------------------------- fuzzing


def _fuzz_side() -> Side:
    """A table holding channels 0-3 in each state: OPEN, OPENING, CLOSING, PENDING."""
    p = Pair(b={"window": 5000, "max_packet": 1000})
    p.open()
    p.b.ch.open("session")  # id 1, OPENING
    _, closing = p.open()
    p.a.ch.open("session")
    p.pump()  # B's id 3 is PENDING (and so is A's view of B's id 1: ignored)
    p.b.ch.close(closing)  # id 2, CLOSING: its CLOSE is never delivered
    p.b.ch.send_request(0, "x", True)
    p.b.ch.global_request("y", True)
    p.b.sent.clear()
    states = [p.b.ch.channel(i).state for i in range(4)]
    assert states == [ChannelState.OPEN, ChannelState.OPENING, ChannelState.CLOSING, ChannelState.PENDING]
    return p.b


_MSGS = st.sampled_from(list(range(80, 101)))
_U32S = st.one_of(st.integers(0, 5), st.sampled_from([2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
_FIELD = st.one_of(
    _U32S.map(u32),
    st.binary(max_size=40).map(encode_string),
    st.sampled_from(
        [
            encode_string("direct-tcpip"),
            encode_string("forwarded-tcpip"),
            encode_string("direct-streamlocal@openssh.com"),
            encode_string(KEEPALIVE),
            b"\x00",
            b"\x01",
        ]
    ),
    st.binary(max_size=12),
)


@settings(max_examples=600, deadline=None)
@given(msg=_MSGS, body=st.one_of(st.binary(max_size=64), st.lists(_FIELD, max_size=7).map(b"".join)))
def test_random_messages_raise_only_protocol_errors(msg: int, body: bytes) -> None:
    side = _fuzz_side()
    with contextlib.suppress(SSHError):
        side.feed(bytes([msg]) + body)
    for head, data in side.sent:
        assert 80 <= head[0] <= 100 and len(head) + len(data) < 4096


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_MSGS, st.lists(_FIELD, max_size=6).map(b"".join)), max_size=12))
def test_random_message_sequences_raise_only_protocol_errors(messages: list[tuple[int, bytes]]) -> None:
    side = _fuzz_side()
    for msg, body in messages:
        try:
            side.feed(bytes([msg]) + body)
        except SSHError:
            break
    assert len(side.ch) <= side.ch.max_channels


def test_ids_are_not_reused_within_one_batch_of_events() -> None:
    """A closed id becomes reusable only once the runtime has taken the
    events of the batch that closed it (so a late acknowledge cannot credit
    a new channel under the same id)."""
    pair = Pair()
    cid = pair.a.ch.open("session")
    pair.pump()
    [request] = pair.b.take()
    assert isinstance(request, ChannelOpenRequested)
    pair.b.ch.accept_open(request.channel_id)
    pair.pump()
    pair.a.ch.close(cid)
    pair.pump()  # CLOSE both ways: the id is released on side a
    assert cid not in pair.a.ch
    assert pair.a.ch.open("session") != cid  # events not taken yet
    pair.a.take()
    pair.pump()
    assert pair.a.ch.open("session") == cid  # now it may be reused
