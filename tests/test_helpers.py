"""The bounded waits fail the test when the condition never holds."""

from __future__ import annotations

import itertools

import pytest

from tests.helpers import eventually, eventually_sync


async def test_eventually_returns_once_the_predicate_holds() -> None:
    calls = itertools.count()
    await eventually(lambda: next(calls) >= 3, 5)
    assert next(calls) == 4  # polled until true, then no more


async def test_eventually_fails_with_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"not true within 0.05 s: the door opens"):
        await eventually(lambda: False, 0.05, what="the door opens")


async def test_eventually_shows_the_state_at_the_timeout() -> None:
    state = {"open": 0}
    with pytest.raises(AssertionError, match=r"\{'open': 0\}"):
        await eventually(lambda: state["open"], 0.05, what=lambda: state)


def test_eventually_sync_returns_and_fails_like_eventually() -> None:
    calls = itertools.count()
    eventually_sync(lambda: next(calls) >= 2, 5)
    assert next(calls) == 3
    with pytest.raises(AssertionError, match=r"not true within 0.05 s: <lambda>"):
        eventually_sync(lambda: None, 0.05)
