"""Reconnect (a hashike extension: OpenSSH has none; autossh is the anchor).

Theory of operation. :class:`Backoff` is the policy, pure code with no clock
of its own: exponential from ``initial`` up to ``cap`` with jitter (each
delay drawn from the upper half of its step, so that many clients cut off
together do not come back together), and back to the first step once a
connection has stayed up ``reset_after`` seconds. :class:`Supervisor` runs
it: ``async for client in supervisor`` yields the first connection, then,
each time the one it yielded has closed, logs why and how long it waits,
sleeps, and connects again until it succeeds (or ``attempts`` run out:
the iteration ends).

What is never retried: a host key that does not verify (HostKeyNotVerified)
and a refused login (AuthenticationFailed) end the iteration with that
error, so a changed key is never "tried again", nor a wrong password sent
in a loop. The first connection's errors are the caller's, whatever they are.

Every client yielded shares one :class:`~hashike.aio.link.Link`, so the
``-L``/``-D`` listeners made through any of them stay bound across
reconnects and what they accept while the link is down waits (bounded:
``queue_limit``, ``wait_timeout``). Remote forwards registered with
:meth:`Supervisor.forward_remote` are requested again on each connection;
one the server refuses is retried alone, with the same backoff, while that
connection stays up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from hashike.proto.errors import AuthenticationFailed, ConnectionClosed, HostKeyNotVerified, SSHError

from .client import SSHClient
from .forward import Target
from .link import Link
from .remote import RemoteForwardFailed, RemoteListener

__all__ = ["Backoff", "ReconnectPolicy", "RemoteSpec", "Supervisor", "lost_reason"]

log = logging.getLogger("hashike.client")


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """``attempts``: reconnects tried in a row before giving up (None: for
    ever). Delays grow from ``initial`` by ``factor`` up to ``cap`` seconds;
    a connection up ``reset_after`` seconds starts the count again."""

    attempts: int | None = None
    initial: float = 1.0
    cap: float = 60.0
    factor: float = 2.0
    reset_after: float = 60.0


@dataclass(slots=True)
class Backoff:
    """The delays of one run of reconnects. ``random`` returns [0, 1)."""

    policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    random: Callable[[], float] = random.random
    attempt: int = 0  # attempts made since the last reset

    def next_delay(self) -> float | None:
        """The wait before the next attempt, or None once attempts ran out."""
        p = self.policy
        if p.attempts is not None and self.attempt >= p.attempts:
            return None
        step = min(p.cap, p.initial * p.factor ** min(self.attempt, 64))
        self.attempt += 1
        return step / 2 + step / 2 * self.random()

    def connected_for(self, seconds: float) -> None:
        """A connection ended after ``seconds`` up: a long one resets the count."""
        if seconds >= self.policy.reset_after:
            self.attempt = 0


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    """A remote forward to request on every connection (``-R``)."""

    listen_host: str | None
    listen_port: int
    target: Target | None
    listen_socket: str | None = None


def lost_reason(client: SSHClient) -> str:
    """Why a connection ended, for the "lost: ..." line."""
    event = client.disconnect_event
    if client.keepalive.timed_out:
        return "server not responding"
    if event is None or event.by_peer:
        return "closed by remote host"
    return event.description or "connection closed"


def _failure(exc: BaseException) -> str:
    """A failed attempt, as the next "lost: ..." line gives it."""
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    if isinstance(exc, OSError) and exc.errno:
        return f"connect failed: {os.strerror(exc.errno)}"
    return str(exc) or type(exc).__name__


def _seconds(delay: float) -> str:
    return f"{delay:.0f}" if delay >= 1 else f"{delay:.1f}"


# What a failed reconnect can be, short of the fatal two: the network, a
# timeout, a server that closed early, a jump host that refused the hop.
_RETRYABLE = (OSError, TimeoutError, ConnectionClosed, SSHError)


class Supervisor:
    """Keeps a connection up: ``connect`` makes one (the same call each
    time). ``first``, a client already connected, is adopted rather than
    made. ``on_state`` hears each change in a few words (systemd STATUS);
    ``on_remote`` each remote forward (re)established, for the port the
    server chose."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[SSHClient]],
        policy: ReconnectPolicy | None = None,
        *,
        label: tuple[str, int] = ("server", 22),
        first: SSHClient | None = None,
        queue_limit: int = 64,
        wait_timeout: float | None = None,
        on_state: Callable[[str], None] | None = None,
        on_remote: Callable[[RemoteSpec, RemoteListener], None] | None = None,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self._connect = connect
        self.backoff = Backoff(policy or ReconnectPolicy(), random_source)
        self.label = label
        self._first = first
        self._queue_limit = queue_limit
        self._wait_timeout = wait_timeout
        self._on_state = on_state or (lambda _: None)
        self._on_remote = on_remote or (lambda _s, _l: None)
        self.remote: list[RemoteSpec] = []
        self.link: Link | None = None
        self.client: SSHClient | None = None
        # For hashike status: reconnects made, and while one waits, when
        # (wall clock) the next attempt starts.
        self.reconnects = 0
        self.retry_at: float | None = None
        self._retries: set[asyncio.Task[None]] = set()

    def forward_remote(self, spec: RemoteSpec) -> None:
        """Request ``spec`` on every connection from the next one on (the
        caller requests it on the current one, if it wants it there)."""
        self.remote.append(spec)

    async def __aiter__(self) -> AsyncIterator[SSHClient]:
        loop = asyncio.get_running_loop()
        client: SSHClient | None = self._first or await self._connect()
        adopted, first = self._first is not None, True
        try:
            while client is not None:
                self._adopt(client)
                restored = 0 if adopted else await self._restore(client)
                if not first:
                    self._reconnected(restored)
                adopted = first = False
                since = loop.time()
                yield client
                await client.wait_closed()
                self.backoff.connected_for(loop.time() - since)
                client = await self._reconnect(lost_reason(client))
        finally:
            self._stop_retries()
            if self.link is not None:
                self.link.close()

    def _adopt(self, client: SSHClient) -> None:
        """Every client sends its listeners' connections through one link."""
        if self.link is None:
            self.link = client.link
            self.link.queue_limit = self._queue_limit
            self.link.wait_timeout = self._wait_timeout
        else:
            self.link.switch(client._pump)
            client.link = self.link
        self.client = client

    def _reconnected(self, restored: int) -> None:
        assert self.link is not None
        self.reconnects += 1
        self.retry_at = None
        count = self.link.listeners + restored
        host = self.label[0]
        log.info("Reconnected to %s; %d forward%s restored", host, count, "" if count == 1 else "s")
        self._on_state(f"connected to {host}; {count} forward{'' if count == 1 else 's'} up")

    async def _reconnect(self, reason: str) -> SSHClient | None:
        """Connect again after the backoff; None once attempts ran out."""
        self._stop_retries()
        host, port = self.label
        for _ in range(1 << 62):  # ends with a connection, a fatal error or the attempts
            delay = self.backoff.next_delay()
            if delay is None:
                log.info("Connection to %s port %d lost: %s; giving up", host, port, reason)
                return None
            attempt = self.backoff.attempt
            log.info(
                "Connection to %s port %d lost: %s; reconnecting in %s s (attempt %d)",
                host, port, reason, _seconds(delay), attempt,
            )  # fmt: skip
            self._on_state(f"reconnecting in {_seconds(delay)} s (attempt {attempt})")
            self.retry_at = time.time() + delay
            await asyncio.sleep(delay)
            try:
                return await self._connect()
            except (HostKeyNotVerified, AuthenticationFailed):
                raise  # never retried: see the module's docstring
            except _RETRYABLE as exc:
                reason = _failure(exc)
        raise AssertionError("unreachable")

    async def _restore(self, client: SSHClient) -> int:
        """Request every remote forward; each refused one is retried alone."""
        results = await asyncio.gather(
            *(self._request(client, spec) for spec in self.remote), return_exceptions=True
        )
        restored = 0
        for spec, result in zip(self.remote, results, strict=True):
            if isinstance(result, RemoteListener):
                restored += 1
            elif isinstance(result, RemoteForwardFailed):
                log.info("Warning: %s; retrying", result)
                self._retry(client, spec)
            elif isinstance(result, BaseException) and not isinstance(result, ConnectionClosed):
                raise result
        return restored

    async def _request(self, client: SSHClient, spec: RemoteSpec) -> RemoteListener:
        listener = await client.forward_remote(
            spec.listen_host, spec.listen_port, spec.target, listen_socket=spec.listen_socket
        )
        self._on_remote(spec, listener)
        return listener

    def _retry(self, client: SSHClient, spec: RemoteSpec) -> None:
        task = asyncio.ensure_future(self._retry_one(client, spec))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _retry_one(self, client: SSHClient, spec: RemoteSpec) -> None:
        backoff = Backoff(self.backoff.policy, self.backoff.random)
        while not client.core.closed:
            await asyncio.sleep(backoff.next_delay() or self.backoff.policy.cap)
            try:
                await self._request(client, spec)
            except RemoteForwardFailed:
                continue
            except ConnectionClosed:
                return
            log.info("Remote forward for listen port %d restored", spec.listen_port)
            return

    def _stop_retries(self) -> None:
        for task in self._retries:
            task.cancel()
