"""Bounded waits that fail the test: :func:`eventually` and :func:`eventually_sync`.

A poll that gives up quietly lets a test pass without its condition ever
holding. These raise AssertionError with a description when the time is up,
so a wait is always also a check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["eventually", "eventually_sync"]

Describe = str | Callable[[], object]


def _timed_out(predicate: Callable[[], object], timeout: float, what: Describe | None) -> AssertionError:
    name = getattr(predicate, "__name__", repr(predicate))
    detail = what() if callable(what) else (what or name)
    return AssertionError(f"not true within {timeout} s: {detail}")


async def eventually(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    *,
    what: Describe | None = None,
    interval: float = 0.01,
) -> None:
    """Yield to the event loop until ``predicate()`` is truthy; fail after ``timeout``.

    ``what`` says what was awaited (or, as a callable, shows the state at the
    timeout) in the failure message."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise _timed_out(predicate, timeout, what)
        await asyncio.sleep(interval)


def eventually_sync(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    *,
    what: Describe | None = None,
    interval: float = 0.01,
) -> None:
    """:func:`eventually` for tests without an event loop (it sleeps the thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise _timed_out(predicate, timeout, what)
        time.sleep(interval)
