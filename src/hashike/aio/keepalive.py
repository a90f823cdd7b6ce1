"""Keepalives on an established connection: OpenSSH's ServerAlive* (client)
and ClientAlive* (server) semantics, and TCPKeepAlive.

Theory of operation. The policy is pure (:class:`AlivePolicy`, no clock: the
caller passes ``now`` and when input last arrived) and is OpenSSH's rule
(clientloop.c server_alive_check, serverloop.c client_alive_check): once
``interval`` seconds pass in which nothing was received and nothing was
probed, one ``keepalive@openssh.com`` global request is sent with want_reply
(RFC 4254 §4; the peer answers it, success or failure, and either proves it
alive). Every reply resets the count of unanswered probes; the probe that
would make the count exceed ``count_max`` is not sent: the peer is declared
dead instead. With a silent peer that is ``interval * (count_max + 1)``
seconds after the last byte it sent, as with OpenSSH.

:class:`Keepalive` is the runtime half: one event-loop timer per connection,
the probes sent through :meth:`CorePump.global_request`, the round-trip time
of the last reply kept in :attr:`Keepalive.rtt`. Two probes go, one after the
other, as soon as the connection is authenticated, whatever the interval:
their round trip, the whole path's (through relays, proxies and jump hosts,
which the kernel's TCP estimate does not see), bounds how far channel windows
grow (proto/window.py); every later reply is a sample too. TCPKeepAlive
(SO_KEEPALIVE) is the kernel's own probe, set by the pump on its socket.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hashike.proto.channels import KEEPALIVE
from hashike.proto.events import GlobalRequestReplied

from .pump import CorePump

__all__ = ["AlivePolicy", "Keepalive", "KeepaliveOptions", "Verdict"]


@dataclass(frozen=True, slots=True)
class KeepaliveOptions:
    """``interval`` seconds of silence before a probe (0: no probes, the
    default of both ServerAliveInterval and ClientAliveInterval),
    ``count_max`` unanswered probes tolerated (default 3; None: probe, but
    never give up, which is sshd's ``ClientAliveCountMax 0``), ``tcp``: set
    SO_KEEPALIVE on the socket (TCPKeepAlive, default yes)."""

    interval: float = 0.0
    count_max: int | None = 3
    tcp: bool = True


class Verdict(enum.Enum):
    """What :meth:`AlivePolicy.check` decides."""

    WAIT = "wait"  # the peer spoke (or was probed) recently: check again later
    PROBE = "probe"  # send one keepalive now
    GIVE_UP = "give up"  # too many probes went unanswered: the peer is dead


@dataclass(slots=True)
class AlivePolicy:
    """When to probe and when to give up; times are the caller's clock."""

    interval: float
    count_max: int | None  # None: never give up
    missed: int = 0  # probes sent since the last reply
    probed_at: float = 0.0  # when the last probe went, or the policy started

    def start(self, now: float) -> None:
        self.probed_at = now
        self.missed = 0

    def next_check(self, heard_at: float) -> float:
        """When to call :meth:`check` next, given when input last arrived."""
        return max(self.probed_at, heard_at) + self.interval

    def check(self, now: float, heard_at: float) -> Verdict:
        if now < self.next_check(heard_at):
            return Verdict.WAIT
        self.missed += 1
        if self.count_max is not None and self.missed > self.count_max:
            return Verdict.GIVE_UP
        self.probed_at = now
        return Verdict.PROBE

    def answered(self) -> None:
        """A reply came: the peer is alive (OpenSSH resets its count on any reply)."""
        self.missed = 0


class Keepalive:
    """The timer of one connection. ``on_dead`` runs once, when the policy
    gives up (it should close the connection); ``on_reply`` listeners get
    the round-trip time of each reply. Stops by itself when the connection
    closes."""

    def __init__(self, pump: CorePump[Any], options: KeepaliveOptions, on_dead: Callable[[], None]) -> None:
        self._pump = pump
        self._policy = AlivePolicy(options.interval, options.count_max)
        self._on_dead = on_dead
        self._timer: asyncio.TimerHandle | None = None
        self.rtt: float | None = None  # seconds, of the last reply
        self.timed_out = False
        self.on_reply: list[Callable[[float], None]] = []

    def start(self) -> None:
        if self._pump.core.closed:
            return
        loop = asyncio.get_running_loop()
        if self._pump.core.authenticated:  # (one made without authentication has no connection layer)
            self._pump.core.expect_rtt()  # windows wait for it (proto/window.py)
            self._probe(loop.time(), again=True)  # the path's round trip (see above)
        if self._policy.interval <= 0:
            return
        self._policy.start(loop.time())
        self._schedule()
        self._pump.closed.add_done_callback(lambda _f: self.stop())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(self._policy.next_check(self._pump.input_at), self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._pump.core.closed:
            return
        now = asyncio.get_running_loop().time()
        verdict = self._policy.check(now, self._pump.input_at)
        if verdict is Verdict.GIVE_UP:
            self.timed_out = True
            self._on_dead()
            return
        if verdict is Verdict.PROBE:
            self._probe(now)
        self._schedule()

    def _probe(self, now: float, again: bool = False) -> None:
        reply = self._pump.global_request(KEEPALIVE)
        reply.add_done_callback(lambda f: self._replied(f, now, again))

    def _replied(self, reply: asyncio.Future[GlobalRequestReplied], sent_at: float, again: bool) -> None:
        if reply.cancelled() or reply.exception() is not None:
            return  # the connection went first
        if again and not self._pump.core.closed:  # (it may close as the reply lands)
            # The first reply may have waited 40 ms on Nagle's algorithm in the
            # peer (sshd sends hostkeys-00@openssh.com after login and then
            # holds small writes until our delayed ACK of it); our second
            # request acknowledges everything, so its reply goes at once. The
            # core keeps the smaller.
            self._probe(asyncio.get_running_loop().time())
        self._policy.answered()
        self.rtt = asyncio.get_running_loop().time() - sent_at
        self._pump.core.observe_rtt(self.rtt)
        for listener in self.on_reply:
            listener(self.rtt)
