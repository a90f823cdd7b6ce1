"""Dynamic forwarding (``-D``): a SOCKS4/4A/5 proxy whose connections go
through the SSH connection as ``direct-tcpip`` channels (RFC 4254 §7.2).

Each accepted connection first runs the SOCKS handshake (the pure codec in
:mod:`hashike.proto.socks`), bounded in size by the codec and in time by
``handshake_timeout``: a client that breaks either bound, or the protocol,
loses its own connection and nothing else. The request's target is then
opened as a channel, and only once the server confirms it does the client
hear "granted" (ssh answers at once, before it knows); a refusal becomes the
SOCKS reply that says why, and the client connection is closed. From then on
the connection is an ordinary socket bridge, with its flow control and
half-close.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hashike.proto.socks import SocksError, SocksServer, reply_for_open_failure

from .bridge import SocketBridge
from .forward import ForwardListener, Target, bind_listener, open_channel
from .link import Link
from .listen import LISTEN_BACKLOG
from .pump import CorePump

__all__ = ["HANDSHAKE_TIMEOUT", "SocksListener", "forward_socks"]

log = logging.getLogger("hashike")

# Seconds a client has from connecting to a complete request. curl needs
# milliseconds; a client that dawdles longer holds a socket for nothing.
HANDSHAKE_TIMEOUT = 10.0


class SocksListener(ForwardListener):
    """A listening ``-D`` forward: ``port``, ``sockets``, ``connections``
    and ``close()`` as for ``-L``."""

    def __init__(self, handshake_timeout: float) -> None:
        super().__init__(None)
        self.handshake_timeout = handshake_timeout


class _SocksBridge(SocketBridge):
    """One client of the proxy: the handshake, then a socket bridge."""

    def __init__(self, link: Link, listener: SocksListener) -> None:
        super().__init__(link.pump)
        self._link = link
        self._listener = listener
        self._socks: SocksServer | None = SocksServer()  # None once answered
        self._timer: asyncio.TimerHandle | None = None
        self._origin = ("127.0.0.1", 0)
        self._target: Target | None = None  # the request's, for ~# (client._describe_bridge)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # reading paused until the channel opens ...
        assert self.transport is not None
        self._listener.connections += 1
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._origin = (str(peer[0]), int(peer[1]))
        self._out.read(self.transport, True)  # ... but the handshake is ours to read
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._listener.handshake_timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        socks = self._socks
        if socks is None or socks.request is not None:
            super().data_received(data)  # the connection's own data
            return
        try:
            socks.receive_data(data)
        except SocksError as exc:
            self._write(socks.data_to_send())  # the refusal, if the protocol has one
            self._drop(str(exc))
            return
        self._write(socks.data_to_send())
        if socks.request is not None:
            self._requested(socks)

    def eof_received(self) -> bool:
        if self._socks is not None and self._socks.request is None:
            self._drop("EOF before the SOCKS request")
            return False
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _requested(self, socks: SocksServer) -> None:
        request = socks.request
        assert request is not None and self.transport is not None
        self._stop_timer()
        self._out.read(self.transport, False)  # until the channel is confirmed
        if socks.early_data:
            self._out.add(socks.early_data)  # a client that did not wait for our reply
        self._target = Target(request.host, request.port)
        self._link.when_up(self._go, self.transport.close)  # waits while a reconnect is under way

    def _go(self, pump: CorePump[Any]) -> None:
        socks = self._socks
        if self.transport is None or self.transport.is_closing() or socks is None:
            return  # the local peer left while it waited
        assert socks.request is not None and self._target is not None
        self.pump = pump
        self._listener.count(self, self._origin)
        open_channel(pump, self, self._target, self._origin)
        log.debug(
            "channel %s: dynamic request: %s host %s port %d command 1",
            self.channel_id, socks.request.label, socks.request.host, socks.request.port,
        )  # fmt: skip

    def channel_open(self) -> None:
        socks, self._socks = self._socks, None
        if socks is not None:
            socks.accept()
            self._write(socks.data_to_send())
        super().channel_open()

    def channel_refused(self, reason: int, description: str) -> None:
        socks, self._socks = self._socks, None
        if socks is not None and socks.request is not None:
            reply = reply_for_open_failure(reason, description)
            socks.reject(reply)
            self._write(socks.data_to_send())
            # The pump said "open failed" in ssh's words; this names the target.
            log.warning(
                "channel %s: dynamic request: %s host %s port %d command 1: refused (SOCKS reply %#04x)",
                self.channel_id, socks.request.label, socks.request.host, socks.request.port, reply,
            )  # fmt: skip
        super().channel_refused(reason, description)  # closes the client connection

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def _too_slow(self) -> None:
        self._timer = None
        self._drop(f"no SOCKS request within {self._listener.handshake_timeout:g} s")

    def _drop(self, why: str) -> None:
        """End this client's connection (never the SSH connection)."""
        self._stop_timer()
        self._socks = None
        log.debug("dynamic forward: connection from %s port %d dropped: %s", *self._origin, why)
        if self.transport is not None:
            self.transport.close()  # what was written (a refusal) goes first

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def forward_socks(
    link: Link,
    listen_host: str | None,
    listen_port: int | None,
    *,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    listen_socket: str | None = None,
) -> SocksListener:
    """Serve SOCKS on ``listen_host:listen_port`` (loopback when None, every
    address for ``""``/``"*"``; port 0 picks one) or on the Unix socket
    ``listen_socket``. Raises OSError as the OS reports it."""
    listener = SocksListener(handshake_timeout)

    def factory() -> _SocksBridge:
        return _SocksBridge(link, listener)

    if listen_socket is not None:
        loop = asyncio.get_running_loop()
        listener.servers.append(await loop.create_unix_server(factory, listen_socket, backlog=LISTEN_BACKLOG))
    else:
        listener.servers = await bind_listener(factory, listen_host, listen_port)
    listener.start_stats("dynamic")
    link.listeners += 1
    return listener
