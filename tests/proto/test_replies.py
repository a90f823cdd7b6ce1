"""ReplyQueue: replies leave in request order (RFC 4254 §4, §5.4), answered
by id or oldest first, and the queue is bounded."""

from __future__ import annotations

import pytest

from hashike.proto.errors import LocalProtocolError, RemoteProtocolError
from hashike.proto.replies import ReplyQueue


def test_replies_leave_in_request_order_whatever_order_they_are_given() -> None:
    q = ReplyQueue(8)
    first, second, third = q.expect(), q.expect(), q.expect()
    assert (first, second, third) == (0, 1, 2)
    q.answer((True, b"3"), third, "here")
    q.answer((False, b""), second, "here")
    assert q.ready() == []  # the first holds them back
    q.answer((True, b"1"), None, "here")  # the oldest unanswered is the first
    assert q.ready() == [(True, b"1"), (False, b""), (True, b"3")]
    assert q.expect() == 3  # ids keep counting


def test_an_answer_given_at_once() -> None:
    q = ReplyQueue(8)
    q.expect((False, b""))
    assert q.ready() == [(False, b"")]


@pytest.mark.parametrize("request_id", [-1, 1, 5])
def test_answering_a_request_that_does_not_wait_is_the_callers_bug(request_id: int) -> None:
    q = ReplyQueue(8)
    q.expect()
    with pytest.raises(LocalProtocolError, match="does not await a reply on x"):
        q.answer((True, b""), request_id, "on x")


def test_answering_twice_or_with_nothing_waiting() -> None:
    q = ReplyQueue(8)
    rid = q.expect()
    q.answer((True, b""), rid, "on x")
    with pytest.raises(LocalProtocolError, match="does not await"):
        q.answer((True, b""), rid, "on x")
    with pytest.raises(LocalProtocolError, match="no request awaits a reply on x"):
        q.answer((True, b""), None, "on x")


def test_the_peer_cannot_make_us_remember_more_than_the_limit() -> None:
    q = ReplyQueue(2)
    q.expect()
    q.expect()
    with pytest.raises(RemoteProtocolError, match="more than 2 requests"):
        q.expect()


def test_clear_forgets_every_request_but_keeps_counting() -> None:
    q = ReplyQueue(4)
    q.expect()
    q.expect()
    q.clear()
    assert q.ready() == []
    with pytest.raises(LocalProtocolError):
        q.answer((True, b""), 0, "on x")
    assert q.expect() == 2
