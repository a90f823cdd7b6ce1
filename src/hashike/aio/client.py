"""``connect()``: an SSH client connection on asyncio.

The host-key decision is the caller's: ``check_host_key`` is awaited with the
server's key and must return True to go on. There is no default that
accepts everything (security first); the CLI passes its known_hosts check.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

from hashike.proto.config import TransportConfig
from hashike.proto.connection import ClientConnection
from hashike.proto.constants import DisconnectReason, OpenFailureReason
from hashike.proto.errors import AuthenticationFailed, ConnectionClosed, HostKeyNotVerified
from hashike.proto.events import (
    AuthBanner,
    AuthFailed,
    AuthPrompts,
    AuthSucceeded,
    ChannelOpenRefused,
    ChannelOpenRequested,
    DebugReceived,
    Disconnected,
    Event,
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
from hashike.proto.hostkey import PublicKey
from hashike.proto.kex.negotiate import Negotiated
from hashike.proto.text import TERMINAL_CONTROLS, escape_text

from .bridge import SocketBridge
from .client_auth import AuthSettings, authenticate
from .forward import ForwardListener, Target, forward_local, open_channel
from .keepalive import Keepalive, KeepaliveOptions
from .link import Link
from .pump import CorePump, Route
from .remote import RemoteForwards, RemoteListener
from .session_client import Process, RunResult, SessionHandler, start_process
from .session_client import run as run_command
from .socks import HANDSHAKE_TIMEOUT as SOCKS_HANDSHAKE_TIMEOUT
from .socks import SocksListener, forward_socks
from .tunnel import open_tunnel, run_proxy_command

__all__ = ["HostKeyCheck", "SSHClient", "connect", "received_disconnect"]

log = logging.getLogger("hashike.client")

# RFC 4254 §5.1 reason codes, as ssh prints them.
_OPEN_FAILURES: dict[int, str] = {
    OpenFailureReason.ADMINISTRATIVELY_PROHIBITED: "administratively prohibited",
    OpenFailureReason.CONNECT_FAILED: "connect failed",
    OpenFailureReason.UNKNOWN_CHANNEL_TYPE: "unknown channel type",
    OpenFailureReason.RESOURCE_SHORTAGE: "resource shortage",
}

HostKeyCheck = Callable[[PublicKey], "bool | Awaitable[bool]"]

# ssh's words when a server opens a channel the client did not ask for.
_UNREQUESTED_OPENS = {
    "x11": "Warning: ssh server tried X11 forwarding.",
    "auth-agent@openssh.com": "Warning: ssh server tried agent forwarding.",
}


class _ClientPump(CorePump[ClientConnection]):
    def __init__(
        self,
        config: TransportConfig,
        check_host_key: HostKeyCheck,
        log: Callable[[str], None] | None,
        auth: AuthSettings | None,
        keepalive: KeepaliveOptions | None = None,
    ) -> None:
        super().__init__(ClientConnection(config, rng=os.urandom))
        keepalive = keepalive or KeepaliveOptions()
        self.tcp_keepalive = keepalive.tcp
        # ServerAliveInterval/CountMax, started once logged in, as ssh's client loop.
        self.keepalive = Keepalive(self, keepalive, lambda: self.drop("Timeout, server not responding"))
        self._check = check_host_key
        self._auth = auth
        self._auth_events: asyncio.Queue[Event] = asyncio.Queue()
        self.auth_method: str | None = None
        self._log = log or (lambda _line: None)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.server_version = ""
        self.negotiated: Negotiated | None = None
        self.remote_forwards = RemoteForwards(self)  # -R (RFC 4254 §7.1)

    def side_routes(self) -> dict[type, Route]:
        ignore, queue = self.ignore, self._queue_auth_event
        return {
            PeerVersionReceived: self._on_version,
            HostKeyReceived: self._on_host_key,
            ServiceAccepted: self._on_service_accepted,
            ExtInfoReceived: ignore,
            DebugReceived: ignore,
            UnimplementedReceived: ignore,
            PongReceived: ignore,
            AuthBanner: self._on_banner,
            AuthFailed: queue,
            AuthSucceeded: queue,
            PublicKeyAccepted: queue,
            AuthPrompts: queue,
            PublicKeyAuthRequested: ignore,  # the server's concern
            PasswordAuthRequested: ignore,
        }

    def _queue_auth_event(self, event: Event) -> None:
        self._auth_events.put_nowait(event)  # the authentication driver awaits them

    def _on_version(self, event: PeerVersionReceived) -> None:
        self.server_version = event.software
        self._log(f"Remote protocol version 2.0, remote software version {escape_text(event.software)}")

    def _on_host_key(self, event: HostKeyReceived) -> None:
        self._log(f"Server host key: {event.key.key_type} {event.fingerprint}")
        self._spawn(self._decide(event.key))

    def kex_completed(self, event: KexCompleted) -> None:
        self.negotiated = event.negotiated
        # Every exchange, rekeys included, as ssh -v logs each one's kex lines.
        self._log(event.negotiated.describe())

    def _on_service_accepted(self, event: ServiceAccepted) -> None:
        if self._auth is None:
            if not self.ready.done():
                self.ready.set_result(None)
        else:
            self._spawn(self._authenticate(self._auth))

    def _on_banner(self, event: AuthBanner) -> None:
        if self._auth is not None:
            # ssh prints a banner's newlines, returns and tabs, and escapes
            # every other control (utf8.c): no ESC sequence reaches the terminal.
            self._auth.notice(escape_text(event.message.rstrip("\n"), keep=TERMINAL_CONTROLS))

    def disconnected(self, event: Disconnected) -> None:
        if self.ready.done():
            return
        if event.reason == DisconnectReason.HOST_KEY_NOT_VERIFIABLE and not event.by_peer:
            self.ready.set_exception(HostKeyNotVerified(event.description))
        elif event.by_peer and not event.eof:
            peer = "{} port {}".format(*(self.peername or ("?", 0))[:2])
            line = received_disconnect(peer, event)
            self.ready.set_exception(ConnectionClosed(line, peer=peer))
        else:
            who = "by remote host" if event.by_peer else "locally"
            text = escape_text(event.description)
            self.ready.set_exception(ConnectionClosed(f"Connection closed {who}: {text}"))

    def refuse_open(self, event: ChannelOpenRequested) -> None:
        """A channel the server opened that we never asked for: refused, as
        ssh refuses it, with ssh's warning for the kinds a malicious server
        would try. The peer's channel type is not echoed: it is the peer's
        text, and a log line is no place for it."""
        warning = _UNREQUESTED_OPENS.get(event.kind)
        if event.kind == "forwarded-tcpip":
            warning = f"WARNING: Server requests forwarding for unknown listen_port {event.port}"
        if warning is not None:
            log.warning("%s", warning)
        super().refuse_open(event)

    async def _authenticate(self, auth: AuthSettings) -> None:
        try:
            self.auth_method = await authenticate(self.core, self._auth_events, self.process, auth)
        except AuthenticationFailed as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)
            self.close("authentication failed")
            return
        except asyncio.CancelledError:
            raise
        if not self.ready.done():
            self.ready.set_result(None)

    def open_refused(self, event: ChannelOpenRefused) -> None:
        # ssh's own words, whatever the verbosity: the user must learn why
        # the local connection was closed at once.
        reason = _OPEN_FAILURES.get(event.reason, f"unknown reason {event.reason}")
        description = escape_text(event.description)  # the server's text
        log.warning("channel %d: open failed: %s: %s", event.channel_id, reason, description)

    async def _decide(self, key: PublicKey) -> None:
        result = self._check(key)
        ok = await result if inspect.isawaitable(result) else result
        if ok:
            self.core.accept_host_key()
        else:
            self.core.reject_host_key()
        self.process()

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ConnectionClosed) and not self.ready.done():
            self.ready.set_exception(exc)  # a tunnel's own account of the end
        super().connection_lost(exc)
        if not self.ready.done():
            self.ready.set_exception(ConnectionClosed("Connection closed by remote host"))


def received_disconnect(peer: str, event: Disconnected) -> str:
    """ssh's line for the server's DISCONNECT (packet.c), its text escaped."""
    return f"Received disconnect from {peer}:{event.reason}: {escape_text(event.description)}"


class SSHClient:
    """An established client connection, authenticated-service ready."""

    def __init__(self, pump: _ClientPump) -> None:
        self._pump = pump
        # What -L and -D listeners send through: a Supervisor shares one
        # link among the clients it connects, so listeners outlive each.
        self.link = Link(pump)

    @property
    def core(self) -> ClientConnection:
        return self._pump.core

    @property
    def server_version(self) -> str:
        return self._pump.server_version

    @property
    def negotiated(self) -> Negotiated:
        assert self._pump.negotiated is not None
        return self._pump.negotiated

    @property
    def auth_method(self) -> str | None:
        """The authentication method that succeeded (None before or without auth)."""
        return self._pump.auth_method

    @property
    def disconnect_event(self) -> Disconnected | None:
        """How the connection ended, once it has."""
        return self._pump.disconnect

    @property
    def keepalive(self) -> Keepalive:
        """The ServerAlive* timer: ``rtt`` (seconds) of the last reply,
        ``timed_out`` once the server was declared dead, ``on_reply``
        listeners."""
        return self._pump.keepalive

    @property
    def rtt(self) -> float | None:
        """Round-trip time of the last keepalive reply, in seconds."""
        return self._pump.keepalive.rtt

    @property
    def local_address(self) -> tuple[str, int] | None:
        return self._pump.sockname

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The server's address and port, as connected."""
        return self._pump.peername

    async def forward_local(
        self,
        listen_host: str | None,
        listen_port: int,
        dest_host: str,
        dest_port: int,
    ) -> ForwardListener:
        """``-L [listen_host:]listen_port:dest_host:dest_port``: listen locally
        (loopback when ``listen_host`` is None; port 0 picks one, see
        ``.port``) and carry each connection to dest through the server."""
        return await forward_local(self.link, listen_host, listen_port, Target(dest_host, dest_port))

    async def forward_local_to(
        self,
        listen_host: str | None,
        listen_port: int | None,
        target: Target,
        *,
        listen_socket: str | None = None,
    ) -> ForwardListener:
        """The general form of :meth:`forward_local`: a Unix socket on either side."""
        return await forward_local(self.link, listen_host, listen_port, target, listen_socket=listen_socket)

    async def forward_socks(
        self,
        listen_host: str | None,
        listen_port: int | None,
        *,
        handshake_timeout: float = SOCKS_HANDSHAKE_TIMEOUT,
        listen_socket: str | None = None,
    ) -> SocksListener:
        """``-D [listen_host:]listen_port``: a SOCKS4/4A/5 proxy (CONNECT, no
        authentication) whose connections go through the server, which
        resolves the names. Loopback when ``listen_host`` is None; port 0
        picks one (see ``.port``); ``listen_socket`` listens on a Unix socket
        instead; ``close()`` stops listening."""
        return await forward_socks(
            self.link,
            listen_host,
            listen_port,
            handshake_timeout=handshake_timeout,
            listen_socket=listen_socket,
        )

    async def forward_remote(
        self,
        listen_host: str | None,
        listen_port: int,
        target: Target | None,
        *,
        listen_socket: str | None = None,
        handshake_timeout: float = SOCKS_HANDSHAKE_TIMEOUT,
    ) -> RemoteListener:
        """``-R [listen_host:]listen_port:target``: the server listens (on
        loopback when ``listen_host`` is None, as far as its GatewayPorts
        lets the client choose; port 0 lets it pick, see ``.port``), or on
        the Unix socket ``listen_socket``, and each connection is carried
        back to ``target``, connected from here. ``target`` None is reverse
        dynamic forwarding (``-R [listen_host:]listen_port`` alone): each
        connection is served SOCKS here and connected where it asks.
        Raises RemoteForwardFailed when the server refuses."""
        return await self._pump.remote_forwards.request(
            listen_host, listen_port, target, listen_socket=listen_socket, handshake_timeout=handshake_timeout
        )

    async def open_connection(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Streams to ``host:port`` as the server reaches it, through a
        ``direct-tcpip`` channel (RFC 4254 §7.2). Raises ChannelOpenFailed."""
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        bridge = SocketBridge(self._pump)
        opened: asyncio.Future[None] = loop.create_future()
        bridge.on_open = opened
        await loop.connect_accepted_socket(lambda: bridge, ours)
        open_channel(self._pump, bridge, Target(host, port), ("127.0.0.1", 0))
        try:
            await opened
        except BaseException:
            theirs.close()
            raise
        return await asyncio.open_connection(sock=theirs)

    async def create_process(
        self,
        command: str | None = None,
        *,
        term: str | None = None,
        size: tuple[int, int] | None = None,
        env: Mapping[str, str] | None = None,
        modes: Mapping[int, int] | None = None,
        pixels: tuple[int, int] = (0, 0),
    ) -> Process:
        """Start ``command`` (a login shell if None) in a session channel
        (RFC 4254 §6). ``term``/``size`` (columns, rows)/``modes`` ask for a
        pty first; whether it was granted is ``Process.pty``. ``env`` goes as
        "env" requests, which servers accept only for names they allow
        (OpenSSH: AcceptEnv). Raises ChannelOpenFailed or SessionRequestFailed
        when the server refuses."""
        return await start_process(
            self._pump, command, term=term, size=size, env=env, modes=modes, pixels=pixels
        )

    async def run(self, command: str, *, input: bytes | None = None) -> RunResult:
        """Run ``command`` to completion with ``input`` on its stdin (then EOF)
        and return its exit status or signal and its whole stdout and stderr."""
        return await run_command(self._pump, command, input=input)

    def channel_descriptions(self) -> list[tuple[int, str]]:
        """Each open channel with a runtime handler, as (local id, what it
        carries) in ssh's words; for the ``~#`` escape."""
        found = []
        for channel_id, handler in sorted(self._pump.bridges.items()):
            if isinstance(handler, SessionHandler):
                found.append((channel_id, "client-session"))
            elif isinstance(handler, SocketBridge):
                found.append((channel_id, _describe_bridge(handler)))
        return found

    def forwarded_channels(self) -> int:
        """How many forwarded connections (socket bridges) are open."""
        return sum(isinstance(h, SocketBridge) for h in self._pump.bridges.values())

    def rekey(self) -> None:
        self.core.start_rekey()
        self._pump.process()

    def close(self) -> None:
        self._pump.close()

    async def wait_closed(self) -> None:
        await self._pump.closed

    async def __aenter__(self) -> SSHClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


def _describe_bridge(bridge: SocketBridge) -> str:
    """ssh's ~# line for a forwarded connection (-L): the listening port, the
    target and the local peer."""
    transport = bridge.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    local = transport.get_extra_info("sockname") if transport is not None else None
    target = getattr(bridge, "_target", None)  # set by forward._ListenerBridge
    counts = f"(in {bridge.bytes_in} out {bridge.bytes_out})"
    if not isinstance(target, Target):
        return f"direct-tcpip: {counts}"
    if target.socket_path is not None:
        return f"direct-streamlocal@openssh.com: to {target.socket_path} {counts}"
    if isinstance(local, tuple) and isinstance(peer, tuple):
        return (
            f"direct-tcpip: listening port {local[1]} for {target.host} port {target.port}, "
            f"connect from {peer[0]} port {peer[1]} to {local[0]} port {local[1]} {counts}"
        )
    return f"direct-tcpip: local socket {local} for {target.host} port {target.port} {counts}"


async def connect(
    host: str,
    port: int = 22,
    *,
    check_host_key: HostKeyCheck,
    config: TransportConfig | None = None,
    family: int = socket.AF_UNSPEC,
    timeout: float | None = 30.0,
    log: Callable[[str], None] | None = None,
    auth: AuthSettings | None = None,
    keepalive: KeepaliveOptions | None = None,
    tunnel: SSHClient | None = None,
    proxy_command: str | None = None,
) -> SSHClient:
    """Connect, run the key exchange, verify the host key with
    ``check_host_key``, request the ``ssh-userauth`` service and, given
    ``auth``, authenticate (AuthenticationFailed when every method fails).
    ``keepalive``: ServerAliveInterval, ServerAliveCountMax and TCPKeepAlive
    (default: no probes, SO_KEEPALIVE on); a server that stops answering is
    dropped (``client.keepalive.timed_out``).

    ``tunnel``, a connected client, carries the connection in one of its
    ``direct-tcpip`` channels to ``host:port`` as its server reaches it (the
    jump host of ``-J``; ChannelOpenFailed when it refuses). Else
    ``proxy_command`` is run by the user's shell and the connection goes over
    its stdin and stdout, as ssh's ProxyCommand (tokens already expanded)."""
    loop = asyncio.get_running_loop()

    def factory() -> _ClientPump:
        return _ClientPump(config or TransportConfig(), check_host_key, log, auth, keepalive)

    async def transport() -> _ClientPump:
        if tunnel is not None:
            return await open_tunnel(tunnel._pump, host, port, factory)
        if proxy_command is not None:
            return await run_proxy_command(proxy_command, factory)
        return (await loop.create_connection(factory, host, port, family=family))[1]

    async def establish() -> SSHClient:
        pump = await transport()
        try:
            await pump.ready
        except BaseException:
            pump.close()
            raise
        pump.keepalive.start()
        return SSHClient(pump)

    return await asyncio.wait_for(establish(), timeout)
