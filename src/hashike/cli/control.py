"""ControlMaster, ControlPath, ``-M``, ``-S`` and ``-O`` for the ``hashike`` command.

A master (``ControlMaster yes`` or ``auto``, or ``-M``) listens on its
ControlPath for OpenSSH's mux protocol: ``ssh -S path -O check`` and
``-O forward``/``cancel`` with ``-L``, ``-R`` (``-R 0`` answers the port the
server chose) and ``-D``, ``-O exit`` and ``-O stop`` work against it.
``-O`` makes ``hashike`` a client of a master, ours or ssh's, with ssh's
lines: ``Master running (pid=N)``, ``Exit request sent.``, the allocated
port alone on stdout for ``-O forward -R 0:...``.

Sessions are multiplexed both ways: ``ssh -S path host cmd`` runs in our
master's connection, and with ControlMaster no or auto and a master on the
path (ours or ssh's) ``hashike host cmd`` runs in its connection, its stdin,
stdout and stderr passed to the master; without a master it connects
itself. ``ask`` and ``autoask`` (``-MM``) put each request to the user
through SSH_ASKPASS first, as ssh does. Not yet: stdio forwarding through a
master (``-W``), escapes in multiplexed sessions. A multiplexed session's
terminal size follows its client's: the client relays SIGWINCH to the
master's pid, as ssh's does. ControlPersist keeps a master
after its own session, in the background (at once with ``-N``), until
``-O exit`` or that long idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hashike.aio import stats
from hashike.aio.client import SSHClient
from hashike.aio.mux import MuxClient, MuxError, MuxRequest, MuxServer, listen_mux
from hashike.aio.remote import RemoteForwardFailed
from hashike.aio.session_client import Process, SessionRequestFailed
from hashike.config.forward import Forward
from hashike.config.runtime_dir import RuntimeDirError, runtime_dir
from hashike.config.ssh_config import ClientSettings
from hashike.proto import mux
from hashike.proto.errors import ChannelOpenFailed, ConnectionClosed
from hashike.proto.text import escape_text

from .askpass import confirm
from .runtime_forwards import ForwardTable
from .terminal import RawMode, terminal_modes, terminal_size, window_changes

__all__ = [
    "ControlError",
    "Master",
    "add_arguments",
    "control_command",
    "control_options",
    "forward_request",
    "multiplexed_session",
    "persist_master",
    "start_master",
]

log = logging.getLogger("hashike.client")

EXIT_FAILURE = 255
PERSIST_POLL = 1.0  # seconds between ControlPersist's idle checks
COMMANDS = ("check", "forward", "cancel", "exit", "stop")
_KINDS = {
    "local": mux.ForwardKind.LOCAL,
    "remote": mux.ForwardKind.REMOTE,
    "dynamic": mux.ForwardKind.DYNAMIC,
}


class ControlError(Exception):
    """A control request that ends the command: one line, exit 255."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-M", dest="master", action="count", default=0, help="be a control master (ControlMaster yes)"
    )
    p.add_argument("-O", dest="control_command", metavar="ctl_cmd", help="check, forward, cancel, exit, stop")
    p.add_argument("-S", dest="control_path", metavar="ctl_path", help="the control socket (ControlPath)")


def control_options(args: argparse.Namespace) -> list[str]:
    """-M and -S as the -o options they stand for (-MM is ssh's ask)."""
    options = [f"ControlMaster={'ask' if args.master > 1 else 'yes'}"] if args.master else []
    return options + ([f"ControlPath={args.control_path}"] if args.control_path is not None else [])


def _path(settings: ClientSettings) -> str | None:
    path = settings.control_path
    return None if path is None or path == "none" else path


# --- -O: a client of a master -------------------------------------------------------


def forward_request(fwd: Forward, request_id: int, cancel: bool) -> mux.ForwardRequest:
    """A forward as ssh's mux client sends it: no bind address is "", an
    empty one "*", and a socket path goes with the port SOCKET_PORT."""
    if fwd.listen_socket is not None:
        listen = (fwd.listen_socket, mux.SOCKET_PORT)
    else:
        host = fwd.listen_host
        listen = ("" if host is None else host or "*", fwd.listen_port or 0)
    if fwd.connect_socket is not None:
        connect = (fwd.connect_socket, mux.SOCKET_PORT)
    else:
        connect = (fwd.connect_host or "", fwd.connect_port or 0)
    return mux.ForwardRequest(
        request_id=request_id,
        cancel=cancel,
        kind=_KINDS[fwd.kind],
        listen_host=listen[0],
        listen_port=listen[1],
        connect_host=connect[0],
        connect_port=connect[1],
    )


async def control_command(command: str, settings: ClientSettings) -> int:
    """``-O command``: ssh's lines and exit statuses."""
    if command not in COMMANDS:
        raise ControlError("Invalid multiplex command.")
    path = _path(settings)
    if path is None:
        raise ControlError('No ControlPath specified for "-O" command')
    async with MuxClient.connect(path) as client:
        if command == "check":
            reply = await client.request(mux.AliveCheck(request_id=client.request_id()))
            if not isinstance(reply, mux.AliveReply):
                raise ControlError(f"master alive check failed: {_reason(reply)}")
            sys.stderr.write(f"Master running (pid={reply.pid})\r\n")
        elif command in ("exit", "stop"):
            request = mux.Terminate if command == "exit" else mux.StopListening
            reply = await client.request(request(request_id=client.request_id()))
            if reply is not None and not isinstance(reply, mux.Ok):  # None: gone already
                raise ControlError(f"{command} request failed: {_reason(reply)}")
            sys.stderr.write(
                "Exit request sent.\r\n" if command == "exit" else "Stop listening request sent.\r\n"
            )
        else:
            return await _forwards(client, settings, cancel=command == "cancel")
    return 0


def _reason(reply: mux.MuxMessage | None) -> str:
    if isinstance(reply, mux.Failure | mux.PermissionDenied):
        return escape_text(reply.reason)  # the master's words, its controls shown escaped
    return "the master closed the connection" if reply is None else f"unexpected {type(reply).__name__}"


async def _forwards(client: MuxClient, settings: ClientSettings, *, cancel: bool) -> int:
    """Every -L, -D and -R in turn; as ssh, a failed forward is fatal, a
    failed cancel is reported and the status stays 0."""
    failed = False
    for fwd in (*settings.local_forwards, *settings.dynamic_forwards, *settings.remote_forwards):
        reply = await client.request(forward_request(fwd, client.request_id(), cancel))
        if isinstance(reply, mux.RemotePort) and not cancel:
            log.debug("Allocated port %d for remote forward to %s", reply.port, fwd.describe())
            print(reply.port, flush=True)  # stdout, for scripts
        elif not isinstance(reply, mux.Ok):
            what = "cancel forwarding" if cancel else "forwarding"
            print(f"{what} request failed: {_reason(reply)}", file=sys.stderr)
            failed = True
    if failed and not cancel:
        raise ControlError("master forward request failed")
    return 0


# --- a session in a master's connection ---------------------------------------------


async def multiplexed_session(
    settings: ClientSettings, command: str | None, env: dict[str, str], *, stdin_null: bool
) -> int | None:
    """With ControlMaster no or auto and a master on the ControlPath, the
    session runs in the master's connection, on our own stdin, stdout and
    stderr (passed to it): no new connection, no key exchange. None when
    there is no master to use: the caller connects itself, as ssh does."""
    path = _path(settings)
    if path is None or settings.control_master not in ("no", "auto", "autoask") or not os.path.lexists(path):
        return None
    try:
        async with MuxClient.connect(path) as client:
            return await _passenger(client, settings, command, env, stdin_null)
    except MuxError as exc:
        if exc.errno == errno.ECONNREFUSED and settings.control_master in ("auto", "autoask"):
            log.debug("Stale control socket %s, unlinking", path)
            os.unlink(path)
        else:
            print(str(exc), file=sys.stderr)
        return None


async def _passenger(
    client: MuxClient, settings: ClientSettings, command: str | None, env: dict[str, str], stdin_null: bool
) -> int | None:
    alive = await client.request(mux.AliveCheck(request_id=client.request_id()))
    if not isinstance(alive, mux.AliveReply):
        raise MuxError("master alive request failed")
    # ssh's rule: yes or force ask for one, auto for a shell; only force without a terminal.
    asked = settings.request_tty in ("yes", "force") or (settings.request_tty == "auto" and command is None)
    tty = asked and (settings.request_tty == "force" or (not stdin_null and os.isatty(0)))
    escape = settings.escape_char
    request = mux.NewSession(
        request_id=client.request_id(), want_tty=tty, want_x11=False, want_agent=False, subsystem=False,
        escape_char=ord(escape) if escape is not None and len(escape) == 1 else None,
        term=os.environ.get("TERM", ""), command=command or "",
        env=tuple(f"{name}={value}" for name, value in env.items()),
    )  # fmt: skip
    stdin = os.open(os.devnull, os.O_RDONLY) if stdin_null else 0
    try:
        reply = await client.request(request, fds=(stdin, 1, 2))
    finally:
        if stdin_null:
            os.close(stdin)
    if not isinstance(reply, mux.SessionOpened):
        # ssh's words for each (mux.c), then it connects by itself.
        said = (
            "Master refused session request"
            if isinstance(reply, mux.PermissionDenied)
            else "Session request failed"
        )
        print(f"{said}: {_reason(reply)}", file=sys.stderr)
        return None  # ssh then connects by itself
    raw = RawMode(0)

    def relay() -> None:  # the master reads our terminal's new size itself
        with contextlib.suppress(OSError):
            os.kill(alive.pid, signal.SIGWINCH)

    try:
        if tty:
            raw.enter()
            window_changes.add(relay)
        return await _exit_status(client, raw, reply.session_id)
    finally:
        if tty:
            window_changes.remove(relay)
        raw.restore()
        if tty:
            sys.stderr.write(f"Shared connection to {settings.hostname} closed.\r\n")


async def _exit_status(client: MuxClient, raw: RawMode, session_id: int) -> int:
    """Wait for the master to end the session: its exit status, or 255 if
    the master went away without one."""
    status = EXIT_FAILURE
    while (message := await client.receive(timeout=None)) is not None:
        if isinstance(message, mux.TtyAllocFail) and message.session_id == session_id:
            raw.restore()
        elif isinstance(message, mux.ExitMessage) and message.session_id == session_id:
            status = message.status & 0xFF
        else:
            raise MuxError(f"master returned error: {_reason(message)}")
    return status


# --- the master ---------------------------------------------------------------------


def _as_forward(request: mux.ForwardRequest) -> Forward | None:
    """The forward a request names, or None if ssh's master would call it invalid."""
    kind = {v: k for k, v in _KINDS.items()}[request.kind]
    listen_socket = request.listen_host if request.listen_port == mux.SOCKET_PORT else None
    connect_socket = request.connect_host if request.connect_port == mux.SOCKET_PORT else None
    has_target = connect_socket is not None or bool(request.connect_host)
    if kind == "dynamic" and listen_socket is not None:
        return None
    if kind == "local" and (not has_target or request.connect_port == 0):
        return None
    return Forward(
        kind=kind,  # type: ignore[arg-type]
        listen_host=None if listen_socket is not None or not request.listen_host else request.listen_host,
        listen_port=None if listen_socket is not None else request.listen_port,
        listen_socket=listen_socket,
        connect_host=request.connect_host if has_target and connect_socket is None else None,
        connect_port=request.connect_port if has_target and connect_socket is None else None,
        connect_socket=connect_socket,
    )


async def _follow_size(process: Process, tty: int) -> None:
    """While a multiplexed session runs on its client's terminal ``tty``,
    send the server that terminal's size when it changes: the client (ssh's
    or ours) relays its SIGWINCH to the master, as ssh's mux client does."""
    size = terminal_size(tty)

    def changed() -> None:
        nonlocal size
        now = terminal_size(tty)
        if now is not None and now != size and not process.closed:
            size = now
            with contextlib.suppress(ConnectionResetError):
                process.change_terminal_size(*now)

    window_changes.add(changed)
    try:
        with contextlib.suppress(ConnectionClosed):
            await process.wait()
    finally:
        window_changes.remove(changed)


@dataclass(slots=True)
class Master:
    """What our master does for each mux request (a MuxHandler)."""

    client: SSHClient
    settings: ClientSettings
    stop: asyncio.Event
    table: ForwardTable
    server: MuxServer | None = None
    following: set[asyncio.Task[None]] = field(default_factory=set)  # _follow_size tasks
    entry: str | None = None  # our symlink in the runtime directory, for hashike status
    started: float = field(default_factory=time.time)
    status_only: bool = False  # not a master: the socket answers hashike status alone

    async def forward(self, request: mux.ForwardRequest) -> mux.MuxMessage:
        rid = request.request_id
        fwd = _as_forward(request)
        if fwd is None:
            return mux.Failure(request_id=rid, reason="Invalid forwarding request")
        if request.cancel:
            if not self.table.cancel(fwd):
                return mux.Failure(request_id=rid, reason="port not forwarded")
            return mux.Ok(request_id=rid)
        try:
            listener = await self.table.add(fwd)
        except RemoteForwardFailed as exc:
            return mux.Failure(request_id=rid, reason=str(exc))
        except OSError as exc:
            log.info("requested %s failed: %s", fwd.describe(), os.strerror(exc.errno or errno.EIO))
            return mux.Failure(request_id=rid, reason="Port forwarding failed")
        if fwd.kind == "remote" and fwd.listen_socket is None and fwd.listen_port == 0:
            return mux.RemotePort(request_id=rid, port=listener.port)
        return mux.Ok(request_id=rid)

    async def permit(self, request: MuxRequest) -> bool:
        """ControlMaster ask and autoask: each request but a cancel is put to
        the user through SSH_ASKPASS first, with ssh's questions."""
        if self.status_only:
            return False  # no ControlMaster was asked for: nothing but status
        if self.settings.control_master not in ("ask", "autoask"):
            return True
        host = self.settings.hostname
        if isinstance(request, mux.ForwardRequest):
            if request.cancel:
                return True
            fwd = _as_forward(request)
            question = f"Open {fwd.describe() if fwd else 'forward'} on {host}?"
        elif isinstance(request, mux.Terminate):
            question = f"Terminate shared connection to {host}? "
        elif isinstance(request, mux.StopListening):
            question = f"Disable further multiplexing on shared connection to {host}? "
        elif isinstance(request, mux.NewStdioForward):
            question = f"Allow forward to {request.host}:{request.port}? "
        else:
            question = f"Allow shared connection to {host}? "
        question = escape_text(question)
        allowed = await asyncio.to_thread(confirm, os.environ, question)
        log.debug("mux: %s %s", question.strip(), "allowed" if allowed else "refused by user")
        return allowed

    async def session(self, request: mux.NewSession, fds: list[int]) -> Process | str:
        """A session for ``ssh -S path host cmd``, on the client's terminal
        (its size and modes read from the stdin it passed) if it wants one."""
        if request.subsystem:
            return "subsystems are not supported"
        kwargs: dict[str, Any] = {}
        if request.want_tty:
            cols, rows, xpixel, ypixel = terminal_size(fds[0]) or (80, 24, 0, 0)
            kwargs = {"term": request.term, "size": (cols, rows), "pixels": (xpixel, ypixel)}
            kwargs["modes"] = terminal_modes(fds[0])
        env = dict(item.split("=", 1) for item in request.env if "=" in item)
        try:
            process = await self.client.create_process(request.command or None, env=env, **kwargs)
        except (ChannelOpenFailed, SessionRequestFailed, ConnectionClosed):
            return "Session open refused by peer"  # ssh's master's words
        if request.want_tty:
            following = asyncio.ensure_future(_follow_size(process, fds[0]))
            self.following.add(following)
            following.add_done_callback(self.following.discard)
        return process

    def terminate(self) -> None:
        log.debug("mux: terminate requested")
        self.stop.set()

    def stop_listening(self) -> None:
        log.debug("mux: stopped listening on %s", self.settings.control_path)

    def follow(self, client: SSHClient) -> None:
        """Reconnect made ``client`` the connection: sessions, -O forward and
        status go to it from now on."""
        self.client = self.table.client = client

    def status(self) -> dict[str, Any]:
        s, now = self.settings, time.time()
        connection = {"host": s.host, "hostname": s.hostname, "user": s.user, "port": s.port}
        connection |= {"state": self._state(now), "started": self.started, "uptime": now - self.started}
        supervisor = self.table.supervisor  # under Reconnect: its state and count
        connection |= {"reconnects": supervisor.reconnects if supervisor else 0, "rtt": self.client.rtt}
        return stats.snapshot(connection)

    def _state(self, now: float) -> str:
        supervisor = self.table.supervisor
        retry_at = supervisor.retry_at if supervisor else None
        if retry_at is not None:
            return f"reconnecting in {max(0, math.ceil(retry_at - now))} s"
        return "closed" if self.client.core.closed else "connected"

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server.close_clients()
        if self.entry is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.entry)
            self.entry = None

    def register(self, path: str) -> None:
        """Point ``hashike status`` at our socket: a symlink named by our pid
        in the runtime directory (config/runtime_dir.py)."""
        try:
            entry = str(runtime_dir() / f"{os.getpid()}.sock")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry)  # a dead process's, its pid reused
            os.symlink(os.path.abspath(path), entry)
        except (RuntimeDirError, OSError) as exc:
            log.info("hashike status will not see this master: %s", exc)
            return
        self.entry = entry


async def start_master(
    client: SSHClient, settings: ClientSettings, stop: asyncio.Event, table: ForwardTable
) -> Master | None:
    """Listen on the ControlPath when ControlMaster asks for a master; its
    forward requests go to ``table``. A socket already there is ssh's
    warning and no master, never fatal."""
    path = _path(settings)
    if path is None or settings.control_master not in ("yes", "auto", "ask", "autoask"):
        return await _status_socket(client, settings, stop, table)
    master = Master(client, settings, stop, table)
    try:
        master.server = await listen_mux(path, master)
    except MuxError as exc:
        print(str(exc), file=sys.stderr)
        return None
    log.debug("setting up multiplex master socket")
    master.register(path)
    return master


async def _status_socket(
    client: SSHClient, settings: ClientSettings, stop: asyncio.Event, table: ForwardTable
) -> Master | None:
    """A connection with forwards and no master still shows in hashike
    status: a socket of its own in the runtime directory (0600 in 0700,
    SO_PEERCRED checked as a master's) that answers status and alive checks
    and refuses every other request. None when there is nothing to show."""
    if not table.forwards:
        return None
    master = Master(client, settings, stop, table, status_only=True)
    try:
        master.server = await listen_mux(str(runtime_dir() / f"{os.getpid()}.sock"), master)
    except (RuntimeDirError, MuxError) as exc:
        log.debug("hashike status will not see this connection: %s", exc)
        return None
    return master


async def persist_master(master: Master, stop: asyncio.Event) -> int:
    """ControlPersist: the master stays until ``-O exit``, a signal, the
    server's end, or (given a time) that long with no mux client and no
    forwarded connection open; ``yes`` is no limit."""
    limit = master.settings.control_persist or None
    loop = asyncio.get_running_loop()
    idle_since = loop.time()
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stopped.done() and not master.client.core.closed:  # bounded by the conditions above
            server = master.server
            if (server is not None and server.clients) or master.client.forwarded_channels():
                idle_since = loop.time()
            elif limit is not None and loop.time() - idle_since >= limit:
                log.debug("ControlPersist timeout expired")
                break
            await asyncio.wait({stopped}, timeout=PERSIST_POLL)
    finally:
        stopped.cancel()
    return 0
