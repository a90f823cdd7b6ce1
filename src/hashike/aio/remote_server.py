"""hashiked's side of remote forwarding (RFC 4254 §7.1, the client's ``-R``).

Theory of operation. A ``tcpip-forward`` request names an address and a
port. It is checked as sshd checks it: forwarding must be on for this login
and the port unprivileged unless we run as root ("disabled"), then
PermitListen and the key's ``permitlisten`` must cover the address and port
as the client sent them ("denied"). Where the listener binds is
GatewayPorts' decision (:meth:`ForwardingPolicy.remote_bind_hosts`). Binding
happens in a task, and the reply names the request (``request_id``), so the
core still sends replies in request order (§4) whatever finishes first; for
port 0 the reply carries the port bound. Each connection a listener accepts
opens a ``forwarded-tcpip`` channel with the address as the client asked for
it, the port bound and the originator's address, and is bridged to it. The
listeners go with ``cancel-tcpip-forward`` or with the connection, and one
connection may hold at most :data:`MAX_LISTENERS` of them.

RemoteForwardTakeover (a hashike extension): before a TCP listener for a
fixed port is bound, ``take_over`` (the server's) cancels the same forward
held by an earlier connection of the same user and key, so a client that
reconnects before ClientAlive* declared its old connection dead gets its
port back rather than "remote port forwarding failed". When the holder may
be another process (a hashiked worker, :mod:`hashike.cli.worker_forwards`),
a port still in use is bound again, a bounded number of times, while that
process closes it.

``streamlocal-forward@openssh.com`` (OpenSSH PROTOCOL §2.4) does the same for
a Unix socket: AllowStreamLocalForwarding must allow it; the socket is
created under StreamLocalBindMask as umask, an existing file is removed first
only with StreamLocalBindUnlink, and each connection opens a
``forwarded-streamlocal@openssh.com`` channel naming the path. As with sshd,
the socket file stays when the listener goes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable

from hashike.config.policy import EVERY_ADDRESS, LOOPBACK, ForwardingPolicy
from hashike.proto.channel_types import encode_streamlocal
from hashike.proto.connection import ServerConnection
from hashike.proto.errors import ChannelOpenFailed, DecodeError
from hashike.proto.events import GlobalRequestReceived
from hashike.proto.forwarding import decode_streamlocal_forward, decode_tcpip_forward, encode_allocated_port
from hashike.proto.text import escape_text

from .bridge import SocketBridge
from .forward import address_text
from .listen import LISTEN_BACKLOG, BindError, bind_all
from .pump import CorePump
from .server_auth import login_key_options
from .stats import ForwardStats

__all__ = ["MAX_LISTENERS", "RemoteForwards"]

log = logging.getLogger("hashike.server")

# tcpip-forward listeners (bound or being bound) one connection may hold.
MAX_LISTENERS = 64
# RemoteForwardTakeover from another hashiked worker: binds tried, and the
# pause between them (at most 2 s before "cannot listen to port").
TAKEOVER_BINDS = 40
TAKEOVER_PAUSE = 0.05


class _ForwardedBridge(SocketBridge):
    """One connection accepted on a remote-forward listener."""

    def __init__(self, pump: CorePump[ServerConnection], address: str, stats: ForwardStats) -> None:
        super().__init__(pump)
        self._address = address
        self._listener_stats = stats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        bound = transport.get_extra_info("sockname")
        if self.pump.core.closed:
            transport.close()
            return
        try:
            if isinstance(bound, tuple):
                # RFC 4254 §7.2: the address and port that were connected,
                # then the originator's.
                channel_id = self.channels.open_forwarded_tcpip(
                    self._address, int(bound[1]), str(peer[0]), int(peer[1])
                )
            else:  # PROTOCOL §2.4: the path the client asked for
                extra = encode_streamlocal(self._address, direct=False)
                channel_id = self.channels.open("forwarded-streamlocal@openssh.com", extra)
        except ChannelOpenFailed as exc:  # too many channels: this one only
            log.info("forwarded connection to %s: %s", self._address, exc)
            transport.close()
            return
        self.bind(channel_id)
        self.count(self._listener_stats, address_text(peer))
        self.pump.flush_soon()  # with the other connections accepted in this turn


class RemoteForwards:
    """The tcpip-forward listeners of one connection; registers its handlers
    on ``pump``. :meth:`close` when the connection ends."""

    def __init__(
        self,
        pump: CorePump[ServerConnection],
        policy: ForwardingPolicy,
        take_over: Callable[[str, int], bool] | None = None,
    ) -> None:
        self._pump = pump
        self._policy = policy
        self._take_over = take_over
        # By (address as asked, port bound), or by socket path.
        self._listeners: dict[tuple[str, int] | str, list[asyncio.Server]] = {}
        self._stats: dict[tuple[str, int] | str, ForwardStats] = {}  # for hashiked's status
        self._binding = 0
        pump.global_handlers["tcpip-forward"] = self._forward
        pump.global_handlers["cancel-tcpip-forward"] = self._cancel
        pump.global_handlers["streamlocal-forward@openssh.com"] = self._forward_streamlocal
        pump.global_handlers["cancel-streamlocal-forward@openssh.com"] = self._cancel_streamlocal

    @property
    def ports(self) -> list[tuple[str, int]]:
        """(address as asked, port bound) of every TCP listener."""
        return [key for key in self._listeners if isinstance(key, tuple)]

    @property
    def paths(self) -> list[str]:
        """The path of every Unix socket listener."""
        return [key for key in self._listeners if isinstance(key, str)]

    def stats(self) -> list[ForwardStats]:
        """The counters of every listener held (its open connections, bytes)."""
        return [self._stats[key] for key in self._listeners if key in self._stats]

    def close(self) -> None:
        for key in list(self._listeners):
            self._drop(key)

    def _drop(self, key: tuple[str, int] | str | None) -> bool:
        """Close the listener for ``key``; False if none is held."""
        if key is None:
            return False
        servers = self._listeners.pop(key, [])
        self._stats.pop(key, None)
        for server in servers:
            server.close()  # the listening sockets close now: the port is free
        return bool(servers)

    def surrender(self, key: tuple[str, int]) -> bool:
        """Give up the forward for (address as asked, port) to a newer
        connection (RemoteForwardTakeover); False if this one holds none."""
        return self._drop(key)

    def _reply(self, event: GlobalRequestReceived, ok: bool, extra: bytes = b"") -> None:
        if event.want_reply:
            self._pump.core.channels.reply_global_request(ok, extra, request_id=event.request_id)
            self._pump.flush()

    def _forward(self, event: GlobalRequestReceived) -> None:
        try:
            request = decode_tcpip_forward(event.extra)
        except DecodeError:
            request = None
        if request is None:
            self._reply(event, False)
            return
        address, port = request
        log.debug("server_input_global_request: tcpip-forward listen %s port %d", address, port)
        if not self._allowed(event, address, port):
            host, peer_port = (self._pump.peername or ("?", 0))[:2]
            # sshd's words for a refused -R.
            log.info(
                "Received request from %s port %d to remote forward to host %s port %d, "
                "but the request was denied.",
                host, peer_port, address, port,
            )  # fmt: skip
            self._reply(event, False)
            return
        self._binding += 1
        self._pump._spawn(self._bind(event, address, port))

    def _room(self) -> bool:
        if len(self._listeners) + self._binding >= MAX_LISTENERS:
            log.info("remote forward: more than %d listeners on one connection", MAX_LISTENERS)
            return False
        return True

    def _allowed(self, event: GlobalRequestReceived, address: str, port: int) -> bool:
        key_options = login_key_options(self._pump.core)
        if not self._room():
            return False
        # sshd: port 0 without a reply would leave the client not knowing the port.
        if port == 0 and not event.want_reply:
            return False
        return self._policy.allows_remote(key_options, port, os.geteuid()) and self._policy.permits_listen(
            key_options, address, port
        )

    async def _bind(self, event: GlobalRequestReceived, address: str, port: int) -> None:
        hosts = self._policy.remote_bind_hosts(address)
        elsewhere = False
        if port != 0 and self._policy.remote_forward_takeover and self._take_over is not None:
            elsewhere = self._take_over(address, port)
        stats = ForwardStats("remote", address, "client")  # the listen address, once bound
        try:
            servers = await self._listen(address, hosts, port, stats, TAKEOVER_BINDS if elsewhere else 1)
        except BindError as exc:
            log.info("bind [%s]:%d: %s", exc.host, exc.port, os.strerror(exc.errno or 0))
            log.info("channel_setup_fwd_listener_tcpip: cannot listen to port: %d", port)
            self._reply(event, False)
            return
        finally:
            self._binding -= 1
        if self._pump.core.closed:  # the connection went while we bound
            for server in servers:
                server.close()
            return
        bound = int(servers[0].sockets[0].getsockname()[1])
        self._listeners[(address, bound)] = servers
        stats.listen = ", ".join(address_text(s.getsockname()) for server in servers for s in server.sockets)
        self._stats[(address, bound)] = stats
        log.debug("Local forwarding listening on %s port %d.", address, bound)
        self._reply(event, True, encode_allocated_port(bound) if port == 0 else b"")

    async def _listen(
        self, address: str, hosts: tuple[str, ...], port: int, stats: ForwardStats, tries: int
    ) -> list[asyncio.Server]:
        """bind_all, tried again while the port is in use, ``tries`` times
        in all: another process giving the port up closes it when it can."""
        for _ in range(tries - 1):
            try:
                return await self._listen_once(address, hosts, port, stats)
            except BindError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
            await asyncio.sleep(TAKEOVER_PAUSE)
        return await self._listen_once(address, hosts, port, stats)

    async def _listen_once(
        self, address: str, hosts: tuple[str, ...], port: int, stats: ForwardStats
    ) -> list[asyncio.Server]:
        return await bind_all(
            lambda: _ForwardedBridge(self._pump, address, stats),
            [(host, port) for host in hosts],
            # The IPv6 half is skipped on a machine without IPv6.
            optional=("::1", "::") if hosts in (LOOPBACK, EVERY_ADDRESS) else (),
        )

    def _cancel(self, event: GlobalRequestReceived) -> None:
        try:
            request = decode_tcpip_forward(event.extra)
        except DecodeError:
            request = None
        self._reply(event, self._drop(request))

    def _forward_streamlocal(self, event: GlobalRequestReceived) -> None:
        try:
            path = decode_streamlocal_forward(event.extra)
        except DecodeError:
            self._reply(event, False)
            return
        log.debug("server_input_global_request: streamlocal-forward listen path %s", escape_text(path))
        if not self._room():
            self._reply(event, False)
            return
        if not self._policy.allows_streamlocal(login_key_options(self._pump.core), "remote"):
            log.info("Server has disabled streamlocal forwarding.")  # what sshd tells the client
            self._reply(event, False)
            return
        try:
            sock = self._unix_listener(path)
        except OSError as exc:
            log.error("unix_listener: cannot bind to path %s: %s", escape_text(path), exc.strerror or exc)
            self._reply(event, False)
            return
        self._binding += 1
        self._pump._spawn(self._serve_socket(event, path, sock))

    def _unix_listener(self, path: str) -> socket.socket:
        """Bind ``path`` as sshd does: the old file removed first only with
        StreamLocalBindUnlink (asyncio would remove a stale socket
        unasked), the socket created under StreamLocalBindMask."""
        if self._policy.streamlocal_bind_unlink:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("unlink(%s): %s", escape_text(path), exc.strerror)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(self._policy.streamlocal_bind_mask)  # synchronous: no other task runs
        try:
            sock.bind(path)
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_mask)
        return sock

    async def _serve_socket(self, event: GlobalRequestReceived, path: str, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        stats = ForwardStats("remote", path, "client")
        try:
            server = await loop.create_unix_server(
                lambda: _ForwardedBridge(self._pump, path, stats), sock=sock
            )
        finally:
            self._binding -= 1
        if self._pump.core.closed:
            server.close()
            return
        self._listeners[path] = [server]
        self._stats[path] = stats
        log.debug("Local forwarding listening on path %s.", escape_text(path))
        self._reply(event, True)

    def _cancel_streamlocal(self, event: GlobalRequestReceived) -> None:
        try:
            path: str | None = decode_streamlocal_forward(event.extra)
        except DecodeError:
            path = None
        self._reply(event, self._drop(path))
