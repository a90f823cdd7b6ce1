"""``listen()``: an SSH server in-process, on asyncio.

Each accepted socket is first admitted or refused on its address alone
(:mod:`hashike.aio.admission`: MaxStartups' random early drop,
PerSourceMaxStartups, PerSourcePenalties); only then does it get a
:class:`ServerConnection` core and a pump, so a flood of refused sockets costs
no connection state (the DHEat class, CVE-2002-20001). The runtime enforces
what needs a clock or a global view: LoginGraceTime (an event-loop timer,
never a signal) and those limits. Authentication requests are answered by
:mod:`hashike.aio.server_auth`; once a connection is authenticated, no limit
on startups applies to it any more.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from hashike.config.policy import ForwardingPolicy, SessionPolicy
from hashike.config.srclimit import PenaltyPolicy
from hashike.proto.auth import SERVER_METHODS
from hashike.proto.certs import Certificate
from hashike.proto.config import TransportConfig
from hashike.proto.connection import ServerConnection
from hashike.proto.constants import DisconnectReason, OpenFailureReason
from hashike.proto.events import (
    AuthBanner,
    AuthFailed,
    AuthPrompts,
    AuthSucceeded,
    ChannelOpenRequested,
    DebugReceived,
    Disconnected,
    ExtInfoReceived,
    HostKeyReceived,
    KexCompleted,
    PasswordAuthRequested,
    PeerVersionReceived,
    PongReceived,
    PublicKeyAccepted,
    PublicKeyAuthRequested,
    ServiceAccepted,
    UnimplementedReceived,
)
from hashike.proto.hostkey import HostKeySigner, PrivateKey
from hashike.proto.text import escape_text

from .admission import Admission, drop
from .forward import address_text, connect_target
from .keepalive import Keepalive, KeepaliveOptions
from .keys_command import KeysCommand
from .listen import LISTEN_BACKLOG, BindError, bind_all
from .privsep import Children
from .pump import CorePump, Route
from .remote_server import RemoteForwards
from .server_auth import DEFAULT_AUTHORIZED_KEYS_FILES, ConnectionAuth, UserAuthenticator, login_key_options
from .server_status import Snapshot
from .session_server import open_session
from .stats import ForwardStats

__all__ = ["BindError", "Server", "ServerOptions", "listen"]

log = logging.getLogger("hashike.server")


_PASSWORD_METHODS = ("password", "keyboard-interactive")
CHILD_CLOSE_TIMEOUT = 5.0  # seconds a stopped PrivilegeSeparation child gives its DISCONNECT to leave
CHILD_STOP_TIMEOUT = 10.0  # seconds a stopping server waits for those children to end


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """How a server behaves. The authentication fields are sshd_config's
    (see :mod:`hashike.config.sshd_config` and :mod:`hashike.aio.server_auth`):
    ``auth_methods`` offered, of "publickey", "password" and
    "keyboard-interactive" (the password ones need ``password_file``);
    ``allow_users`` patterns, None for only the user the server runs as;
    ``banner`` text sent before the first authentication reply.
    ``sessions``: MaxSessions, PermitTTY and AcceptEnv (shells and commands)."""

    transport: TransportConfig = field(default_factory=TransportConfig)
    login_grace_time: float = 120.0  # sshd's default; 0 means no limit
    max_startups: tuple[int, int, int] = (10, 30, 100)  # sshd's default
    per_source_max_startups: int | None = None  # no limit
    per_source_net_block_size: tuple[int, int] = (32, 128)
    penalties: PenaltyPolicy | None = None  # off (see hashike.config.srclimit)
    penalty_exempt: tuple[str, ...] = ()
    auth_methods: tuple[str, ...] = ("publickey",)
    max_auth_tries: int = 6  # sshd's default
    authorized_keys_files: tuple[str, ...] = DEFAULT_AUTHORIZED_KEYS_FILES
    password_file: str | None = None
    trusted_user_ca_keys: str | None = None  # TrustedUserCAKeys
    authorized_principals_file: str | None = None  # AuthorizedPrincipalsFile
    host_certificates: tuple[Certificate, ...] = ()  # HostCertificate
    revoked_keys: str | None = None  # RevokedKeys
    keys_command: KeysCommand | None = None  # AuthorizedKeysCommand(User)
    allow_users: tuple[str, ...] | None = None
    banner: str | None = None
    forwarding: ForwardingPolicy = field(default_factory=ForwardingPolicy)
    sessions: SessionPolicy = field(default_factory=SessionPolicy)
    keepalive: KeepaliveOptions = field(default_factory=KeepaliveOptions)  # ClientAlive*, TCPKeepAlive
    # PrivilegeSeparation: a login is the OS account of its name, served by a
    # process of its own running as that account (aio/privsep.py).
    privilege_separation: bool = False


class _ServerPump(CorePump[ServerConnection]):
    unhandled_open = (OpenFailureReason.UNKNOWN_CHANNEL_TYPE, "unknown channel type")

    def __init__(self, server: Server, core: ServerConnection | None = None) -> None:
        options = server.options
        super().__init__(
            core
            or ServerConnection(
                options.transport,
                host_keys=server.host_keys,
                rng=os.urandom,
                auth_methods=options.auth_methods,
                max_auth_tries=options.max_auth_tries,
                banner=options.banner,
                host_certificates=options.host_certificates,
            )
        )
        self._server = server
        self.source: str | None = None  # the client's address, for the per-source limits
        self._grace: asyncio.TimerHandle | None = None
        self._penalty: str | None = None  # set when LoginGraceTime runs out, or we fail
        self._auth = ConnectionAuth(server.users, self.core, self.process)
        self.remote_forwards = RemoteForwards(self, options.forwarding, self._take_over)  # -R (RFC 4254 §7.1)
        # The client's -L: every onward direct-tcpip connection, for hashiked's status.
        self.onward = ForwardStats("local", "", "")
        self.started = time.time()
        self.tcp_keepalive = options.keepalive.tcp
        # ClientAliveInterval/CountMax, once logged in (sshd's server loop).
        self.keepalive = Keepalive(self, options.keepalive, self._client_dead)
        self.open_handlers.update(
            {
                "session": self._open_session,
                "direct-tcpip": self._open_direct_tcpip,
                "direct-streamlocal@openssh.com": self._open_direct_streamlocal,
            }
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server.connections.add(self)
        if self.core.authenticated:
            return  # in a PrivilegeSeparation child: the connection goes on
        log.debug("Connection from %s port %s", *self._peer())
        grace = self._server.options.login_grace_time
        if grace > 0:
            self._grace = asyncio.get_running_loop().call_later(grace, self._grace_expired)

    def _grace_expired(self) -> None:
        host, port = self._peer()
        log.info("Timeout before authentication for %s port %s", host, port)
        self._penalty = "grace-exceeded"
        self.close("Timeout before authentication")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._grace is not None:
            self._grace.cancel()
        self._auth.close()
        if exc is not None and not isinstance(exc, OSError):
            self._penalty = "crash"  # a handler of ours failed on what this peer sent
        self._server.forget(self, self._penalty_kind())
        super().connection_lost(exc)

    def _penalty_kind(self) -> str | None:
        """What PerSourcePenalties charges for how this connection ended."""
        core = self.core
        if self._penalty is not None or core.authenticated:
            return self._penalty
        if core.auth_failures:
            return "authfail"
        return "noauth" if core.auth_username is None else None

    def _authenticated(self) -> None:
        # LoginGraceTime and MaxStartups are about connections that have not
        # logged in yet: this one has.
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._server.authenticated(self)
        if self._server.children is not None:
            self._hand_off(self._server.children)
        else:
            self.keepalive.start()

    def _hand_off(self, children: Children) -> None:
        """PrivilegeSeparation: the rest of this connection is a process's of
        its own, running as the user (aio/privsep.py). Nothing of the
        connection protocol has been read yet; the reply to the successful
        request waits in the core, which the child inherits."""
        transport = self.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        if transport is None or sock is None or transport.get_write_buffer_size() or self._ssh_write_paused:
            # Bytes asyncio still holds would not reach the child: a client
            # that has not read what we sent before it logged in goes.
            self.drop("client did not read before authentication")
            return
        username = self.core.auth_username or ""

        def prepare(signers: Sequence[HostKeySigner]) -> None:
            self.core.replace_host_keys(signers)
            self._server.become_child()

        if children.hand_off(sock, username, prepare, self._continue_in_child, self._server.snapshot):
            self.detach()
        else:
            self.close("internal error")

    async def _continue_in_child(self, sock: socket.socket) -> None:
        """In the child, as the user: serve the connection on this loop until it ends."""
        pump = _ServerPump(self._server, self.core)
        pump.source, pump.started, pump._auth.login = self.source, self.started, self._auth.login
        await asyncio.get_running_loop().connect_accepted_socket(lambda: pump, sock)
        pump.keepalive.start()
        try:
            await asyncio.shield(pump.closed)
        except asyncio.CancelledError:  # SIGTERM: a worker stopping or done draining
            pump.close("server shutting down")
            await asyncio.wait([pump.closed], timeout=CHILD_CLOSE_TIMEOUT)

    def detach(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
        self._auth.close()
        super().detach()
        self._server.forget(self)

    def _client_dead(self) -> None:
        # sshd's line; dropping the connection frees its -R listeners now.
        host, port = self._peer()
        user = escape_text(self.core.auth_username or "")
        log.info("Timeout, client not responding from user %s %s port %s", user, host, port)
        self.drop("Timeout, client not responding")

    def _take_over(self, address: str, port: int) -> bool:
        """RemoteForwardTakeover: an earlier connection of the same user and
        key that holds this forward gives it up (it has likely died unseen).
        True when another process (a hashiked worker) may be giving it up."""
        login = self._auth.login
        if login is None:
            return False
        who = (login[0], login[1].fingerprint())
        self._server.surrender(who, address, port, asking=self)
        elsewhere = self._server.take_over_elsewhere
        return elsewhere is not None and elsewhere(who, address, port)

    def side_routes(self) -> dict[type, Route]:
        ignore = self.ignore
        return {
            PeerVersionReceived: lambda e: log.debug(
                "Remote protocol version 2.0, remote software version %s", escape_text(e.software)
            ),
            HostKeyReceived: ignore,  # the client's concern
            ServiceAccepted: ignore,
            ExtInfoReceived: ignore,
            DebugReceived: ignore,
            UnimplementedReceived: ignore,
            PongReceived: ignore,
            AuthBanner: ignore,
            AuthFailed: ignore,
            PublicKeyAccepted: ignore,
            AuthPrompts: ignore,
            PublicKeyAuthRequested: self._auth_requested,
            PasswordAuthRequested: self._auth_requested,
            AuthSucceeded: lambda e: self._authenticated(),
        }

    def kex_completed(self, event: KexCompleted) -> None:
        log.debug("%s", event.negotiated.describe())

    def disconnected(self, event: Disconnected) -> None:
        self.remote_forwards.close()  # the -R listeners go with the connection
        # sshd's lines (packet.c): the peer's DISCONNECT with its reason code,
        # at INFO for a client's ordinary exit and ERROR otherwise; a socket
        # closed without one; our own DISCONNECT (debug for an ordinary close).
        host, port = self._peer()
        text = escape_text(event.description)
        ordinary = event.reason == DisconnectReason.BY_APPLICATION
        if event.eof:
            log.info("Connection closed by %s port %s", host, port)
        elif event.by_peer:
            level = logging.INFO if ordinary else logging.ERROR
            log.log(level, "Received disconnect from %s port %s:%d: %s", host, port, event.reason, text)
        else:
            level = logging.DEBUG if ordinary else logging.INFO
            log.log(level, "Disconnecting %s port %s: %s", host, port, text)

    def _peer(self) -> tuple[str, int]:
        host, port = (self.peername or ("?", 0))[:2]
        return host, port

    def _auth_requested(self, event: PublicKeyAuthRequested | PasswordAuthRequested) -> None:
        self._auth.handle(event, self._peer())

    # RFC 4254 §6.1 sessions (up to MaxSessions), RFC 4254 §7.2 direct-tcpip
    # and PROTOCOL §2.4 direct-streamlocal within the forwarding policy;
    # every other type is refused as unknown (CorePump.unhandled_open).

    def _open_session(self, event: ChannelOpenRequested) -> None:
        open_session(self, event, self._server.options.sessions)

    def _open_direct_tcpip(self, event: ChannelOpenRequested) -> None:
        host, port = self._peer()
        if event.host is None or event.port is None:
            self.refuse_open(event)
            return
        allowed = self._server.options.forwarding.allows_local(
            login_key_options(self.core), event.host, event.port
        )
        # The originator is the one the request names (RFC 4254 §7.2: the
        # client that connected to ssh's -L), as sshd logs it.
        if event.orig_host is not None and event.orig_port is not None:
            host, port = event.orig_host, event.orig_port
        self._open_forward(event, allowed, "local", f"{event.host} port {event.port}", host, port)

    def _open_direct_streamlocal(self, event: ChannelOpenRequested) -> None:
        if event.socket_path is None:
            self.refuse_open(event)
            return
        allowed = self._server.options.forwarding.allows_streamlocal(login_key_options(self.core))
        host, port = self._peer()
        self._open_forward(event, allowed, "streamlocal", f"path {event.socket_path}", host, port)

    def _open_forward(
        self, event: ChannelOpenRequested, allowed: bool, kind: str, target: str, host: str, port: int
    ) -> None:
        if not allowed:
            # sshd's wording, so that log readers find it where they expect.
            log.info(
                "refused %s port forward: originator %s port %s, target %s",
                kind, escape_text(host), port, escape_text(target),
            )  # fmt: skip
            self.core.channels.reject_open(
                event.channel_id, OpenFailureReason.ADMINISTRATIVELY_PROHIBITED, "open failed"
            )
            return
        self._spawn(connect_target(self, event, stats=self.onward, origin=address_text((host, port))))


class _Gate(asyncio.Protocol):
    """A socket's protocol until it is admitted: nothing of the connection
    exists yet. Admitted, the socket is handed to its pump before any byte
    is read."""

    def __init__(self, server: Server) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        pump = self._server.admit(transport)
        if pump is not None:
            transport.set_protocol(pump)
            pump.connection_made(transport)


class Server:
    """A listening hashike server. ``port`` is the port actually bound.

    ``connections`` holds every open connection; ``startups`` the ones not
    authenticated yet, which MaxStartups counts.

    Raises ValueError for options no connection could use: an unknown
    method, a password method without a password file, max_auth_tries < 1."""

    def __init__(self, host_keys: Sequence[PrivateKey], options: ServerOptions) -> None:
        # Checked here, once, rather than failing in every connection's core.
        unknown = [m for m in options.auth_methods if m not in SERVER_METHODS]
        if unknown:
            raise ValueError(f"unsupported authentication methods: {', '.join(unknown)}")
        if options.password_file is None and any(m in _PASSWORD_METHODS for m in options.auth_methods):
            raise ValueError("password authentication needs a password file")
        if options.max_auth_tries < 1:
            raise ValueError("max_auth_tries must be at least 1")
        self.host_keys = tuple(host_keys)
        self.options = options
        self.users = UserAuthenticator(
            allow_users=options.allow_users,
            authorized_keys_files=options.authorized_keys_files,
            password_file=options.password_file,
            trusted_user_ca_keys=options.trusted_user_ca_keys,
            revoked_keys=options.revoked_keys,
            keys_command=options.keys_command,
            authorized_principals_file=options.authorized_principals_file,
            many_accounts=options.privilege_separation,
        )
        self.connections: set[_ServerPump] = set()
        self.startups: set[_ServerPump] = set()
        self.admission = Admission(
            options.max_startups,
            options.per_source_max_startups,
            options.per_source_net_block_size,
            options.penalties,
            options.penalty_exempt,
        )
        # PrivilegeSeparation: the processes serving authenticated connections.
        self.children = Children(self.host_keys) if options.privilege_separation else None
        # The status snapshot (aio/server_stats.py), set by whoever serves
        # status; a PrivilegeSeparation child answers its parent with it.
        self.snapshot: Snapshot | None = None
        self._servers: list[asyncio.Server] = []
        # RemoteForwardTakeover beyond this process: a hashiked worker asks
        # the others (hashike.cli.worker_forwards); True if it asked.
        self.take_over_elsewhere: Callable[[tuple[str, str], str, int], bool] | None = None

    @property
    def sockets(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for srv in self._servers for sock in srv.sockets]

    @property
    def port(self) -> int:
        return self.sockets[0][1]

    def admit(self, transport: asyncio.Transport) -> _ServerPump | None:
        """The pump for a new socket, or None when admission refuses it
        (logged in sshd's words; the client is told in one line)."""
        peer = transport.get_extra_info("peername")
        if not isinstance(peer, tuple):  # not an IP socket: nothing to limit by
            return self._start(None)
        now = asyncio.get_running_loop().time()
        refusal = self.admission.refusal(peer[0], len(self.startups), now)
        if refusal is None:
            return self._start(peer[0])
        drop(transport, refusal, len(self.startups))
        return None

    def _start(self, host: str | None) -> _ServerPump:
        pump = _ServerPump(self)
        pump.source = host
        self.startups.add(pump)
        if host is not None:
            self.admission.started(host)
        return pump

    def authenticated(self, pump: _ServerPump) -> None:
        """``pump`` logged in: it no longer counts as a startup."""
        if pump in self.startups:
            self.startups.discard(pump)
            if pump.source is not None:
                self.admission.ended(pump.source)

    def surrender(
        self, who: tuple[str, str], address: str, port: int, asking: _ServerPump | None = None
    ) -> None:
        """RemoteForwardTakeover: every connection but ``asking`` of login
        ``who`` (user, key fingerprint) gives up its forward (address, port)."""
        for other in list(self.connections):
            login = other._auth.login
            if other is asking or login is None or (login[0], login[1].fingerprint()) != who:
                continue
            if other.remote_forwards.surrender((address, port)):
                host, peer_port = other._peer()
                log.info(
                    "remote forward %s port %d taken over from an earlier connection of user %s %s port %s",
                    escape_text(address), port, escape_text(who[0]), host, peer_port,
                )  # fmt: skip

    def become_child(self) -> None:
        """In a PrivilegeSeparation child, before it drops root: it serves
        one connection, so the server's keys, other connections, listeners
        and children are not its own; nothing is reported to a supervisor."""
        options = self.options
        self.host_keys = ()
        self.connections.clear()
        self.startups.clear()
        self._servers.clear()
        self.children = None
        self.take_over_elsewhere = None
        self.admission = Admission(options.max_startups, None, options.per_source_net_block_size, None, ())

    def forget(self, pump: _ServerPump, penalty: str | None = None) -> None:
        """``pump``'s connection ended; charge ``penalty`` to its source."""
        self.authenticated(pump)
        self.connections.discard(pump)
        if penalty is not None and pump.source is not None:
            self.admission.penalise(pump.source, penalty, asyncio.get_running_loop().time())

    async def start(self, endpoints: Sequence[tuple[str, int]], *, optional: Collection[str] = ()) -> None:
        """Listen on every (host, port); port 0 picks one free port for all;
        hosts in ``optional`` this machine lacks are skipped (see bind_all).

        Raises BindError naming the address that failed; nothing stays bound."""
        self._servers += await bind_all(lambda: _Gate(self), endpoints, optional=optional)

    async def adopt(self, sockets: Sequence[socket.socket]) -> None:
        """Serve on listening TCP sockets bound by someone else (systemd's
        socket activation, see :mod:`hashike.aio.service`)."""
        loop = asyncio.get_running_loop()
        for sock in sockets:
            server = await loop.create_server(lambda: _Gate(self), sock=sock, backlog=LISTEN_BACKLOG)
            self._servers.append(server)

    async def serve_socket(self, sock: socket.socket) -> None:
        """Serve one connection accepted by someone else (a worker of
        hashiked's supervisor, :mod:`hashike.cli.workers`)."""
        await asyncio.get_running_loop().connect_accepted_socket(lambda: _Gate(self), sock)

    def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for pump in list(self.connections):
            pump.close("server shutting down")
        if self.children is not None:
            self.children.terminate()

    async def wait_closed(self) -> None:
        for srv in self._servers:
            await srv.wait_closed()
        if self.children is not None:
            await self.children.wait(CHILD_STOP_TIMEOUT)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def listen(
    host: str | Sequence[str] = "127.0.0.1",
    port: int = 0,
    *,
    host_keys: Sequence[PrivateKey],
    options: ServerOptions | None = None,
) -> Server:
    """Start an SSH server on ``host`` (one address or several) and ``port``
    (0 picks a free one; see ``Server.port``). Use as ``async with``."""
    server = Server(host_keys, options or ServerOptions())
    await server.start([(h, port) for h in ([host] if isinstance(host, str) else host)])
    return server
