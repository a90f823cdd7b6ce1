"""Port forwarding on the asyncio runtime (RFC 4254 §7, OpenSSH PROTOCOL §2.4).

Client side, ``-L``: a listener whose every accepted connection opens a
``direct-tcpip`` (or ``direct-streamlocal@openssh.com``) channel and is
bridged to it. Server side: a ``direct-tcpip`` open is answered only once
the onward connection has succeeded (CONNECT_FAILED with the OS's reason
otherwise), so the client sees a refused target as a refused channel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hashike.proto.channel_types import encode_streamlocal
from hashike.proto.constants import OpenFailureReason
from hashike.proto.events import ChannelOpenRequested
from hashike.proto.text import escape_text

from .bridge import SocketBridge
from .link import Link
from .listen import LISTEN_BACKLOG, bind_all
from .pump import CorePump
from .stats import ForwardStats, register, unregister

__all__ = [
    "ForwardListener",
    "Target",
    "address_text",
    "bind_listener",
    "connect_failure",
    "connect_target",
    "forward_local",
    "open_channel",
]

log = logging.getLogger("hashike")


@dataclass(frozen=True, slots=True)
class Target:
    """Where the far side connects: a TCP host and port, or a Unix socket."""

    host: str | None = None
    port: int | None = None
    socket_path: str | None = None

    def __str__(self) -> str:
        return self.socket_path or f"{self.host}:{self.port}"


def open_channel(pump: CorePump[Any], bridge: SocketBridge, target: Target, origin: tuple[str, int]) -> None:
    """Open the channel for ``bridge`` towards ``target`` (RFC 4254 §7.2)."""
    channels = pump.core.channels
    if target.socket_path is not None:
        extra = encode_streamlocal(target.socket_path, direct=True)  # PROTOCOL §2.4
        channel_id = channels.open("direct-streamlocal@openssh.com", extra)
    else:
        assert target.host is not None and target.port is not None
        channel_id = channels.open_direct_tcpip(target.host, target.port, origin[0], origin[1])
    bridge.bind(channel_id)
    pump.flush_soon()  # with the other connections accepted in this turn


class _ListenerBridge(SocketBridge):
    def __init__(self, link: Link, target: Target, listener: ForwardListener) -> None:
        super().__init__(link.pump)
        self._link = link
        self._target = target
        self._listener = listener
        self._origin = ("127.0.0.1", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._origin = (str(peer[0]), int(peer[1]))
        self._link.when_up(self._go, transport.close)  # waits while a reconnect is under way

    def _go(self, pump: CorePump[Any]) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # the local peer left while it waited
        self.pump = pump
        self._listener.connections += 1
        self._listener.count(self, self._origin)
        open_channel(pump, self, self._target, self._origin)


class ForwardListener:
    """A listening forward (``-L``). ``port`` is the bound port, known even
    when 0 was asked for; ``sockets`` every bound address. ``target`` is None
    for a SOCKS listener (``-D``), where each connection names its own."""

    def __init__(self, target: Target | None) -> None:
        self.target = target
        self.servers: list[asyncio.Server] = []
        self.connections = 0
        self.stats: ForwardStats | None = None  # for hashike status, once listening

    @property
    def sockets(self) -> list[Any]:
        return [s.getsockname() for server in self.servers for s in server.sockets]

    @property
    def port(self) -> int:
        name = self.sockets[0]
        return int(name[1]) if isinstance(name, tuple) else 0

    def close(self) -> None:
        for server in self.servers:
            server.close()
        if self.stats is not None:
            unregister(self.stats)

    def start_stats(self, kind: str) -> None:
        """Register with the process's status counters (aio/stats.py)."""
        listen = ", ".join(address_text(name) for name in self.sockets)
        self.stats = register(ForwardStats(kind, listen, str(self.target) if self.target else "socks"))

    def count(self, bridge: SocketBridge, peer: tuple[str, int]) -> None:
        """A connection through this forward starts: counted until its channel closes."""
        if self.stats is not None:
            bridge.count(self.stats, address_text(peer))


def address_text(name: Any) -> str:
    """A socket name as ssh writes it: host:port, [v6]:port, or the path."""
    if isinstance(name, tuple):
        host = str(name[0])
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"
    return str(name)


async def forward_local(
    link: Link,
    listen_host: str | None,
    listen_port: int | None,
    target: Target,
    *,
    listen_socket: str | None = None,
) -> ForwardListener:
    """Listen locally and forward each connection through the SSH connection.

    ``listen_host`` None means loopback only (ssh's default); ``""`` or
    ``"*"`` every address. Raises OSError (address in use, permission) as
    the OS reports it."""
    loop = asyncio.get_running_loop()
    listener = ForwardListener(target)

    def factory() -> _ListenerBridge:
        return _ListenerBridge(link, target, listener)

    if listen_socket is not None:
        listener.servers.append(await loop.create_unix_server(factory, listen_socket, backlog=LISTEN_BACKLOG))
    else:
        listener.servers = await bind_listener(factory, listen_host, listen_port)
    listener.start_stats("local")
    link.listeners += 1
    return listener


async def bind_listener(
    factory: Callable[[], asyncio.BaseProtocol], listen_host: str | None, listen_port: int | None
) -> list[asyncio.Server]:
    """Bind a forward's listening TCP sockets as ssh does: ``listen_host``
    None (or "localhost") is loopback only, ``""`` or ``"*"`` every address."""
    if listen_host is None or listen_host == "localhost":
        hosts: list[str | None] = ["127.0.0.1", "::1"]  # ssh's default: loopback only
    elif listen_host in ("", "*"):
        hosts = [None]  # every address (GatewayPorts)
    else:
        hosts = [listen_host]
    port = listen_port or 0
    # The default ::1 is skipped on a machine without IPv6.
    return await bind_all(factory, [(h, port) for h in hosts], optional=("::1",) if len(hosts) > 1 else ())


def connect_failure(exc: OSError) -> str:
    """Why a connect failed, as the OS says it (sent as an open failure's
    description, which SOCKS replies are chosen from)."""
    if isinstance(exc, socket.gaierror):
        return "Name or service not known"
    return os.strerror(exc.errno) if exc.errno else str(exc)


async def connect_target(
    pump: CorePump[Any],
    event: ChannelOpenRequested,
    *,
    client: bool = False,
    stats: ForwardStats | None = None,
    origin: str = "",
) -> None:
    """Connect onward for an accepted open (the server's direct-tcpip, the
    client's forwarded-tcpip), then confirm the channel, or refuse it with
    CONNECT_FAILED and the OS's reason. ``client``: log the failure in ssh's
    words rather than sshd's. ``stats``: where the connection is counted
    (hashiked's status), with ``origin`` as its peer."""
    loop = asyncio.get_running_loop()
    bridge = SocketBridge(pump, event.channel_id)
    channels = pump.core.channels
    try:
        if event.socket_path is not None:
            await loop.create_unix_connection(lambda: bridge, event.socket_path)
        else:
            assert event.host is not None and event.port is not None
            await loop.create_connection(lambda: bridge, event.host, event.port)
    except OSError as exc:
        if pump.core.closed:
            return
        reason = connect_failure(exc)
        where = escape_text(event.host or event.socket_path or "")  # the peer's text
        if client:
            log.error("connect_to %s port %s: failed.", where, event.port)
        else:
            log.info("connect_to %s port %s: failed: %s", where, event.port, escape_text(reason))
        channels.reject_open(event.channel_id, OpenFailureReason.CONNECT_FAILED, reason)
        pump.flush_soon()
        return
    if pump.core.closed:
        if bridge.transport is not None:
            bridge.transport.close()
        return
    channels.accept_open(event.channel_id)
    bridge.bind(event.channel_id)
    if stats is not None:
        bridge.count(stats, origin, str(Target(event.host, event.port, event.socket_path)))
    bridge.channel_open()
    pump.flush_soon()  # with the other connects that completed in this turn
