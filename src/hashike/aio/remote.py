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

A forward with no target is reverse dynamic forwarding: its channels are
served SOCKS from here (:mod:`hashike.aio.rsocks`). A forward that listens on
a Unix socket on the server (OpenSSH PROTOCOL §2.4) is asked for with
``streamlocal-forward@openssh.com``, keyed by its path, and its connections
arrive as ``forwarded-streamlocal@openssh.com`` channels.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from hashike.proto.connection import ClientConnection
from hashike.proto.errors import SSHError
from hashike.proto.events import ChannelOpenRequested, GlobalRequestReplied
from hashike.proto.forwarding import decode_allocated_port, encode_streamlocal_forward, encode_tcpip_forward

from .forward import Target, address_text, connect_target
from .pump import CorePump
from .rsocks import ReverseSocks
from .socks import HANDSHAKE_TIMEOUT
from .stats import ForwardStats, register, unregister

__all__ = ["RemoteForwardFailed", "RemoteForwards", "RemoteListener", "bind_address"]

log = logging.getLogger("hashike.client")


class RemoteForwardFailed(SSHError):
    """The server refused a tcpip-forward request (or did not say which
    port it chose). ``port`` is the listen port that was asked for, or
    ``path`` the socket (streamlocal-forward)."""

    def __init__(self, port: int, path: str | None = None) -> None:
        where = f"path {path}" if path is not None else f"port {port}"
        super().__init__(f"remote port forwarding failed for listen {where}")
        self.port = port
        self.path = path


def bind_address(listen_host: str | None) -> str:
    """The address to send for ssh's bind address: ``localhost`` when none
    was given, ``""`` (every address) for ``""`` or ``*``."""
    if listen_host is None:
        return "localhost"
    return "" if listen_host in ("", "*") else listen_host


# A forward's key: (bind address as sent, port bound), or a socket path.
_Key = tuple[str, int] | str


class RemoteListener:
    """A port the server listens on for us (``-R``). ``port`` is the port
    bound, the server's choice when 0 was asked for; ``address`` the bind
    address as it was sent; or ``socket_path``, a Unix socket on the server
    (``port`` 0). ``target`` None serves SOCKS (reverse dynamic forwarding).
    ``connections``: how many were carried; ``stats`` its counters for
    ``hashike status`` (aio/stats.py), kept while the server listens."""

    def __init__(
        self, forwards: RemoteForwards, key: _Key, target: Target | None, handshake_timeout: float
    ) -> None:
        self.key = key
        self.address, self.port = key if isinstance(key, tuple) else ("", 0)
        self.socket_path = key if isinstance(key, str) else None
        self.target = target
        self.handshake_timeout = handshake_timeout
        self.connections = 0
        self._forwards = forwards
        self.stats = register(ForwardStats("remote", _label(key), self.describe_target()))

    def describe_target(self) -> str:
        """The far end as ssh names it: ``socks:0`` for reverse dynamic forwarding."""
        return "socks:0" if self.target is None else str(self.target)

    def close(self) -> None:
        """Stop forwarding: the server is told (cancel-tcpip-forward), and
        later opens for this port are refused. Idempotent."""
        self._forwards.cancel(self)


class RemoteForwards:
    """The remote forwards one client asked for; registers the
    ``forwarded-tcpip`` open handler on ``pump``."""

    def __init__(self, pump: CorePump[ClientConnection]) -> None:
        self._pump = pump
        self._listeners: dict[_Key, RemoteListener] = {}
        self._waiting: set[asyncio.Future[GlobalRequestReplied]] = set()
        pump.open_handlers["forwarded-tcpip"] = self._open
        pump.open_handlers["forwarded-streamlocal@openssh.com"] = self._open
        pump.closed.add_done_callback(self._forget)

    def _forget(self, _closed: object) -> None:
        """The connection ended and the server's listeners with it: a
        reconnect's forwards are new ones, not these listed twice."""
        for listener in self._listeners.values():
            unregister(listener.stats)
        self._listeners.clear()

    async def request(
        self,
        listen_host: str | None,
        listen_port: int,
        target: Target | None,
        *,
        listen_socket: str | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> RemoteListener:
        """Ask the server to listen (RFC 4254 §7.1), on ``listen_socket``
        instead when it is given (PROTOCOL §2.4). Raises RemoteForwardFailed
        when it refuses, ConnectionClosed when the connection ends first."""
        if listen_socket is not None:
            name, extra = "streamlocal-forward@openssh.com", encode_streamlocal_forward(listen_socket)
        else:
            address = bind_address(listen_host)
            name, extra = "tcpip-forward", encode_tcpip_forward(address, listen_port)
        waiting = self._pump.global_request(name, extra)
        self._waiting.add(waiting)
        try:
            reply = await waiting
        finally:
            self._waiting.discard(waiting)
        if listen_socket is not None:
            if not reply.success:
                raise RemoteForwardFailed(listen_port, listen_socket)
            key: _Key = listen_socket
        else:
            port = listen_port
            if reply.success and listen_port == 0:
                port = decode_allocated_port(reply.extra) or 0
            if not reply.success or port == 0:
                raise RemoteForwardFailed(listen_port)
            key = (address, port)
        listener = RemoteListener(self, key, target, handshake_timeout)
        connect = listener.describe_target()
        log.debug("remote forward success for: listen %s, connect %s", _label(key), connect)
        self._listeners[key] = listener
        return listener

    def cancel(self, listener: RemoteListener) -> None:
        key = listener.key
        if self._listeners.get(key) is not listener:
            return
        del self._listeners[key]
        unregister(listener.stats)
        if self._pump.core.closed:
            return
        if isinstance(key, str):
            name, extra = "cancel-streamlocal-forward@openssh.com", encode_streamlocal_forward(key)
        else:
            name, extra = "cancel-tcpip-forward", encode_tcpip_forward(*key)
        self._pump.global_request(name, extra, awaited=False)

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
        if event.kind == "forwarded-streamlocal@openssh.com" and event.socket_path is not None:
            listener = self._listeners.get(event.socket_path)
        elif event.host is not None and event.port is not None:
            listener = self._listeners.get((event.host, event.port))
        if listener is None:
            self._pump.refuse_open(event)
            return
        listener.connections += 1
        target = listener.target
        peer = event.socket_path or address_text((event.orig_host, event.orig_port))  # from, over there
        if target is None:  # reverse dynamic: the SOCKS client names the target
            self._pump.core.channels.accept_open(event.channel_id)
            socks = ReverseSocks(self._pump, event.channel_id, listener.handshake_timeout)
            socks.count(listener.stats, peer)
            self._pump.flush()
            return
        onward = replace(event, host=target.host, port=target.port, socket_path=target.socket_path)
        self._pump._spawn(connect_target(self._pump, onward, client=True, stats=listener.stats, origin=peer))


def _label(key: _Key) -> str:
    return key if isinstance(key, str) else f"{key[0]}:{key[1]}"
