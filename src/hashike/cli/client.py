"""``hashike``: the client, with OpenSSH's option syntax and messages.

    hashike [-46gNnTtv] [-E log_file] [-e escape_char] [-F configfile] [-i identity_file]
            [-L address] [-l login_name] [-o option] [-p port] [-R address] destination [command]

Without a command, a login shell with a pty; with one, the command with
stdin, stdout and stderr wired through, and its exit status as ours.

Every failure is one line on stderr and exit status 255, as with ssh:
``hashike: connect to host wisdom port 22: Connection refused``,
``Host key verification failed.``, ``alice@wisdom: Permission denied (publickey).``
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

from hashike.aio.agent import AgentClient, AgentError
from hashike.aio.client import SSHClient, connect, received_disconnect
from hashike.aio.client_auth import AuthSettings, Identity, certificate_identities, file_identity
from hashike.aio.forward import Target
from hashike.aio.mux import MuxError
from hashike.aio.session_client import ChannelReader, Process, SessionRequestFailed
from hashike.config.forward import ForwardSpecError, parse_forward
from hashike.config.host_keys import host_transport_config
from hashike.config.ssh_config import ClientSettings, ConfigError, parse_client_config
from hashike.keys.keypair import KeyFileError
from hashike.keys.patterns import match_pattern
from hashike.proto.constants import DisconnectReason
from hashike.proto.errors import (
    AuthenticationFailed,
    ChannelOpenFailed,
    ConnectionClosed,
    HostKeyNotVerified,
    SSHError,
)
from hashike.proto.text import escape_text

from .control import (
    ControlError,
    add_arguments,
    control_command,
    control_options,
    multiplexed_session,
    persist_master,
    start_master,
)
from .escape import Escape, EscapeReader, help_text
from .escape_command import MAX_LINE, run_command_line
from .forwards import start_local_forwards
from .hostcheck import HostKeyChecker
from .jump import STDIO_OPTIONS, connect_through, parse_stdio_forward, stdio_forward
from .logs import setup_logging
from .reconnect import stay_connected
from .remote import ForwardFailure, start_remote_forwards
from .runtime_forwards import ForwardTable
from .service import announce_end, announce_ready, keepalive_options, notifier, timeout_line
from .terminal import RawMode, ask_async, terminal_modes, terminal_size, window_changes, write_all
from .usage import UsageParser

__all__ = ["main"]

EXIT_FAILURE = 255
PROG = "hashike"
log = logging.getLogger("hashike.client")


def _parser() -> UsageParser:
    p = UsageParser(
        status=EXIT_FAILURE,
        prog=PROG,
        usage="hashike [-46fgNnTtv] [-D [bind_address:]port] [-E log_file]\n"
        "           [-e escape_char] [-F configfile] [-i identity_file] [-J destination]\n"
        "           [-L address] [-l login_name] [-o option] [-p port] [-R address]\n"
        "           destination [command [argument ...]]",
        description="hashike's SSH client. Options, ~/.ssh/config and messages follow ssh(1).",
        epilog="Example, the guide's POP tunnel: hashike -N -L 40000:localhost:110 user@mailhost",
    )
    p.add_argument("-4", dest="family", action="store_const", const="inet", help="IPv4 addresses only")
    p.add_argument("-6", dest="family", action="store_const", const="inet6", help="IPv6 addresses only")
    p.add_argument(
        "-D", dest="dynamic", metavar="[bind_address:]port", action="append", default=[],
        help="a local SOCKS4/4A/5 proxy whose connections go through the server",
    )  # fmt: skip
    p.add_argument(
        "-E", dest="log_file", metavar="log_file", help="append debug logs to log_file, not stderr"
    )
    p.add_argument(
        "-F", dest="config", metavar="configfile", help="configuration file (default ~/.ssh/config)"
    )
    p.add_argument(
        "-f", dest="background", action="store_true", help="go to the background after authentication"
    )
    p.add_argument(
        "-g", dest="gateway", action="store_true", help="let remote hosts connect to local forwards"
    )
    p.add_argument(
        "-i", dest="identities", metavar="identity_file", action="append", default=[], help="private key"
    )
    p.add_argument("-J", dest="jump", metavar="destination", help="jump hosts: [user@]host[:port][,...]")
    p.add_argument(
        "-L", dest="local", metavar="address", action="append", default=[],
        help="[bind_address:]port:host:hostport, and the socket forms: forward a local port",
    )  # fmt: skip
    p.add_argument("-l", dest="login", metavar="login_name", help="user to log in as")
    p.add_argument("-N", dest="no_command", action="store_true", help="no remote command: forwarding only")
    p.add_argument("-o", dest="options", metavar="option", action="append", default=[], help="Keyword=value")
    p.add_argument("-p", dest="port", metavar="port", type=_port, help="port on the remote host")
    p.add_argument(
        "-R", dest="remote", metavar="address", action="append", default=[],
        help="[bind_address:]port:host:hostport, [bind_address:]port (SOCKS), socket forms: remote to here",
    )  # fmt: skip
    p.add_argument("-T", dest="tty", action="store_const", const="no", help="no pseudo-terminal")
    p.add_argument(
        "-t", dest="tty", action=_TtyAction, nargs=0,
        help="a pseudo-terminal even for a command (twice: even when stdin is not a terminal)",
    )  # fmt: skip
    p.add_argument(
        "-e", dest="escape_char", metavar="escape_char",
        help="escape character for sessions with a pty (default ~); none disables escapes",
    )  # fmt: skip
    p.add_argument("-n", dest="stdin_null", action="store_true", help="stdin from /dev/null")
    p.add_argument("-v", dest="verbose", action="count", default=0, help="debug messages (repeat for more)")
    p.add_argument(
        "-W", dest="stdio", metavar="host:port", help="stdin and stdout to host:port through the server"
    )
    add_arguments(p)  # -M, -O, -S
    p.add_argument("destination", help="[user@]hostname")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command to run on the remote host")
    return p


def _port(word: str) -> int:
    if not word.isdigit() or not 0 < int(word) < 65536:
        raise argparse.ArgumentTypeError(f"Bad port '{word}'")  # ssh's words
    return int(word)


class _TtyAction(argparse.Action):
    """ssh's -t: once asks for a pty (RequestTTY yes), twice forces one."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *_: object) -> None:
        namespace.tty = "force" if namespace.tty == "yes" else "yes"


class _Fatal(Exception):
    """One line for the user, exit 255."""


def _split_destination(destination: str, login: str | None) -> tuple[str, str | None]:
    user, at, host = destination.rpartition("@")
    return (host, login or user) if at else (destination, login)


async def _identities(settings: ClientSettings, agent: AgentClient | None) -> list[Identity]:
    found: list[Identity] = []
    if agent is not None and not settings.identities_only:
        try:
            for key, comment in await agent.identities():
                agent_key = Identity(key, f"agent: {comment}")
                found += [agent_key, *certificate_identities(agent_key, settings.certificate_files)]
        except AgentError as exc:
            log.debug("agent: %s", exc)
    for path in settings.identity_files:
        try:
            identity = await file_identity(path, ask_async)
        except KeyFileError as exc:
            print(str(exc), file=sys.stderr)  # ssh warns and goes on
            continue
        if identity is None:
            if not settings.identity_files_default:
                print(
                    f"Warning: Identity file {path} not accessible: No such file or directory.",
                    file=sys.stderr,
                )
            continue
        found += [
            identity,
            *certificate_identities(identity, [f"{path}-cert.pub", *settings.certificate_files]),
        ]
    return found


async def _agent(settings: ClientSettings) -> AgentClient | None:
    path = settings.identity_agent if settings.identity_agent is not None else os.environ.get("SSH_AUTH_SOCK")
    if not path or path == "none":
        return None
    try:
        return await AgentClient.connect(path)
    except AgentError as exc:
        log.debug("%s", exc)
        return None


def _methods(settings: ClientSettings) -> tuple[str, ...]:
    enabled = {
        "publickey": settings.pubkey_authentication,
        "keyboard-interactive": settings.kbd_interactive_authentication,
        "password": settings.password_authentication,
    }
    return tuple(m for m in settings.preferred_authentications if enabled.get(m, False))


async def _login(settings: ClientSettings, tunnel: SSHClient | None) -> tuple[SSHClient, ClientSettings]:
    """The authenticated client (carried by ``tunnel``, a jump host's, if
    given), and the settings as the host key check left them."""
    agent = await _agent(settings)
    auth = AuthSettings(
        username=settings.user,
        identities=await _identities(settings, agent) if settings.pubkey_authentication else (),
        agent=agent,
        prompt=None if settings.batch_mode else ask_async,
        methods=_methods(settings),
        password_prompts=settings.number_of_password_prompts,
        host_label=settings.hostname,
        log=lambda line: log.debug("%s", line),
        notice=lambda line: print(line, file=sys.stderr),
    )
    family = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}.get(settings.address_family, socket.AF_UNSPEC)
    host, port = settings.hostname, settings.port
    checker = HostKeyChecker(settings, auth)
    client = await connect(
        host,
        port,
        check_host_key=checker,
        config=host_transport_config(settings),
        family=family,
        timeout=settings.connect_timeout,
        log=lambda line: log.debug("%s", line),
        auth=auth,
        keepalive=keepalive_options(settings),
        tunnel=tunnel,
        proxy_command=settings.proxy_command,
    )
    return client, checker.settings


async def _connect(settings: ClientSettings, tunnel: SSHClient | None) -> tuple[SSHClient, ClientSettings]:
    """:func:`_login`, its failures in ssh's words."""
    host, port = settings.hostname, settings.port
    try:
        return await _login(settings, tunnel)
    except socket.gaierror as exc:
        raise _Fatal(f"{PROG}: Could not resolve hostname {host}: {exc.strerror}") from None
    except TimeoutError:
        raise _Fatal(f"{PROG}: connect to host {host} port {port}: Connection timed out") from None
    except HostKeyNotVerified:
        raise _Fatal("") from None  # evaluate_host_key already said why
    except ConnectionClosed as exc:
        raise _Fatal(f"{exc}\nDisconnected from {exc.peer}" if exc.peer else str(exc)) from None
    except AuthenticationFailed as exc:
        raise _Fatal(str(exc)) from None
    except ChannelOpenFailed:  # the jump host could not reach it; the pump said why
        raise _Fatal("stdio forwarding failed") from None
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise _Fatal(f"{PROG}: connect to host {host} port {port}: {reason}") from None


def _background(status: int = 0, fds: tuple[int, ...] = (0,)) -> None:
    """-f: ssh goes to the background once authenticated and forwarding is
    set up. The parent exits 0 at once (ControlPersist: with the session's
    status); the child carries on the connection, ``fds`` on /dev/null."""
    loop = asyncio.get_running_loop()
    if os.fork():
        os._exit(status)
    os.setsid()
    # asyncio refuses a loop inherited across fork (it records the pid that
    # runs it) and the worker threads of its executor did not come along: the
    # child adopts the loop, which it alone uses now, and gets new workers.
    asyncio.events._set_running_loop(loop)
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in fds:
        os.dup2(devnull, fd)
    os.close(devnull)


@dataclass(frozen=True, slots=True)
class _Invocation:
    """What the command line asks for beyond the settings."""

    no_command: bool = False
    command: tuple[str, ...] = ()
    background: bool = False
    stdin_null: bool = False
    escape_given: bool = False  # -e: escapes even without a pty
    stdio: Target | None = None  # -W
    config_file: str | None = None  # -F, for the jump hosts too


class _Stop:
    """Set by SIGINT/SIGTERM/SIGHUP; remembers which."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signum: int | None = None

    def __call__(self, signum: int) -> None:
        self.signum = signum
        self.event.set()


async def _session(settings: ClientSettings, invocation: _Invocation) -> int:
    if not (invocation.no_command or invocation.stdio or invocation.background):
        command, env = " ".join(invocation.command) or None, _environment(settings)
        shared = await multiplexed_session(settings, command, env, stdin_null=invocation.stdin_null)
        if shared is not None:
            return shared
    # Handlers first: a TERM during login must still end us cleanly.
    stop = _Stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop, sig)
    notifier().status(f"connecting to {settings.hostname}")
    client, settings = await connect_through(settings, _connect, invocation.config_file)
    host, port = settings.hostname, settings.port
    log.debug('Authenticated to %s ([%s]:%d) using "%s".', host, host, port, client.auth_method)
    # Every forward, those given now and those added later (-O forward, ~C),
    # is in one table, so that -O cancel and ~C -K find them all.
    table = ForwardTable(client, settings, dict(await start_local_forwards(client, settings)))
    master = None
    try:
        table.forwards.update(await start_remote_forwards(client, settings))
        master = await start_master(client, settings, stop.event, table)
        announce_ready(client, settings, list(table.forwards.values()))
        persist = master is not None and not master.status_only and settings.control_persist is not None
        if invocation.background or (persist and invocation.no_command):
            _background(fds=(0, 1, 2) if persist else (0,))  # ControlPersist detaches fully, as ssh
        if invocation.stdio is not None:
            return await stdio_forward(client, invocation.stdio)
        if master is not None and persist and (invocation.no_command or settings.session_type == "none"):
            return await persist_master(master, stop.event)
        if (invocation.no_command or settings.session_type == "none") and settings.reconnect != 0:
            again = functools.partial(connect_through, settings, _login, invocation.config_file)
            follow = master.follow if master is not None else (lambda _client: None)
            return await stay_connected(client, settings, stop.event, again, table, follow)
        if invocation.no_command or settings.session_type == "none":
            return await _forward_only(client, settings, stop)
        status = await _remote_session(client, settings, invocation, stop, table)
        if master is not None and persist and not client.core.closed and stop.signum is None:
            _background(status, fds=(0, 1, 2))  # ControlPersist: the master outlives its session
            await persist_master(master, stop.event)
        table.close()  # logged out: the tunnel takes no new connections
        if not client.core.closed and stop.signum is None and not stop.event.is_set():
            await _wait_forwarded(client, stop)
        return status
    finally:
        if master is not None:
            master.close()
        table.close()
        if not client.core.closed:
            client.close()
        await client.wait_closed()
        announce_end(client, settings)


async def _forward_only(client: SSHClient, settings: ClientSettings, stop: _Stop) -> int:
    """-N: the connection stays up for the forwards until a signal or the server ends it."""
    closed = asyncio.ensure_future(client.wait_closed())
    waiter = asyncio.ensure_future(stop.event.wait())
    await asyncio.wait({closed, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not closed.done():
        return 0  # (not cancelled: that would cancel the pump's own future)
    _report_remote_close(client, settings)
    return EXIT_FAILURE


async def _wait_forwarded(client: SSHClient, stop: _Stop) -> None:
    """As ssh does after the session ends: forwarded connections still open
    are left to finish (a signal ends the wait)."""
    for _ in range(1 << 62):  # ends with the connections, the connection or a signal
        if not client.forwarded_channels() or client.core.closed or stop.event.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.event.wait(), 0.1)


def _report_remote_close(client: SSHClient, settings: ClientSettings, newline: str = "\n") -> None:
    """One line for an end the user did not ask for: the server's, or an
    error we detected (ssh_packet_disconnect's line), never a silent 255."""
    event, timeout = client.disconnect_event, timeout_line(client, settings)
    host, port = client.remote_address or (settings.hostname, settings.port)
    if timeout is not None:
        print(timeout, end=newline, file=sys.stderr)
    elif event is not None and event.by_peer and not event.eof:
        peer = f"{host} port {port}"
        lines = f"{received_disconnect(peer, event)}{newline}Disconnected from {peer}"
        print(lines, end=newline, file=sys.stderr)
    elif event is not None and event.by_peer:
        print(f"Connection to {settings.hostname} closed by remote host.", end=newline, file=sys.stderr)
    elif event is not None and event.reason != DisconnectReason.BY_APPLICATION:
        text = escape_text(event.description)
        print(f"Disconnecting {host} port {port}: {text}", end=newline, file=sys.stderr)


def _want_pty(request_tty: str, has_command: bool, stdin_tty: bool) -> bool:
    """ssh's rule: auto means a pty for a shell; yes for anything; force even
    when stdin is not a terminal; no never."""
    want = request_tty in ("yes", "force") or (request_tty == "auto" and not has_command)
    if want and not stdin_tty and request_tty != "force":
        print("Pseudo-terminal will not be allocated because stdin is not a terminal.", file=sys.stderr)
        return False
    return want


def _environment(settings: ClientSettings) -> dict[str, str]:
    """SendEnv (local variables whose names match) and SetEnv, as ssh sends them."""
    env = {
        name: value
        for name, value in os.environ.items()
        if any(match_pattern(name, pattern) for pattern in settings.send_env)
    }
    env.update(settings.set_env)
    return env


async def _remote_session(
    client: SSHClient, settings: ClientSettings, invocation: _Invocation, stop: _Stop, table: ForwardTable
) -> int:
    command = " ".join(invocation.command) or None  # ssh joins the words with spaces
    stdin_tty = not invocation.stdin_null and os.isatty(0)
    want_pty = _want_pty(settings.request_tty, command is not None, stdin_tty)
    kwargs: dict[str, Any] = {}
    if want_pty:
        cols, rows, xpixel, ypixel = terminal_size(0) or (0, 0, 0, 0)
        kwargs = {
            "term": os.environ.get("TERM", ""),
            "size": (cols, rows),
            "pixels": (xpixel, ypixel),
            "modes": terminal_modes(0),
        }
        log.debug("Requesting pty: %s %dx%d", kwargs["term"], cols, rows)
    log.debug("Sending command: %s" if command else "Requesting shell.", command)
    try:
        process = await client.create_process(command, env=_environment(settings), **kwargs)
    except ChannelOpenFailed:
        return EXIT_FAILURE  # the pump already said why, in ssh's words
    except SessionRequestFailed as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    except ConnectionClosed:
        _report_remote_close(client, settings)
        return EXIT_FAILURE
    if want_pty and not process.pty:
        print(f"PTY allocation request failed on channel {process.channel_id}", file=sys.stderr)
        if settings.request_tty in ("yes", "force"):
            process.close()  # asked for explicitly: a session without one is not what was wanted
            return EXIT_FAILURE
    escape_on = settings.escape_char is not None and (want_pty or invocation.escape_given)
    escapes = EscapeReader(settings.escape_char) if escape_on else None
    raw = RawMode(0)
    try:
        if process.pty and stdin_tty and raw.enter():
            _log_line_ends("\r\n")  # no output processing in raw mode: CR ourselves
        session = _InteractiveSession(client, settings, process, raw, escapes, stop, table)
        status = await session.run(stdin_null=invocation.stdin_null)
    finally:
        raw.restore()
        _log_line_ends("\n")
    if status is None:  # the connection went first
        _report_remote_close(client, settings, "\r\n" if process.pty else "\n")
        return EXIT_FAILURE
    if process.pty and stop.signum is None:
        print(f"Connection to {settings.hostname} closed.", end="\r\n", file=sys.stderr)
    return status


def _log_line_ends(terminator: str) -> None:
    """How log lines on stderr end: "\r\n" while the terminal is raw, as ssh does."""
    for handler in logging.getLogger("hashike").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.terminator = terminator


class _InteractiveSession:
    """Wires a remote process to our stdin, stdout and stderr, with escapes
    and window-size changes, until the process ends or the user ends it.

    stdin is read in a daemon thread with blocking reads, so its file's
    flags are never changed (O_NONBLOCK on a terminal is shared with the
    shell that started us); every chunk is handed to the event loop, which
    waits for the channel to take it before the thread reads more. Output is
    written from worker threads, so a slow consumer never stalls the
    connection, and read from the channel one chunk at a time, so a slow
    consumer holds back the window instead of filling our memory."""

    CHUNK = 64 * 1024

    def __init__(
        self,
        client: SSHClient,
        settings: ClientSettings,
        process: Process,
        raw: RawMode,
        escapes: EscapeReader | None,
        stop: _Stop,
        table: ForwardTable,
    ) -> None:
        self.client = client
        self.table = table
        self.settings = settings
        self.process = process
        self.raw = raw
        self.escapes = escapes
        self.stop = stop
        self.disconnect_requested = False
        self._loop = asyncio.get_running_loop()

    async def run(self, *, stdin_null: bool) -> int | None:
        """The exit status (255 if ended by ~., a signal or without one), or
        None if the connection was lost before the process ended."""
        outputs = [
            asyncio.ensure_future(self._copy(self.process.stdout, 1)),
            asyncio.ensure_future(self._copy(self.process.stderr, 2)),
        ]
        if stdin_null:
            self.process.stdin.write_eof()
        else:
            threading.Thread(target=self._read_stdin, name="hashike-stdin", daemon=True).start()
        winch = self.raw.active
        if winch:
            window_changes.add(self._window_changed)
        finished = asyncio.ensure_future(self._finish(outputs))
        stopped = asyncio.ensure_future(self.stop.event.wait())
        try:
            await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if winch:
                window_changes.remove(self._window_changed)
            stopped.cancel()
            for task in (finished, *outputs):
                task.cancel()
        if finished.done() and not finished.cancelled():
            return finished.result()
        if self.stop.signum is not None:
            log.debug("Killed by signal %d.", self.stop.signum)
        return EXIT_FAILURE  # ~. or a signal: no exit status, as with ssh

    async def _finish(self, outputs: list[asyncio.Task[None]]) -> int | None:
        await asyncio.gather(*outputs)
        try:
            await self.process.wait()
        except ConnectionClosed:
            return None
        status = self.process.exit_status
        if status is None and self.process.exit_signal is not None:
            log.debug("Remote command killed by signal %s.", self.process.exit_signal)
        return EXIT_FAILURE if status is None else status & 0xFF

    async def _copy(self, reader: ChannelReader, fd: int) -> None:
        while data := await reader.read(self.CHUNK):
            try:
                await asyncio.to_thread(write_all, fd, data)
            except OSError as exc:
                # Our reader went away (EPIPE): the remote output has nowhere
                # to go, so the session ends, as a pipeline's writer does.
                log.debug("write to fd %d failed: %s", fd, exc)
                self.process.close()
                return

    # --- stdin, in its own thread ----------------------------------------------------

    def _read_stdin(self) -> None:
        while True:
            try:
                data = os.read(0, self.CHUNK)
            except OSError:
                data = b""  # EBADF, EIO: no more input
            try:
                more = asyncio.run_coroutine_threadsafe(self._stdin_data(data), self._loop).result()
            except Exception:  # the loop is gone or closing
                return
            if not data or not more:
                return

    async def _stdin_data(self, data: bytes) -> bool:
        """One chunk of our stdin (b"" at EOF); False to stop reading."""
        stdin = self.process.stdin
        if self.process.closed or self.disconnect_requested:
            return False
        if not data:
            stdin.write_eof()  # the channel's EOF (RFC 4254 §5.3)
            return False
        actions = self.escapes.feed(data) if self.escapes is not None else [data]
        for action in actions:
            if isinstance(action, bytes):
                stdin.write(action)
            elif action is Escape.COMMAND_LINE:
                await self._command_line()
            elif not self._escape(action):
                return False
        try:
            await stdin.drain()
        except ConnectionResetError:
            return False
        return True

    # --- escapes ------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        newline = "\r\n" if self.raw.active else "\n"
        with contextlib.suppress(OSError):
            write_all(2, text.replace("\n", newline).encode("utf-8", "replace"))

    def _escape(self, command: Escape) -> bool:
        """Carry out an escape command; False ends the session."""
        if command is Escape.DISCONNECT:
            self.disconnect_requested = True
            self.stop.event.set()
            return False
        if command is Escape.HELP:
            assert self.settings.escape_char is not None
            self._say(help_text(self.settings.escape_char, "\n"))
        elif command is Escape.LIST_CONNECTIONS:
            lines = [f"  #{cid} {what}" for cid, what in self.client.channel_descriptions()]
            self._say("\nThe following connections are open:\n" + "".join(f"{ln}\n" for ln in lines))
        elif command is Escape.REKEY:
            try:
                self.client.rekey()
            except SSHError as exc:
                log.debug("rekey: %s", exc)
        elif command is Escape.BREAK:
            self.process.send_break()
        elif command is Escape.SUSPEND:
            self._suspend()
        return True

    async def _command_line(self) -> None:
        """~C: ssh's prompt, one line read with the terminal cooked (echo on),
        then raw again. stdin's reader thread waits for us meanwhile."""
        if not self.settings.enable_escape_commandline:
            self._say("commandline disabled\n")
            return
        was_raw = self.raw.active
        self.raw.restore()
        _log_line_ends("\n")
        try:
            with contextlib.suppress(OSError):
                write_all(2, b"\r\nssh> ")
            line = await asyncio.to_thread(_read_line)
            self._say(await run_command_line(line, self.table))
        finally:
            if was_raw and self.raw.enter():
                _log_line_ends("\r\n")

    def _suspend(self) -> None:
        """~^Z: give the terminal back and stop, as ssh does; on SIGCONT take
        it again and tell the server the size, which may have changed."""
        self._say("^Z [suspend ssh]\n")
        was_raw = self.raw.active
        self.raw.restore()
        _log_line_ends("\n")
        os.kill(os.getpid(), signal.SIGTSTP)
        if was_raw and self.raw.enter():
            _log_line_ends("\r\n")
            self._window_changed()

    def _window_changed(self) -> None:
        size = terminal_size(0)
        if size is not None and not self.process.closed:
            with contextlib.suppress(ConnectionResetError):
                self.process.change_terminal_size(*size)


def _read_line() -> str:
    try:
        data = os.read(0, MAX_LINE)
    except OSError:
        data = b""
    return data.decode("utf-8", "replace")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _parser()
    words = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(words)
    # ssh reads options after the destination too (``ssh host -N``), up to
    # the first other word or ``--`` (dropped): its second getopt pass.
    late, problem = parser.scan_options(args.command)
    if late:
        if problem is not None:
            parser.fail(problem)
        command = args.command[late:]
        before = words[: len(words) - len(args.command) - 1]
        options = [w for w in args.command[:late] if w != "--"]
        args = parser.parse_args([*before, *options, args.destination])
        args.command = command
    return args


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["status"]:
        from .status import main as status_main  # rich is loaded by this command only

        return status_main(words[1:])
    if words[:1] in (["up"], ["down"], ["profiles"]):
        from .profiles import main as profiles_main

        return profiles_main(words[0], words[1:])
    args = _parse_args(words)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO, args.log_file)
    host, user = _split_destination(args.destination, args.login)
    # -t/-T and -e come first: ssh sets them before any -o is read.
    options = [f"RequestTTY={args.tty}"] if args.tty else []
    if args.escape_char is not None:
        options.append(f"EscapeChar={args.escape_char}")
    options += STDIO_OPTIONS if args.stdio else ()
    options += [*args.options, *control_options(args)]
    if args.family:
        options.append(f"AddressFamily={args.family}")
    if args.gateway:
        options.append("GatewayPorts=yes")
    if args.jump is not None:
        options.append(f"ProxyJump={args.jump}")
    try:
        forwards = [parse_forward("local", spec) for spec in args.local]
        forwards += [parse_forward("dynamic", spec) for spec in args.dynamic]
        forwards += [parse_forward("remote", spec) for spec in args.remote]
        settings = parse_client_config(
            host,
            config_file=args.config,
            options=options,
            user=user,
            port=args.port,
            identity_files=args.identities,
            forwards=forwards,
        )
        invocation = _Invocation(
            stdio=parse_stdio_forward(args.stdio) if args.stdio else None,
            config_file=args.config,
            no_command=args.no_command,
            command=tuple(args.command),
            background=args.background,
            stdin_null=args.stdin_null or args.background,
            escape_given=args.escape_char is not None and args.escape_char != "none",
        )
        if args.control_command is not None:
            return asyncio.run(control_command(args.control_command, settings))
        return asyncio.run(_session(settings, invocation))
    except (ConfigError, ForwardSpecError) as exc:
        print(f"{PROG}: {exc}" if not str(exc).startswith(("Bad ", "/")) else str(exc), file=sys.stderr)
        return EXIT_FAILURE
    except (_Fatal, ForwardFailure, ControlError, MuxError) as exc:
        if str(exc):
            print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
