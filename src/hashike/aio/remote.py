"""The client's side of remote forwarding (RFC 4254 §7.1, ``-R``).

Theory of operation. :meth:`RemoteForwards.request` sends ``tcpip-forward``
with the address as ssh sends it (``localhost`` when none was given, ``""``
for every address) and waits for the reply; a forward for port 0 learns the
port the server bound from it. Only then is the forward in the table, keyed
by (address, port), and a ``forwarded-tcpip`` open that names a key of the
table is taken: the local target is connected first (without blocking the
connection) and the channel confirmed only once it is, or refused with
CONNECT_FAILED; only that channel fails. An open naming anything else (a
forward never asked for, or cancelled) is refused as every unrequested open
is (:meth:`CorePump.refuse_open`), and nothing is connected.

The server sends its reply before any open for the port (§7.1), often in
the same read; the caller that asked registers the forward only when it
resumes, after that read is handled. So an open that arrives while requests
await their replies is decided once they have them and their callers ran.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from hashike.proto.connection import ClientConnection
from hashike.proto.errors import SSHError
from hashike.proto.events import ChannelOpenRequested, GlobalRequestReplied
from hashike.proto.forwarding import decode_allocated_port, encode_tcpip_forward

from .forward import Target, connect_target
from .pump import CorePump

__all__ = ["RemoteForwardFailed", "RemoteForwards", "RemoteListener", "bind_address"]

log = logging.getLogger("hashike.client")


class RemoteForwardFailed(SSHError):
    """The server refused a tcpip-forward request (or did not say which
    port it chose). ``port`` is the listen port that was asked for."""

    def __init__(self, port: int) -> None:
        super().__init__(f"remote port forwarding failed for listen port {port}")
        self.port = port


def bind_address(listen_host: str | None) -> str:
    """The address to send for ssh's bind address: ``localhost`` when none
    was given, ``""`` (every address) for ``""`` or ``*``."""
    if listen_host is None:
        return "localhost"
    return "" if listen_host in ("", "*") else listen_host


class RemoteListener:
    """A port the server listens on for us (``-R``). ``port`` is the port
    bound, the server's choice when 0 was asked for; ``address`` the bind
    address as it was sent; ``connections`` how many were carried."""

    def __init__(self, forwards: RemoteForwards, address: str, port: int, target: Target) -> None:
        self.address = address
        self.port = port
        self.target = target
        self.connections = 0
        self._forwards = forwards

    def close(self) -> None:
        """Stop forwarding: the server is told (cancel-tcpip-forward), and
        later opens for this port are refused. Idempotent."""
        self._forwards.cancel(self)


class RemoteForwards:
    """The remote forwards one client asked for; registers the
    ``forwarded-tcpip`` open handler on ``pump``."""

    def __init__(self, pump: CorePump[ClientConnection]) -> None:
        self._pump = pump
        self._listeners: dict[tuple[str, int], RemoteListener] = {}
        self._waiting: set[asyncio.Future[GlobalRequestReplied]] = set()
        pump.open_handlers["forwarded-tcpip"] = self._open

    async def request(self, listen_host: str | None, listen_port: int, target: Target) -> RemoteListener:
        """Ask the server to listen (RFC 4254 §7.1). Raises
        RemoteForwardFailed when it refuses, ConnectionClosed when the
        connection ends first."""
        address = bind_address(listen_host)
        waiting = self._pump.global_request("tcpip-forward", encode_tcpip_forward(address, listen_port))
        self._waiting.add(waiting)
        try:
            reply = await waiting
        finally:
            self._waiting.discard(waiting)
        port = listen_port
        if reply.success and listen_port == 0:
            port = decode_allocated_port(reply.extra) or 0
        if not reply.success or port == 0:
            raise RemoteForwardFailed(listen_port)
        log.debug("remote forward success for: listen %s:%d, connect %s", address, port, target)
        listener = RemoteListener(self, address, port, target)
        self._listeners[(address, port)] = listener
        return listener

    def cancel(self, listener: RemoteListener) -> None:
        key = (listener.address, listener.port)
        if self._listeners.get(key) is not listener:
            return
        del self._listeners[key]
        if not self._pump.core.closed:
            self._pump.global_request("cancel-tcpip-forward", encode_tcpip_forward(*key))

    def _open(self, event: ChannelOpenRequested) -> None:
        if self._waiting:
            self._pump._spawn(self._open_after_replies(event, list(self._waiting)))
        else:
            self._decide(event)

    async def _open_after_replies(
        self, event: ChannelOpenRequested, waiting: list[asyncio.Future[GlobalRequestReplied]]
    ) -> None:
        await asyncio.wait(waiting)  # fail with the connection, which cancels us too
        await asyncio.sleep(0)  # the requests' callers, woken first, register their forwards
        self._decide(event)

    def _decide(self, event: ChannelOpenRequested) -> None:
        listener = None
        if event.host is not None and event.port is not None:
            listener = self._listeners.get((event.host, event.port))
        if listener is None:
            self._pump.refuse_open(event)
            return
        listener.connections += 1
        target = listener.target
        onward = replace(event, host=target.host, port=target.port, socket_path=target.socket_path)
        self._pump._spawn(connect_target(self._pump, onward, client=True))
