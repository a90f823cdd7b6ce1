"""Global requests (RFC 4254 §4): the part of the connection protocol that
names no channel, as a sans-IO piece of the channel layer.

Theory of operation. :class:`GlobalRequests` is owned by a
:class:`~hashike.proto.channels.Channels` table, which hands it messages 80-82
and sends through the same injected ``send(head, data)``. Our requests that
want a reply are remembered by name, oldest first: the peer's replies come
in request order (§4), and each becomes a :class:`GlobalRequestReplied`. The
peer's requests become :class:`GlobalRequestReceived` events with a request
id; the runtime answers them in any order, and the answers leave in request
order (:class:`~hashike.proto.replies.ReplyQueue`). ``keepalive@openssh.com``
is answered here at once with FAILURE, as OpenSSH does, and never reported.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from hashike.proto.constants import MsgType
from hashike.proto.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from hashike.proto.events import ChannelEvent, GlobalRequestReceived, GlobalRequestReplied
from hashike.proto.replies import ReplyQueue
from hashike.proto.wire import Reader, encode_bool, encode_byte, encode_string

__all__ = [
    "KEEPALIVE",
    "MAX_PENDING_GLOBAL_REQUESTS",
    "NAME_LIMIT",
    "EventSink",
    "GlobalRequests",
    "Send",
    "expect_reply",
]

KEEPALIVE = "keepalive@openssh.com"
# The peer's global requests awaiting our reply. Replies must go in order
# (RFC 4254 §4), so an unanswered request holds back every later one; this
# bounds what a peer can make us remember.
MAX_PENDING_GLOBAL_REQUESTS = 1024
NAME_LIMIT = 256  # request names and channel types are short ASCII tokens


class EventSink(Protocol):
    """Where events go: a ``list[object]``, or a connection's list of a wider
    event union that includes :data:`ChannelEvent`."""

    def append(self, event: ChannelEvent, /) -> None: ...


Send = Callable[[bytes, bytes | memoryview], None]


def expect_reply(queue: ReplyQueue, name: str, want_reply: bool) -> int | None:
    """Note a peer's request in its reply queue (RFC 4254 §4, §5.4): its
    request id, if it wants a reply. A keepalive gets FAILURE at once,
    which is what OpenSSH answers (any reply proves we are alive)."""
    if not want_reply:
        return None
    return queue.expect((False, b"") if name == KEEPALIVE else None)


class GlobalRequests:
    """One connection's global requests, both ways (RFC 4254 §4)."""

    def __init__(self, send: Send, events: EventSink, closed: Callable[[], bool]) -> None:
        self._send = send
        self._events = events
        self._closed = closed
        self._out: deque[str] = deque()  # our want_reply requests, oldest first
        self._in = ReplyQueue(MAX_PENDING_GLOBAL_REQUESTS)  # the peer's

    def request(self, name: str, want_reply: bool, extra: bytes = b"") -> None:
        """Send GLOBAL_REQUEST. Raises :class:`LocalProtocolError` once the
        connection is closed: nothing could ever answer it."""
        if self._closed():
            raise LocalProtocolError("connection is closed")
        if want_reply:
            self._out.append(name)
        self._send(
            encode_byte(MsgType.GLOBAL_REQUEST) + encode_string(name) + encode_bool(want_reply) + extra, b""
        )

    def reply(self, success: bool, extra: bytes = b"", *, request_id: int | None = None) -> None:
        """Answer the :class:`GlobalRequestReceived` with this ``request_id``,
        or the oldest unanswered one; ``extra`` is only sent with success
        (§4). Replies still go out in request order: an answer waits for
        the answers of every earlier request. A no-op once closed."""
        if extra and not success:
            raise LocalProtocolError("REQUEST_FAILURE carries no data")
        if self._closed():
            return
        self._in.answer((success, extra), request_id, "on the connection")
        self._flush()

    def on_request(self, payload: memoryview) -> None:
        r = Reader(payload, 1)
        name = r.ascii(NAME_LIMIT)
        want_reply = r.boolean()
        extra = r.rest()
        r.check_end()
        request_id = expect_reply(self._in, name, want_reply)
        if name != KEEPALIVE:
            self._events.append(
                GlobalRequestReceived(name=name, want_reply=want_reply, extra=extra, request_id=request_id)
            )
        self._flush()

    def on_reply(self, payload: memoryview, success: bool) -> None:
        # RFC 4254 §4: REQUEST_SUCCESS may carry request-specific data; FAILURE none.
        extra = bytes(payload[1:])
        if extra and not success:
            raise DecodeError("REQUEST_FAILURE with data")
        if not self._out:
            raise RemoteProtocolError("reply to a global request we did not make")
        name = self._out.popleft()  # §4: replies come in request order
        self._events.append(GlobalRequestReplied(name=name, success=success, extra=extra))

    def _flush(self) -> None:
        for ok, data in self._in.ready():
            self._send(encode_byte(MsgType.REQUEST_SUCCESS if ok else MsgType.REQUEST_FAILURE) + data, b"")
