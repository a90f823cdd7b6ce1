"""hashiked's session channels, driven in-process through a hashike client's
core: a minimal channel handler (:class:`Session`) opens a "session", sends
requests and data, and records what comes back in order.

Covered: exit status and exit-signal, stdout/stderr separation, stdin through
``cat`` with EOF, the order data -> EOF -> exit-status -> CLOSE, flow control
in both directions, signals, env filtering (AcceptEnv), the environment,
forced commands with SSH_ORIGINAL_COMMAND, pty (size, modes, window-change),
no-pty / restrict / PermitTTY, MaxSessions (0: forwarding only), subsystem
refusal, and SIGHUP to what is left when the client goes away.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pwd
import re
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hashike.aio.client import SSHClient
from hashike.aio.server import ServerOptions
from hashike.aio.session_server import STDIN_HIGH_WATER, exit_request
from hashike.config.policy import SessionPolicy
from hashike.config.sshd_config import ConfigError, parse_server_config, session_policy
from hashike.proto.constants import OpenFailureReason
from hashike.proto.events import ChannelRequestReceived
from hashike.proto.session import (
    PtyRequest,
    decode_exit_signal,
    decode_exit_status,
    encode_env,
    encode_exec,
    encode_pty_req,
    encode_signal,
    encode_window_change,
)
from tests.aio.forwarding import hashike_pair
from tests.helpers import eventually

WAIT = 20.0  # bound on any single wait
ECHO, ICANON = 53, 51  # RFC 4254 §8 opcodes


class Session:
    """A client-side session channel handler that records everything."""

    def __init__(self, client: SSHClient, *, window: int | None = None, auto_ack: bool = True) -> None:
        self.pump: Any = client._pump
        self.channels = client.core.channels
        self.auto_ack = auto_ack
        self.events: list[tuple[str, Any]] = []  # ("data"|"stderr", bytes), ("eof",), ("exit-status", n) ...
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.unacked = 0
        self._window = window
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._replies: asyncio.Queue[bool] = asyncio.Queue()
        self._pending: memoryview | None = None
        self._eof_after_send = False
        self.changed = asyncio.Event()
        self.channel_id = -1

    async def open(self) -> Session:
        self.channel_id = self.channels.open("session", window=self._window)
        self.pump.bridges[self.channel_id] = self
        self.pump.flush()
        await asyncio.wait_for(self.opened, WAIT)
        return self

    # --- commands ---

    def request(self, name: str, extra: bytes = b"", *, want_reply: bool = True) -> None:
        self.channels.send_request(self.channel_id, name, want_reply, extra)
        self.pump.flush()

    async def reply(self) -> bool:
        return await asyncio.wait_for(self._replies.get(), WAIT)

    async def ask(self, name: str, extra: bytes = b"") -> bool:
        self.request(name, extra)
        return await self.reply()

    async def exec(self, command: str) -> bool:
        return await self.ask("exec", encode_exec(command))

    def send(self, data: bytes, *, eof: bool = False) -> None:
        """Queue stdin; sent as the window allows (then EOF, if asked)."""
        self._pending = memoryview(data)
        self._eof_after_send = eof
        self.pump_data()

    def acknowledge(self) -> None:
        n, self.unacked = self.unacked, 0
        if n and self.channel_id in self.channels:
            self.channels.acknowledge(self.channel_id, n)
            self.pump.flush()

    async def wait_for(self, predicate: Any) -> None:
        async def poll() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(poll(), WAIT)

    async def finish(self) -> None:
        await asyncio.wait_for(asyncio.shield(self.closed), WAIT)

    # --- results ---

    @property
    def kinds(self) -> list[str]:
        """The event kinds in order, runs of data collapsed to one."""
        out: list[str] = []
        for kind, *_ in self.events:
            if not out or out[-1] != kind or kind not in ("data", "stderr"):
                out.append(kind)
        return out

    @property
    def exit_status(self) -> int | None:
        found = [e[1] for e in self.events if e[0] == "exit-status"]
        return found[0] if found else None

    @property
    def exit_signal(self) -> tuple[str, bool] | None:
        found = [e[1] for e in self.events if e[0] == "exit-signal"]
        return found[0] if found else None

    # --- ChannelHandler ---

    def _note(self, *event: Any) -> None:
        self.events.append(tuple(event))
        self.changed.set()

    def channel_open(self) -> None:
        self.opened.set_result(None)

    def channel_refused(self, reason: int, description: str) -> None:
        self.opened.set_exception(ConnectionRefusedError(reason, description))

    def channel_data(self, data: bytes | memoryview, extended: int | None) -> None:
        (self.stdout if extended is None else self.stderr).extend(data)
        self._note("data" if extended is None else "stderr", len(data))
        self.unacked += len(data)
        if self.auto_ack:
            self.acknowledge()

    def channel_eof(self) -> None:
        self._note("eof")

    def channel_closed(self) -> None:
        self._note("closed")
        if not self.closed.done():
            self.closed.set_result(None)

    def channel_request(self, event: ChannelRequestReceived) -> bool:
        if event.name == "exit-status":
            self._note("exit-status", decode_exit_status(event.extra))
        elif event.name == "exit-signal":
            sig = decode_exit_signal(event.extra)
            self._note("exit-signal", (sig.signal, sig.core_dumped))
        else:
            return False
        return True

    def channel_request_replied(self, success: bool) -> None:
        self._replies.put_nowait(success)

    def pump_data(self) -> None:
        if self._pending is not None and self.channel_id in self.channels:
            n = self.channels.send_data(self.channel_id, self._pending)
            rest = self._pending[n:]
            self._pending = rest if len(rest) else None
            if self._pending is None and self._eof_after_send:
                self.channels.send_eof(self.channel_id)
            self.pump.flush()
            self.changed.set()


def policy(**kwargs: Any) -> ServerOptions:
    return ServerOptions(sessions=SessionPolicy(**kwargs))


async def run(client: SSHClient, command: str, stdin: bytes | None = None) -> Session:
    session = await Session(client).open()
    assert await session.exec(command)
    if stdin is not None:
        session.send(stdin, eof=True)
    await session.finish()
    return session


# --- exit status, streams, ordering --------------------------------------------------


async def test_exit_status_and_close_order(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await run(client, "echo out; exit 3")
    assert session.exit_status == 3
    assert bytes(session.stdout) == b"out\n"
    # RFC 4254 §6.10: every byte of output, EOF, exit-status, then CLOSE.
    assert session.kinds == ["data", "eof", "exit-status", "closed"]


async def test_child_exit_is_logged_decoded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # "exited: 768" was the raw wait status of exit 3.
    caplog.set_level(logging.DEBUG, logger="hashike")
    async with hashike_pair(tmp_path) as (_server, client):
        await run(client, "exit 3")
        await run(client, "kill -TERM $$")
    found = (re.fullmatch(r"session \d+: child \d+ (.*)", r.getMessage()) for r in caplog.records)
    assert [m.group(1) for m in found if m] == ["exited: status 3", "killed by signal 15"]


async def test_stdout_and_stderr_are_separate(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await run(client, "echo out; echo err >&2; echo out2")
    assert bytes(session.stdout) == b"out\nout2\n"
    assert bytes(session.stderr) == b"err\n"  # extended data type 1
    assert session.exit_status == 0
    assert session.kinds[-3:] == ["eof", "exit-status", "closed"]


async def test_stdin_through_cat_byte_for_byte(tmp_path: Path) -> None:
    data = os.urandom(6 << 20)  # three times the window
    async with hashike_pair(tmp_path) as (_server, client):
        session = await run(client, "cat", stdin=data)
    assert hashlib.sha256(session.stdout).digest() == hashlib.sha256(data).digest()
    assert session.exit_status == 0
    assert session.kinds == ["data", "eof", "exit-status", "closed"]


async def test_stdin_sent_before_the_exec_reply(tmp_path: Path) -> None:
    """Data may arrive before the child's pipes are connected; none is lost."""
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        session.request("exec", encode_exec("cat"))
        session.send(b"early bird\n", eof=True)
        assert await session.reply()
        await session.finish()
    assert bytes(session.stdout) == b"early bird\n"
    assert session.exit_status == 0


async def test_exit_signal(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await run(client, "kill -TERM $$")
    assert session.exit_signal == ("TERM", False)
    assert session.exit_status is None
    assert session.kinds == ["eof", "exit-signal", "closed"]


def test_exit_request_encodings() -> None:
    name, payload = exit_request(7 << 8)
    assert (name, decode_exit_status(payload)) == ("exit-status", 7)
    # A wait status with the core-dump bit (0x80) and SIGSEGV.
    name, payload = exit_request(0x80 | signal.SIGSEGV)
    sig = decode_exit_signal(payload)
    assert (name, sig.signal, sig.core_dumped) == ("exit-signal", "SEGV", True)


async def test_signal_request_reaches_the_process_group(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        # "ready" comes from the child that becomes sleep, so it is printed
        # after the shell reset the child's signal handlers: a signal sent
        # between the shell's fork and its exec would otherwise be caught by
        # the shell's own handler in the child, and sleep would never end.
        assert await session.exec("sh -c 'echo ready; exec sleep 1000'; echo not reached")
        await session.wait_for(lambda: b"ready\n" in session.stdout)
        session.request("signal", encode_signal("INT"), want_reply=False)
        await session.finish()
    assert session.exit_signal == ("INT", False) or session.exit_status == 130
    assert b"not reached" not in session.stdout


async def test_shell_without_pty_reads_commands_from_stdin(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        assert await session.ask("shell")
        session.send(b"echo shell:$SSH_TTY:; exit 5\n", eof=True)
        await session.finish()
    assert b"shell::\n" in session.stdout
    assert session.exit_status == 5


# --- flow control ----------------------------------------------------------------------


async def test_output_waits_for_the_window(tmp_path: Path) -> None:
    """With a 64 KiB window nobody acknowledges, the server sends 64 KiB and
    stops reading; acknowledging lets the rest through, and then EOF."""
    size = 8 << 20
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client, window=64 * 1024, auto_ack=False).open()
        assert await session.exec(f"head -c {size} /dev/zero")
        await session.wait_for(lambda: len(session.stdout) == 64 * 1024)
        await asyncio.sleep(0.2)  # a server that ignored the window would send more now
        assert len(session.stdout) == 64 * 1024
        assert session.kinds == ["data"]
        session.auto_ack = True
        session.acknowledge()
        await session.finish()
    assert len(session.stdout) == size
    assert session.exit_status == 0


async def test_input_credit_waits_for_the_child(tmp_path: Path) -> None:
    """A child that does not read its stdin: the server stops granting window,
    so the client cannot push more than the window and the pipe's buffers."""
    async with hashike_pair(tmp_path) as (server, client):
        session = await Session(client).open()
        assert await session.exec("exec sleep 1000")
        window = next(iter(server.connections)).core.channels.window  # what the server granted
        data = bytes(window + (32 << 20))
        session.send(data)
        await session.wait_for(lambda: client.core.channels.window_available(session.channel_id) == 0)
        await asyncio.sleep(0.3)  # a server granting credit regardless would reopen the window
        assert client.core.channels.window_available(session.channel_id) == 0
        assert session._pending is not None
        sent = len(data) - len(session._pending)
        # The window, plus at most what was written (and credited) before
        # the pipe's buffer reached its high mark.
        assert sent <= window + STDIN_HIGH_WATER + (1 << 20), sent
        session.request("signal", encode_signal("KILL"), want_reply=False)
        await session.finish()
    assert session.exit_signal == ("KILL", False)


# --- environment -------------------------------------------------------------------------


async def test_environment_and_accept_env(tmp_path: Path) -> None:
    options = policy(accept_env=("LC_*", "HASHIKE_OK"))
    async with hashike_pair(tmp_path, options) as (server, client):
        port = server.port
        session = await Session(client).open()
        assert await session.ask("env", encode_env("HASHIKE_OK", "yes"))
        assert await session.ask("env", encode_env("LC_HASHIKE", "c"))
        assert not await session.ask("env", encode_env("HASHIKE_NO", "no"))
        assert not await session.ask("env", encode_env("SSH_ORIGINAL_COMMAND", "x"))
        script = (
            'echo "ok=$HASHIKE_OK lc=$LC_HASHIKE no=$HASHIKE_NO"; echo "user=$USER logname=$LOGNAME"; '
            'echo "home=$HOME shell=$SHELL"; echo "path=$PATH"; echo "conn=$SSH_CONNECTION"; '
            'echo "client=$SSH_CLIENT"; echo "tty=${SSH_TTY-unset} orig=${SSH_ORIGINAL_COMMAND-unset}"; pwd'
        )
        assert await session.exec(script)
        await session.finish()
        local = client.local_address
        assert local is not None
    account = pwd.getpwuid(os.getuid())
    lines = bytes(session.stdout).decode().splitlines()
    assert lines[0] == "ok=yes lc=c no="
    assert lines[1] == f"user={account.pw_name} logname={account.pw_name}"
    assert lines[2] == f"home={account.pw_dir} shell={account.pw_shell or '/bin/sh'}"
    assert lines[3].startswith("path=") and "/usr/bin" in lines[3]
    assert lines[4] == f"conn=127.0.0.1 {local[1]} 127.0.0.1 {port}"
    assert lines[5] == f"client=127.0.0.1 {local[1]} {port}"
    assert lines[6] == "tty=unset orig=unset"
    assert os.path.realpath(lines[7]) == os.path.realpath(account.pw_dir)


async def test_env_refused_by_default(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        assert not await session.ask("env", encode_env("LANG", "C"))
        assert await session.exec('echo "lang=${LANG-unset}"')
        await session.finish()
    assert bytes(session.stdout) == b"lang=unset\n"


# --- forced commands ---------------------------------------------------------------------


async def test_forced_command_runs_instead(tmp_path: Path) -> None:
    key = 'command="echo forced:${SSH_ORIGINAL_COMMAND-none}; exit 7"'
    async with hashike_pair(tmp_path, key_options=key) as (_server, client):
        session = await run(client, "echo chosen by the client")
        shell = await Session(client).open()
        assert await shell.ask("shell")
        await shell.finish()
    assert bytes(session.stdout) == b"forced:echo chosen by the client\n"
    assert session.exit_status == 7
    assert bytes(shell.stdout) == b"forced:none\n"  # a shell has no original command


# --- pty -----------------------------------------------------------------------------------


def pty_req(columns: int = 100, rows: int = 40) -> bytes:
    return encode_pty_req(PtyRequest(term="xterm-test", columns=columns, rows=rows, modes={}))


async def test_pty_size_term_and_tty(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        assert await session.ask("pty-req", pty_req(100, 40))
        assert await session.exec('tty; stty size; echo "term=$TERM sshtty=$SSH_TTY"; exit 4')
        await session.finish()
    text = bytes(session.stdout).decode()
    lines = text.split("\r\n")  # the pty's ONLCR
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), text
    assert lines[1] == "40 100"
    assert lines[2] == f"term=xterm-test sshtty={lines[0]}"
    assert session.exit_status == 4
    assert session.stderr == b""  # a pty has no separate stderr
    assert session.kinds == ["data", "eof", "exit-status", "closed"]


async def test_pty_modes_are_applied(tmp_path: Path) -> None:
    modes = {ECHO: 0, ICANON: 1, 1: 0x07}  # no echo; VINTR = ^G
    req = encode_pty_req(PtyRequest(term="vt100", columns=80, rows=24, modes=modes))
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        assert await session.ask("pty-req", req)
        assert await session.exec("stty -a")
        await session.finish()
    text = bytes(session.stdout).decode()
    assert re.search(r"(^|\s)-echo(\s|$)", text), text
    assert re.search(r"(^|\s)icanon(\s|$)", text), text
    assert "intr = ^G" in text, text


async def test_window_change_sends_sigwinch(tmp_path: Path) -> None:
    script = "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done"
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        assert await session.ask("pty-req", pty_req(80, 24))
        assert await session.exec(script)
        await session.wait_for(lambda: b"ready" in session.stdout)
        session.request("window-change", encode_window_change(132, 50), want_reply=False)
        await session.finish()
    assert b"50 132\r\n" in session.stdout
    assert session.exit_status == 0


async def test_pty_input_and_interactive_shell(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        assert await session.ask("pty-req", pty_req())
        assert await session.ask("shell")
        session.send(b"echo hello-$((6*7)); exit 9\n")
        await session.finish()
    assert b"hello-42" in session.stdout
    assert session.exit_status == 9


@pytest.mark.parametrize(
    ("key_options", "sessions"),
    [("no-pty", SessionPolicy()), ("restrict", SessionPolicy()), ("", SessionPolicy(permit_tty=False))],
)
async def test_pty_refused(tmp_path: Path, key_options: str, sessions: SessionPolicy) -> None:
    options = ServerOptions(sessions=sessions)
    async with hashike_pair(tmp_path, options, key_options=key_options) as (_server, client):
        session = await Session(client).open()
        assert not await session.ask("pty-req", pty_req())
        assert await session.exec("tty; exit 0")  # the session goes on without one
        await session.finish()
    assert bytes(session.stdout) == b"not a tty\n"


# --- policy: MaxSessions, subsystems -----------------------------------------------------


async def test_max_sessions_zero_refuses_sessions_but_forwards(tmp_path: Path) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = target.sockets[0].getsockname()[1]
    async with hashike_pair(tmp_path, policy(max_sessions=0)) as (_server, client):
        session = Session(client)
        with pytest.raises(ConnectionRefusedError) as refused:
            await session.open()
        # sshd's answer: "open failed: connect failed: open failed".
        assert refused.value.args == (OpenFailureReason.CONNECT_FAILED, "open failed")
        reader, writer = await client.open_connection("127.0.0.1", port)
        writer.write(b"still forwarding\n")
        assert await asyncio.wait_for(reader.readline(), WAIT) == b"still forwarding\n"
        writer.close()
        assert not client.core.closed
    target.close()


async def test_max_sessions_counts_open_sessions(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path, policy(max_sessions=1)) as (_server, client):
        first = await Session(client).open()
        with pytest.raises(ConnectionRefusedError):
            await Session(client).open()
        assert await first.exec("true")
        await first.finish()
        again = await run(client, "exit 2")  # the first one is closed: room again
    assert again.exit_status == 2


async def test_subsystem_is_refused_cleanly(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        assert not await session.ask("subsystem", encode_exec("sftp"))
        assert not await session.ask("x11-req", b"")
        assert await session.exec("echo still here")  # the channel is usable
        await session.finish()
    assert bytes(session.stdout) == b"still here\n"


async def test_second_exec_and_late_requests_are_refused(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        assert await session.exec("read line; echo got $line")
        assert not await session.exec("echo again")
        assert not await session.ask("pty-req", pty_req())
        assert not await session.ask("env", encode_env("LC_ALL", "C"))
        assert not await session.ask("exec", b"\x00\x00\x01")  # malformed: refused, not fatal
        session.send(b"it\n", eof=True)
        await session.finish()
    assert bytes(session.stdout) == b"got it\n"


async def test_command_execve_cannot_take_is_refused(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        assert not await session.exec("echo a\x00b")  # a NUL: refused, the server carries on
        assert await session.exec("echo fine")
        await session.finish()
    assert bytes(session.stdout) == b"fine\n"


def test_sshd_config_session_keywords() -> None:
    settings = parse_server_config(
        None, ["MaxSessions 0", "PermitTTY no", "AcceptEnv LANG LC_*", "AcceptEnv TZ", "MaxSessions 5"]
    )
    assert session_policy(settings) == SessionPolicy(
        max_sessions=0, permit_tty=False, accept_env=("LANG", "LC_*", "TZ")
    )
    assert session_policy(parse_server_config(None)) == SessionPolicy()
    assert SessionPolicy(accept_env=("LC_*",)).accepts_env("LC_ALL")
    assert not SessionPolicy(accept_env=("LC_*",)).accepts_env("LANG")
    for bad in ("MaxSessions -1", "MaxSessions ten", "PermitTTY maybe", "AcceptEnv A=B", "AcceptEnv"):
        with pytest.raises(ConfigError, match=r"^command-line line 0: "):
            parse_server_config(None, [bad])


# --- hangup --------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    """No such process, or a zombie (reaped by whoever inherited it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def _wait_gone(pids: list[int]) -> None:
    await eventually(
        lambda: all(_gone(pid) for pid in pids),
        10,
        what=lambda: f"processes left over: {[p for p in pids if not _gone(p)]}",
    )


@pytest.mark.parametrize("with_pty", [False, True])
async def test_leftovers_get_sighup_when_the_client_disconnects(tmp_path: Path, with_pty: bool) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        if with_pty:
            assert await session.ask("pty-req", pty_req())
        # A background sleep and the shell waiting for it.
        assert await session.exec("sleep 1000 & echo $! $$; wait")
        await session.wait_for(lambda: re.search(rb"\d+ \d+\s", session.stdout) is not None)
        pids = [int(p) for p in bytes(session.stdout).split()[:2]]
        assert not any(_gone(pid) for pid in pids)
        client.close()
        await client.wait_closed()
        await _wait_gone(pids)


async def test_closing_the_channel_hangs_up(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        session = await Session(client).open()
        assert await session.exec("echo $$; exec sleep 1000")
        await session.wait_for(lambda: b"\n" in session.stdout)
        pid = int(bytes(session.stdout))
        client.core.channels.close(session.channel_id)
        session.pump.flush()
        await session.finish()
        await _wait_gone([pid])
        assert not client.core.closed
        again = await run(client, "echo next")  # the connection is fine
    assert bytes(again.stdout) == b"next\n"


async def test_many_sessions_on_one_connection(tmp_path: Path) -> None:
    options = replace(ServerOptions(), sessions=SessionPolicy(max_sessions=10))
    async with hashike_pair(tmp_path, options) as (_server, client):
        sessions = await asyncio.gather(*(run(client, f"echo {i}; exit {i}") for i in range(10)))
    for i, session in enumerate(sessions):
        assert bytes(session.stdout) == f"{i}\n".encode()
        assert session.exit_status == i
