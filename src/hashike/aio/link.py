"""The SSH connection that local listeners (``-L``, ``-D``) send their
connections through, which a reconnect replaces under them.

Without a supervisor a link is one connection for good, and a connection
accepted after it closed is closed at once (``queue_limit`` 0). Under
:class:`hashike.aio.supervisor.Supervisor` the listeners stay bound while
the connection is down: what they accept meanwhile waits, at most
``queue_limit`` connections for at most ``wait_timeout`` seconds each
(ConnectTimeout), and goes through once :meth:`Link.switch` puts the new
connection in; past either bound it is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .pump import CorePump

__all__ = ["Link"]


@dataclass(slots=True)
class _Waiter:
    go: Callable[[CorePump[Any]], None]
    give_up: Callable[[], None]
    timer: asyncio.TimerHandle | None = None


class Link:
    """``pump``: the current connection; ``up`` while it is open.
    ``listeners``: how many local listeners send through this link."""

    def __init__(self, pump: CorePump[Any]) -> None:
        self.pump = pump
        self.queue_limit = 0
        self.wait_timeout: float | None = None
        self.listeners = 0
        self._waiting: list[_Waiter] = []

    @property
    def up(self) -> bool:
        return not self.pump.core.closed

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def when_up(self, go: Callable[[CorePump[Any]], None], give_up: Callable[[], None]) -> None:
        """Call ``go`` with the connection now if it is up, else once it is
        back; ``give_up`` instead when the queue is full or the wait too long."""
        if self.up:
            go(self.pump)
            return
        if len(self._waiting) >= self.queue_limit:
            give_up()
            return
        waiter = _Waiter(go, give_up)
        if self.wait_timeout is not None:
            loop = asyncio.get_running_loop()
            waiter.timer = loop.call_later(self.wait_timeout, self._expire, waiter)
        self._waiting.append(waiter)

    def switch(self, pump: CorePump[Any]) -> None:
        """A new connection is up: what waited goes through it, in order."""
        self.pump = pump
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if waiter.timer is not None:
                waiter.timer.cancel()
            waiter.go(pump)

    def close(self) -> None:
        """No connection will come back: close what waits."""
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if waiter.timer is not None:
                waiter.timer.cancel()
            waiter.give_up()

    def _expire(self, waiter: _Waiter) -> None:
        if waiter in self._waiting:
            self._waiting.remove(waiter)
            waiter.give_up()
