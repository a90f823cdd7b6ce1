"""Replies to the peer's requests, in request order (RFC 4254 §4, §5.4).

Theory of operation. Each request from the peer that wants a reply takes a
slot at the back of a :class:`ReplyQueue` and gets a request id. The runtime
answers slots in any order, by id or oldest-unanswered first; replies leave
only from the front, so an unanswered request holds back every later one
(which is what the RFC asks: replies go in request order). The queue is
bounded: a peer cannot make us remember more than ``limit`` requests.
"""

from __future__ import annotations

from collections import deque

from hashike.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["Reply", "ReplyQueue"]

Reply = tuple[bool, bytes]  # success, request-specific data (global requests only)


class ReplyQueue:
    __slots__ = ("_first", "_limit", "_slots")

    def __init__(self, limit: int) -> None:
        self._slots: deque[Reply | None] = deque()
        self._first = 0  # the request id of _slots[0]
        self._limit = limit

    def expect(self, answer: Reply | None = None) -> int:
        """A request that wants a reply arrived: its id. ``answer`` answers it
        at once (the core's own replies, such as the keepalive's)."""
        if len(self._slots) >= self._limit:
            raise RemoteProtocolError(f"more than {self._limit} requests awaiting a reply")
        self._slots.append(answer)
        return self._first + len(self._slots) - 1

    def answer(self, reply: Reply, request_id: int | None, where: str) -> None:
        """Answer request ``request_id``, or the oldest unanswered one;
        ``where`` names the queue in errors ("on channel 3")."""
        slots = self._slots
        if request_id is None:
            if None not in slots:
                raise LocalProtocolError(f"no request awaits a reply {where}")
            slots[slots.index(None)] = reply
            return
        index = request_id - self._first
        if not 0 <= index < len(slots) or slots[index] is not None:
            raise LocalProtocolError(f"request {request_id} does not await a reply {where}")
        slots[index] = reply

    def ready(self) -> list[Reply]:
        """The replies that may go out now, oldest first; they leave the queue."""
        out = []
        slots = self._slots
        while slots and (reply := slots[0]) is not None:
            slots.popleft()
            self._first += 1
            out.append(reply)
        return out

    def clear(self) -> None:
        """Forget every request: none may be answered any more (our CLOSE went, §5.3)."""
        self._first += len(self._slots)
        self._slots.clear()
