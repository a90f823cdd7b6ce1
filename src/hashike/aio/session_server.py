"""Session channels on the server (RFC 4254 §6): a shell or a command in a
child process, with or without a pseudo-terminal.

Theory of operation. :func:`open_session` accepts a "session" channel, or
refuses it as sshd does when MaxSessions are open, and registers a
:class:`ServerSession` as the channel's handler. The requests that come
before the program shape it: ``pty-req`` opens a pty (modes and size applied
to its slave side), ``env`` adds the variables AcceptEnv allows. ``exec`` or
``shell`` starts the child through the user's login shell, in a session of
its own (setsid) whose controlling terminal is the pty, or with three pipes.
The child is reaped through a pidfd (a thread where there is none), which
keeps its whole wait status: the core-dump flag of exit-signal included.

Data flow is :mod:`hashike.aio.flow`'s, as for a forwarded socket. Each output
stream (stdout; stderr as extended data 1; or the pty master) keeps what the
peer's window cannot take in one memoryview, and no stream is read while
anything waits. Channel data for the child's stdin is acknowledged (window
credit) only while the pipe's write buffer is below its high mark, and held
from ``pause_writing`` to ``resume_writing``: a child that does not read
slows the client down instead of filling our memory.

Closing (RFC 4254 §5.3, §6.10). Once the child has exited *and* every output
stream reached EOF and went out, the channel gets EOF, then exit-status (or
exit-signal), then CLOSE. As with sshd, a background process that keeps
stdout open keeps the session open. If the channel or the connection goes
first, the child's process group gets SIGHUP. The client's EOF closes the
child's stdin pipe; with a pty it changes nothing (the terminal stays open).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from hashike.config.policy import SessionPolicy
from hashike.proto.channels import ChannelState
from hashike.proto.constants import OpenFailureReason
from hashike.proto.errors import DecodeError
from hashike.proto.events import ChannelOpenRequested, ChannelRequestReceived
from hashike.proto.session import (
    ExitSignal,
    PtyRequest,
    decode_env,
    decode_exec,
    decode_pty_req,
    decode_signal,
    decode_subsystem,
    decode_window_change,
    encode_exit_signal,
    encode_exit_status,
)
from hashike.proto.text import escape_text

from .flow import Credit, Outflow
from .server_auth import login_key_options

if TYPE_CHECKING:
    from hashike.proto.channels import Channels
    from hashike.proto.connection import ServerConnection

    from .pump import CorePump

__all__ = [
    "DEFAULT_PATH",
    "MAX_ENV",
    "SIGNALS",
    "STDIN_HIGH_WATER",
    "ServerSession",
    "apply_modes",
    "exit_request",
    "open_session",
    "set_window_size",
    "watch_child",
]

log = logging.getLogger("hashike.server")

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# How much the child's stdin pipe may buffer before window credit is held back.
STDIN_HIGH_WATER = 1024 * 1024
# Variables one session may set with "env" requests (sshd has the same bound).
MAX_ENV = 1000
EXTENDED_DATA_STDERR = 1  # RFC 4254 §5.2
# RFC 4254 §6.10: the signal names a "signal" request may carry.
SIGNALS = frozenset(
    ("ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV", "TERM", "USR1", "USR2")
)


# --- terminals (RFC 4254 §8) ---------------------------------------------------------

# Opcode -> the termios name of a control character.
_CC = {
    1: "VINTR", 2: "VQUIT", 3: "VERASE", 4: "VKILL", 5: "VEOF", 6: "VEOL", 7: "VEOL2",
    8: "VSTART", 9: "VSTOP", 10: "VSUSP", 11: "VDSUSP", 12: "VREPRINT", 13: "VWERASE",
    14: "VLNEXT", 15: "VFLUSH", 16: "VSWTCH", 17: "VSTATUS", 18: "VDISCARD",
}  # fmt: skip
# Opcode -> (index in tcgetattr's list: iflag 0, oflag 1, cflag 2, lflag 3; flag name).
_FLAGS = {
    30: (0, "IGNPAR"), 31: (0, "PARMRK"), 32: (0, "INPCK"), 33: (0, "ISTRIP"), 34: (0, "INLCR"),
    35: (0, "IGNCR"), 36: (0, "ICRNL"), 37: (0, "IUCLC"), 38: (0, "IXON"), 39: (0, "IXANY"),
    40: (0, "IXOFF"), 41: (0, "IMAXBEL"), 42: (0, "IUTF8"),
    50: (3, "ISIG"), 51: (3, "ICANON"), 52: (3, "XCASE"), 53: (3, "ECHO"), 54: (3, "ECHOE"),
    55: (3, "ECHOK"), 56: (3, "ECHONL"), 57: (3, "NOFLSH"), 58: (3, "TOSTOP"), 59: (3, "IEXTEN"),
    60: (3, "ECHOCTL"), 61: (3, "ECHOKE"), 62: (3, "PENDIN"),
    70: (1, "OPOST"), 71: (1, "OLCUC"), 72: (1, "ONLCR"), 73: (1, "OCRNL"), 74: (1, "ONOCR"),
    75: (1, "ONLRET"),
    90: (2, "CS7"), 91: (2, "CS8"), 92: (2, "PARENB"), 93: (2, "PARODD"),
}  # fmt: skip
# Flags the termios module of older Pythons lacks, with their Linux values.
_FLAG_FALLBACK = {"IUTF8": 0o40000} if sys.platform == "linux" else {}
_TTY_OP_ISPEED, _TTY_OP_OSPEED = 128, 129
# OpenSSH sends 255 for a disabled control character; the system's
# _POSIX_VDISABLE is 0 on Linux and 255 on the BSDs.
_VDISABLE = 0 if sys.platform == "linux" else 0xFF


def apply_modes(fd: int, modes: dict[int, int]) -> None:
    """Apply RFC 4254 §8 terminal modes to the terminal ``fd``, best effort:
    opcodes this system does not know are skipped, as sshd skips them."""
    try:
        attrs: list[Any] = termios.tcgetattr(fd)
    except termios.error as exc:
        log.debug("tcgetattr: %s", exc)
        return
    cc: list[Any] = attrs[6]
    for op, value in modes.items():
        if op in _CC:
            index = getattr(termios, _CC[op], None)
            if index is not None and index < len(cc) and value <= 0xFF:
                cc[index] = bytes((_VDISABLE if value == 0xFF else value,))
        elif op in _FLAGS:
            where, name = _FLAGS[op]
            bit = getattr(termios, name, None) or _FLAG_FALLBACK.get(name)
            if bit:
                attrs[where] = attrs[where] | bit if value else attrs[where] & ~bit
        elif op in (_TTY_OP_ISPEED, _TTY_OP_OSPEED):
            speed = getattr(termios, f"B{value}", None)
            if speed is not None:
                attrs[4 if op == _TTY_OP_ISPEED else 5] = speed
    try:
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error as exc:
        log.debug("tcsetattr: %s", exc)


def set_window_size(fd: int, columns: int, rows: int, width_px: int = 0, height_px: int = 0) -> None:
    """TIOCSWINSZ; the kernel sends SIGWINCH to the terminal's foreground group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, width_px, height_px))


def _controlling_tty() -> None:
    # Runs in the child, after setsid and the dup2 of the slave onto 0, 1, 2.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _Pty:
    """A pseudo-terminal pair; the slave is closed here once the child has it."""

    def __init__(self, req: PtyRequest) -> None:
        self.term = req.term
        self.master, self.slave = os.openpty()
        self.name = os.ttyname(self.slave)
        apply_modes(self.slave, req.modes)
        set_window_size(self.slave, req.columns, req.rows, req.width_px, req.height_px)

    def close_slave(self) -> None:
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def close(self) -> None:
        self.close_slave()
        if self.master >= 0:
            os.close(self.master)  # with the transports' copies gone: hangup
            self.master = -1


# --- reaping -------------------------------------------------------------------------


def watch_child(pid: int, callback: Callable[[int | None], None]) -> None:
    """Reap ``pid`` and call ``callback(wait_status)`` on the running loop
    (None if someone else reaped it). asyncio's own subprocess watcher would
    reduce the status to a return code and lose the core-dump flag."""
    loop = asyncio.get_running_loop()
    pidfd_open: Callable[[int], int] | None = getattr(os, "pidfd_open", None)
    try:
        if pidfd_open is None:
            raise OSError("no pidfd_open")
        pidfd = pidfd_open(pid)
    except OSError:
        thread = threading.Thread(target=_wait_in_thread, args=(loop, pid, callback), daemon=True)
        thread.start()
        return

    def ready() -> None:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, None
        if done == 0:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        callback(status)

    loop.add_reader(pidfd, ready)


def _wait_in_thread(
    loop: asyncio.AbstractEventLoop, pid: int, callback: Callable[[int | None], None]
) -> None:
    status: int | None
    try:
        status = os.waitpid(pid, 0)[1]
    except ChildProcessError:
        status = None
    with contextlib.suppress(RuntimeError):  # the loop is gone
        loop.call_soon_threadsafe(callback, status)


def exit_request(status: int) -> tuple[str, bytes]:
    """The RFC 4254 §6.10 request for a wait status: ("exit-status", code) or
    ("exit-signal", name without "SIG", core-dump flag)."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name.removeprefix("SIG")
        except ValueError:
            name = "SIG@openssh.com"  # what sshd sends for a signal without a name
        sig = ExitSignal(signal=name, core_dumped=os.WCOREDUMP(status), message="")
        return "exit-signal", encode_exit_signal(sig)
    return "exit-status", encode_exit_status(os.waitstatus_to_exitcode(status))


# --- the child's streams -------------------------------------------------------------


class _Output(Outflow, asyncio.Protocol):
    """One output stream of the child: stdout, stderr or the pty master."""

    def __init__(self, session: ServerSession, extended: int | None) -> None:
        super().__init__()
        self.session = session
        self.extended = extended
        self.transport: asyncio.ReadTransport | None = None
        self.done = False  # EOF (or EIO, for a pty whose slave side is gone)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.add(data)
        self.session.output_ready()

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        self.session.output_ready()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Input(asyncio.BaseProtocol):
    """The child's stdin (or the pty master): written as channel data arrives;
    each write returns how much window credit may be granted now."""

    def __init__(self, session: ServerSession) -> None:
        self.session = session
        self.transport: asyncio.WriteTransport | None = None
        self._credit = Credit()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        transport.set_write_buffer_limits(high=STDIN_HIGH_WATER)

    def write(self, data: bytes | memoryview) -> int:
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            return len(data)  # nobody reads it: drop it, but give the window back
        transport.write(data)
        return self._credit.grant(len(data))

    def write_eof(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write_eof()  # closes the pipe once the buffer is flushed

    def pause_writing(self) -> None:
        self._credit.pause()

    def resume_writing(self) -> None:
        self._release(self._credit.resume())

    def connection_lost(self, exc: Exception | None) -> None:
        # The child closed its stdin: what was buffered for it is dropped.
        self.lost = True
        self._release(self._credit.release())

    def _release(self, n: int) -> None:
        if n:
            self.session.acknowledge(n)
            self.session.pump.flush()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# --- the session ---------------------------------------------------------------------


def open_session(
    pump: CorePump[ServerConnection], event: ChannelOpenRequested, policy: SessionPolicy
) -> ServerSession | None:
    """Answer a "session" channel open (RFC 4254 §6.1). Beyond MaxSessions the
    open is refused as sshd refuses it (CONNECT_FAILED, "open failed"), which
    with MaxSessions 0 leaves forwarding as the account's only use."""
    channels = pump.core.channels
    open_sessions = sum(isinstance(h, ServerSession) for h in pump.bridges.values())
    if open_sessions >= policy.max_sessions:
        log.info("no more sessions")
        channels.reject_open(event.channel_id, OpenFailureReason.CONNECT_FAILED, "open failed")
        return None
    session = ServerSession(pump, event.channel_id, policy)
    pump.bridges[event.channel_id] = session
    channels.accept_open(event.channel_id)
    return session


_Request = Callable[[bytes], bool]


class ServerSession:
    """The runtime handler of one server-side session channel."""

    def __init__(self, pump: CorePump[ServerConnection], channel_id: int, policy: SessionPolicy) -> None:
        self.pump = pump
        self.channel_id = channel_id
        self.policy = policy
        self.pty: _Pty | None = None
        self.env: dict[str, str] = {}  # accepted "env" requests
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_status: int | None = None  # the wait status, once reaped
        self.exited = False
        self._outputs: list[_Output] = []
        self._input: _Input | None = None
        self._early: list[bytes] = []  # stdin data that came before the pipe was connected
        self._connected = False  # the child's streams have transports
        self._remote_eof = False
        self._closed = False
        self._finished = False  # EOF, exit status and CLOSE were sent
        self._requests: dict[str, _Request] = {
            "pty-req": self._pty_req,
            "env": self._env,
            "exec": lambda extra: self._start(decode_exec(extra)),
            "shell": lambda extra: self._start(None),
            "subsystem": self._subsystem,
            "window-change": self._window_change,
            "signal": self._signal,
        }

    @property
    def channels(self) -> Channels:
        channels: Channels = self.pump.core.channels
        return channels

    # --- ChannelHandler ------------------------------------------------------------

    def channel_open(self) -> None:
        """Accepted by :func:`open_session`: nothing runs until exec or shell."""

    def channel_refused(self, reason: int, description: str) -> None:
        self.channel_closed()  # a server-side session is never ours to open

    def channel_request(self, event: ChannelRequestReceived) -> bool:
        handler = self._requests.get(event.name)
        if handler is None:
            return False  # x11-req, auth-agent-req ...: the pump refuses them
        try:
            ok = handler(event.extra)
        except DecodeError as exc:
            log.debug("channel %d: malformed %s request: %s", self.channel_id, escape_text(event.name), exc)
            ok = False
        if event.want_reply and not self._closed:
            self.channels.reply_request(self.channel_id, ok)
        return True

    def channel_request_replied(self, success: bool) -> None:
        """The server sends no want_reply requests on a session."""

    def channel_data(self, data: bytes | memoryview, extended: int | None) -> None:
        if self._closed:
            return
        if extended is not None:
            self.acknowledge(len(data))  # RFC 4254 §5.2: no stream takes extended data in
        elif self._input is None:
            self._early.append(bytes(data))  # bounded by the window we granted
        else:
            self.acknowledge(self._input.write(data))

    def channel_eof(self) -> None:
        self._remote_eof = True
        if self._input is not None and self.pty is None:
            self._input.write_eof()

    def channel_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pump.bridges.pop(self.channel_id, None)
        self._hangup()
        self._close_streams()
        if self.pty is not None:
            self.pty.close()

    def pump_data(self) -> None:
        """Send what waits as far as the window allows; read on only when
        nothing waits; finish once the child is done."""
        if self._closed or self._finished or not self._connected or self.channel_id not in self.channels:
            return
        can_send = self.pump.can_send()
        for output in self._outputs:
            if output.pending is not None and can_send:
                output.send(self.channels, self.channel_id, output.extended)
        blocked = not can_send or any(output.pending is not None for output in self._outputs)
        for output in self._outputs:
            output.read(output.transport, not blocked)
        self._maybe_finish()

    # --- from the streams and the child -------------------------------------------

    def output_ready(self) -> None:
        self.pump_data()
        self.pump.flush()

    def acknowledge(self, n: int) -> None:
        if n and not self._closed and self.channel_id in self.channels:
            self.channels.acknowledge(self.channel_id, n)

    def _child_exited(self, status: int | None) -> None:
        self.exited = True
        self.exit_status = status
        if self.process is not None:
            # Ours to reap; Popen must not try again.
            code = -1 if status is None else os.waitstatus_to_exitcode(status)
            self.process.returncode = code
            # The decoded status (a raw wait status reads 768 for exit 3).
            how = f"killed by signal {-code}" if code < 0 and status is not None else f"exited: status {code}"
            log.debug("session %d: child %d %s", self.channel_id, self.process.pid, how)
        self.pump_data()
        self.pump.flush()

    def _maybe_finish(self) -> None:
        # RFC 4254 §6.10: every byte of output, then EOF, the exit status, CLOSE.
        if self._finished or not self.exited:
            return
        if any(not output.done or output.pending is not None for output in self._outputs):
            return
        self._finished = True
        channels, cid = self.channels, self.channel_id
        info = channels.channel(cid)
        if info.state is not ChannelState.OPEN:
            return
        if not info.eof_sent:
            channels.send_eof(cid)
        if self.exit_status is not None:
            name, payload = exit_request(self.exit_status)
            channels.send_request(cid, name, False, payload)
        channels.close(cid)
        if self._input is not None:
            self._input.close()

    def _hangup(self) -> None:
        """sshd's SIGHUP to what is left of the session: the child, if it
        runs, or the process group that still holds its output open."""
        process = self.process
        if process is None:
            return
        if self.exited and all(output.done for output in self._outputs):
            return  # nothing left; the group id may no longer be ours
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGHUP)

    # --- requests (RFC 4254 §6.2-§6.9) --------------------------------------------

    def _pty_req(self, extra: bytes) -> bool:
        req = decode_pty_req(extra)
        if self.process is not None or self.pty is not None:
            return False
        key_options = login_key_options(self.pump.core)
        if not self.policy.permit_tty or (key_options is not None and not key_options.allows_pty()):
            log.info("session %d: pty allocation disabled", self.channel_id)
            return False
        try:
            self.pty = _Pty(req)
        except OSError as exc:
            log.error("openpty: %s", exc)
            return False
        return True

    def _env(self, extra: bytes) -> bool:
        name, value = decode_env(extra)
        if self.process is not None:
            return False
        if not name or "=" in name or "\x00" in name + value or not self.policy.accepts_env(name):
            log.debug("Ignoring env request %s: disallowed name", escape_text(name, limit=64))
            return False
        if name not in self.env and len(self.env) >= MAX_ENV:
            log.debug("Ignoring env request %s: too many env vars", escape_text(name, limit=64))
            return False
        self.env[name] = value
        return True

    def _subsystem(self, extra: bytes) -> bool:
        name = decode_subsystem(extra)
        log.info(
            "subsystem request for %s by user %s failed, subsystem not found",
            escape_text(name),
            escape_text(self.pump.core.auth_username or ""),
        )
        return False

    def _window_change(self, extra: bytes) -> bool:
        columns, rows, width, height = decode_window_change(extra)
        if self.pty is None or self.pty.master < 0:
            return False
        try:
            set_window_size(self.pty.master, columns, rows, width, height)
        except OSError:
            return False
        return True

    def _signal(self, extra: bytes) -> bool:
        name = decode_signal(extra)
        if name not in SIGNALS or self.process is None or self.exited:
            return False
        try:
            os.killpg(self.process.pid, getattr(signal, f"SIG{name}"))
        except (ProcessLookupError, PermissionError):
            return False
        return True

    # --- starting the child -------------------------------------------------------

    def _start(self, command: str | None) -> bool:
        """exec (``command``) or shell (None), through the login shell; a
        forced command (authorized_keys ``command=``) replaces either."""
        if self.process is not None or self._closed:
            return False
        key_options = login_key_options(self.pump.core)
        forced = key_options.forced_command if key_options is not None else None
        account = pwd.getpwuid(os.getuid())
        shell = account.pw_shell or "/bin/sh"
        env = self._environment(account, shell, command if forced is not None else None)
        run = forced if forced is not None else command
        argv = [shell, "-l"] if run is None else [shell, "-c", run]
        cwd = account.pw_dir if os.path.isdir(account.pw_dir) else "/"
        try:
            self.process = self._popen(argv, env, cwd)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            # ValueError: a NUL in the command or the environment, which
            # execve cannot take; SubprocessError: the pty setup failed.
            log.error("session %d: cannot run %s: %s", self.channel_id, shell, exc)
            return False
        finally:
            if self.pty is not None:
                self.pty.close_slave()  # the child has it; EIO on the master once it is gone
        watch_child(self.process.pid, self._child_exited)
        self._log_start(command, forced)
        self.pump._spawn(self._connect())
        return True

    def _popen(self, argv: list[str], env: dict[str, str], cwd: str) -> subprocess.Popen[bytes]:
        if self.pty is not None:
            slave = self.pty.slave
            return subprocess.Popen(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_controlling_tty,  # the slave must be its controlling terminal
            )
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )

    def _environment(self, account: pwd.struct_passwd, shell: str, original: str | None) -> dict[str, str]:
        env = {
            "USER": account.pw_name,
            "LOGNAME": account.pw_name,
            "HOME": account.pw_dir,
            "SHELL": shell,
            "PATH": DEFAULT_PATH,
        }
        # Accepted variables may replace the basics (AcceptEnv is the
        # administrator's choice), never what describes the connection.
        env.update(self.env)
        client_host, client_port = (self.pump.peername or ("0.0.0.0", 0))[:2]
        server_host, server_port = (self.pump.sockname or ("0.0.0.0", 0))[:2]
        env["SSH_CLIENT"] = f"{client_host} {client_port} {server_port}"
        env["SSH_CONNECTION"] = f"{client_host} {client_port} {server_host} {server_port}"
        if self.pty is not None:
            env["SSH_TTY"] = self.pty.name
            if self.pty.term:
                env["TERM"] = self.pty.term
        if original is not None:
            env["SSH_ORIGINAL_COMMAND"] = original
        return env

    def _log_start(self, command: str | None, forced: str | None) -> None:
        # sshd's "Starting session" line.
        if forced is not None:
            what = f"forced-command (key-option) '{forced}'"
        else:
            what = "shell" if command is None else "command"
        if self.pty is not None:
            what += f" on {self.pty.name.removeprefix('/dev/')}"
        host, port = (self.pump.peername or ("?", 0))[:2]
        user = escape_text(self.pump.core.auth_username or "")
        what = escape_text(what)  # a forced command is the admin's, but one line all the same
        log.info("Starting session: %s for %s from %s port %s id %d", what, user, host, port, self.channel_id)

    async def _connect(self) -> None:
        """Give the child's streams asyncio transports, then let data flow."""
        process = self.process
        assert process is not None
        files: list[IO[bytes]]
        streams: list[tuple[IO[bytes], int | None]]
        if self.pty is not None:
            # Copies of the master: the original stays for window-change.
            master = self.pty.master
            # The transports own them (and close them): no context manager.
            files = [open(os.dup(master), "rb", buffering=0), open(os.dup(master), "wb", buffering=0)]  # noqa: SIM115
            streams = [(files[0], None)]
            stdin = files[1]
        else:
            assert process.stdin is not None and process.stdout is not None and process.stderr is not None
            files = [process.stdout, process.stderr, process.stdin]
            streams = [(process.stdout, None), (process.stderr, EXTENDED_DATA_STDERR)]
            stdin = process.stdin
        loop = asyncio.get_running_loop()
        try:
            for file, extended in streams:
                output = _Output(self, extended)
                self._outputs.append(output)
                await self._connect_output(loop, output, file)
                files.remove(file)
            protocol = _Input(self)
            await loop.connect_write_pipe(lambda: protocol, stdin)
            files.remove(stdin)
        finally:
            for file in files:  # cancelled with the connection: not handed over
                file.close()
        self._input = protocol
        if self._closed:  # while the transports were being made
            self._close_streams()
            return
        self._connected = True
        early, self._early = self._early, []
        for data in early:
            self.acknowledge(protocol.write(data))
        if self._remote_eof:
            self.channel_eof()
        self.pump_data()
        self.pump.flush()

    @staticmethod
    async def _connect_output(loop: asyncio.AbstractEventLoop, output: _Output, file: IO[bytes]) -> None:
        await loop.connect_read_pipe(lambda: output, file)

    def _close_streams(self) -> None:
        for output in self._outputs:
            output.close()
        if self._input is not None:
            self._input.close()
