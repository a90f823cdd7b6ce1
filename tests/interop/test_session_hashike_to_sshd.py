"""hashike's sessions against a real OpenSSH sshd: exit status, byte streams,
a real pty driven through a pty of our own, escapes, the terminal restored,
forwarding alongside a session, and the library's run()/create_process()."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.aio.client import SSHClient, connect
from hashike.aio.client_auth import AuthSettings, file_identity

if TYPE_CHECKING:
    from tests.interop.conftest import SshdServer, StartSshd

HOST = "127.0.0.1"
DEADLINE = 30.0  # seconds any one wait may take before the test fails


def hashike(sshd: SshdServer, known_hosts: Path, *args: str) -> list[str]:
    """The CLI as a user runs it, with no config of theirs."""
    return [
        sys.executable, "-m", "hashike.cli.client", "-F", "none",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
        "-i", str(sshd.client_key), "-p", str(sshd.port), *args,
    ]  # fmt: skip


@pytest.fixture
def sshd(start_sshd: StartSshd) -> SshdServer:
    # sshd at LogLevel DEBUG3 passes debug lines to the session's stderr;
    # VERBOSE keeps the client's stderr exactly what the command wrote.
    return start_sshd(LogLevel="VERBOSE")


@pytest.fixture
def known(sshd: SshdServer, tmp_path: Path) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_hosts_lines())
    return path


def run_cli(
    argv: list[str], *, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        argv,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------- commands


@pytest.mark.parametrize("status", [0, 3, 255])
def test_exit_status_becomes_ours(sshd: SshdServer, known: Path, status: int) -> None:
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}", f"exit {status}"))
    assert result.returncode == status, result.stderr
    assert result.stdout == b"" and result.stderr == b""


def test_command_words_are_joined_like_ssh(sshd: SshdServer, known: Path) -> None:
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}", "echo", "a  b", "c"))
    assert result.stdout == b"a b c\n"


def test_killed_by_signal_exits_255(sshd: SshdServer, known: Path) -> None:
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}", "kill -9 $$"))
    assert result.returncode == 255
    assert result.stderr == b""  # ssh says nothing either


def test_16_mib_through_cat_byte_for_byte(sshd: SshdServer, known: Path) -> None:
    data = os.urandom(16 * 1024 * 1024)
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}", "cat"), input=data, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout) == len(data)
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(data).hexdigest()
    assert result.stderr == b""


def test_stderr_stays_separate(sshd: SshdServer, known: Path) -> None:
    command = "printf 'out1\\n'; printf 'err1\\n' >&2; head -c 300000 /dev/zero; printf 'err2\\n' >&2; exit 7"
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}", command))
    assert result.returncode == 7
    assert result.stdout == b"out1\n" + bytes(300000)
    assert result.stderr == b"err1\nerr2\n"


def test_binary_stdin_and_eof(sshd: SshdServer, known: Path) -> None:
    data = bytes(range(256)) * 64 + b"\x00\r\n\x04~.\n~."  # control bytes and escapes: no pty, no escapes
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}", "sha256sum; echo done"), input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{hashlib.sha256(data).hexdigest()}  -\ndone\n".encode()


def test_escapes_without_a_pty_only_with_e(sshd: SshdServer, known: Path) -> None:
    data = b"first\n~.\nnever\n"
    result = run_cli(hashike(sshd, known, "-e", "~", f"{sshd.user}@{HOST}", "cat"), input=data)
    assert result.returncode == 255  # ~. ended it: no exit status
    assert b"first\n".startswith(result.stdout)  # the echo may or may not have come back
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}", "cat"), input=data)
    assert (result.returncode, result.stdout) == (0, data)


def test_stdin_null(sshd: SshdServer, known: Path) -> None:
    with subprocess.Popen(
        hashike(sshd, known, "-n", f"{sshd.user}@{HOST}", "cat; echo after-eof"),
        stdin=subprocess.PIPE,  # left open: -n must not read it
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    assert out == b"after-eof\n"


def test_no_pty_for_a_command_unless_asked(sshd: SshdServer, known: Path) -> None:
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}", "tty"))
    assert result.stdout == b"not a tty\n"
    # -t with stdin not a terminal: ssh's warning, and still no pty.
    result = run_cli(hashike(sshd, known, "-t", f"{sshd.user}@{HOST}", "tty"))
    assert result.stdout == b"not a tty\n"
    assert result.stderr == b"Pseudo-terminal will not be allocated because stdin is not a terminal.\n"
    # -tt forces one even so.
    result = run_cli(hashike(sshd, known, "-tt", f"{sshd.user}@{HOST}", "tty"))
    assert result.stdout.startswith(b"/dev/pts/"), result
    assert result.stderr == f"Connection to {HOST} closed.\r\n".encode()


def test_shell_from_a_pipe(sshd: SshdServer, known: Path) -> None:
    """No command and stdin not a terminal: ssh's warning, then a shell
    without a pty reading its commands from our stdin."""
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}"), input=b"echo from-stdin; tty; exit 4\n")
    assert result.returncode == 4
    assert result.stdout == b"from-stdin\nnot a tty\n"
    assert result.stderr == b"Pseudo-terminal will not be allocated because stdin is not a terminal.\n"


def test_forwarding_only_account(start_sshd: StartSshd, tmp_path: Path) -> None:
    """MaxSessions 0: the session is refused (255, ssh's words) while -L works."""
    sshd = start_sshd(MaxSessions=0, LogLevel="VERBOSE")
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}", "echo should-not-run"))
    assert result.returncode == 255
    assert result.stdout == b""
    # sshd refuses with CONNECT_FAILED; ssh prints this very line.
    assert result.stderr == b"channel 0: open failed: connect failed: open failed\n"
    target = HoldServer()
    local = free_port()
    argv = hashike(sshd, known, "-N", "-v", "-L", f"{local}:{HOST}:{target.port}", f"{sshd.user}@{HOST}")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        for _ in range(1000):  # bounded: until the forward is announced
            line = proc.stderr.readline()
            assert line, "hashike's stderr ended before it announced the forward"
            if b"forwarded to remote address" in line:
                break
        else:
            raise AssertionError("hashike did not announce the forward")
        with socket.create_connection((HOST, local), timeout=DEADLINE) as conn, conn.makefile("rb") as reader:
            assert reader.readline() == b"hello\n"
    finally:
        target.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(DEADLINE)
    assert proc.returncode == 0


def test_forced_command_runs_instead(start_sshd: StartSshd, tmp_path: Path) -> None:
    sshd = start_sshd(LogLevel="VERBOSE")
    line = sshd.authorized_keys.read_text()
    sshd.authorized_keys.write_text(f'command="echo forced: $SSH_ORIGINAL_COMMAND; exit 6" {line}')
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    result = run_cli(hashike(sshd, known, f"{sshd.user}@{HOST}", "echo", "asked"))
    assert result.returncode == 6
    assert result.stdout == b"forced: echo asked\n"


def test_options_after_the_destination(sshd: SshdServer, known: Path) -> None:
    # ssh reads options up to the command: "hashike host -T cmd".
    result = run_cli([*hashike(sshd, known, f"{sshd.user}@{HOST}"), "-T", "echo", "-T"])
    assert result.returncode == 0 and result.stdout == b"-T\n"


# ---------------------------------------------------------------- a pty of our own


class Pty:
    """A pty pair the CLI runs in; we hold the master (the "keyboard" and
    the "screen") and keep the slave open to look at its termios."""

    def __init__(self, rows: int, cols: int) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.output = b""

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def attrs(self) -> list[object]:
        return termios.tcgetattr(self.slave)

    def spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        def controlling_tty() -> None:
            # After setsid: the slave becomes this session's terminal, so the
            # kernel sends SIGWINCH on resize, as for a login.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        return subprocess.Popen(
            argv,
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
            preexec_fn=controlling_tty,
        )

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_until(self, predicate: Callable[[bytes], bool], timeout: float = DEADLINE) -> bytes:
        """Read the screen until ``predicate(everything so far)``; bounded."""
        deadline = time.monotonic() + timeout
        while not predicate(self.output):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; the screen shows {self.output[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # EIO: nobody has the slave open any more
                    raise AssertionError(f"pty closed; the screen shows {self.output[-2000:]!r}") from None
        return self.output

    def drain_until_exit(self, proc: subprocess.Popen[bytes], timeout: float = DEADLINE) -> int:
        """Keep reading the screen (so the CLI never blocks on it) until it exits."""
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(10)
                raise AssertionError(f"did not exit; the screen shows {self.output[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                self.output += os.read(self.master, 65536)
        with contextlib.suppress(BlockingIOError, OSError):
            os.set_blocking(self.master, False)
            while chunk := os.read(self.master, 65536):
                self.output += chunk
        return proc.returncode

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty40x100() -> Iterator[Pty]:
    pty = Pty(rows=40, cols=100)
    try:
        yield pty
    finally:
        pty.close()


def test_tt_runs_in_a_pty_of_our_size(sshd: SshdServer, known: Path, pty40x100: Pty) -> None:
    before = pty40x100.attrs()
    proc = pty40x100.spawn(hashike(sshd, known, "-tt", f"{sshd.user}@{HOST}", "tty; stty size"))
    assert pty40x100.drain_until_exit(proc) == 0, pty40x100.output
    lines = pty40x100.output.split(b"\r\n")
    assert any(line.startswith(b"/dev/pts/") for line in lines), pty40x100.output
    assert b"40 100" in lines, pty40x100.output
    assert f"Connection to {HOST} closed.".encode() in pty40x100.output
    assert pty40x100.attrs() == before


def test_window_change_follows_the_terminal(sshd: SshdServer, known: Path, pty40x100: Pty) -> None:
    pty = pty40x100
    script = "stty size; while read line; do stty size; done"
    proc = pty.spawn(hashike(sshd, known, "-tt", f"{sshd.user}@{HOST}", script))
    try:
        pty.read_until(lambda out: b"40 100\r\n" in out)
        pty.resize(50, 120)  # the kernel sends SIGWINCH to the CLI, which sends window-change
        for _ in range(100):  # bounded: each line prints the size the remote pty has now
            pty.write(b"x\r")
            pty.read_until(_one_more_size(pty.output))
            if b"50 120\r\n" in pty.output:
                break
        assert b"50 120\r\n" in pty.output
        pty.write(b"\x04")  # ^D: read fails, the loop and the session end
        assert pty.drain_until_exit(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _one_more_size(seen: bytes) -> Callable[[bytes], bool]:
    """The screen shows the new size, or the old one once more than in ``seen``."""
    before = seen.count(b"40 100\r\n")
    return lambda out: b"50 120\r\n" in out or out.count(b"40 100\r\n") > before


def start_shell(pty: Pty, sshd: SshdServer, known: Path, *args: str) -> subprocess.Popen[bytes]:
    """An interactive login (no command: a shell with a pty), up once the
    remote side has written something (the CLI is in raw mode by then)."""
    pty.output = b""
    proc = pty.spawn(hashike(sshd, known, *args, f"{sshd.user}@{HOST}"))
    pty.write(b"echo READY-$((6*7))\r")
    pty.read_until(lambda out: b"READY-42" in out)
    return proc


def test_escape_dot_disconnects_and_restores_the_terminal(
    sshd: SshdServer, known: Path, pty40x100: Pty
) -> None:
    pty = pty40x100
    before = pty.attrs()
    proc = start_shell(pty, sshd, known)
    try:
        during = pty.attrs()
        assert during != before
        lflag = during[3]
        assert isinstance(lflag, int) and not lflag & (termios.ECHO | termios.ICANON)  # raw
        pty.write(b"\r~.")
        assert pty.drain_until_exit(proc) == 255
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert f"Connection to {HOST} closed.".encode() in pty.output
    assert pty.attrs() == before


def test_signals_restore_the_terminal(sshd: SshdServer, known: Path, pty40x100: Pty) -> None:
    pty = pty40x100
    before = pty.attrs()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        proc = start_shell(pty, sshd, known)
        try:
            assert pty.attrs() != before
            proc.send_signal(sig)
            assert pty.drain_until_exit(proc) == 255
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert pty.attrs() == before
        assert b"Traceback" not in pty.output


def test_escape_help_tilde_and_exit(sshd: SshdServer, known: Path, pty40x100: Pty) -> None:
    pty = pty40x100
    proc = start_shell(pty, sshd, known)
    try:
        pty.write(b"\r~?")
        pty.read_until(lambda out: b"escapes are only recognized immediately after newline" in out)
        assert b" ~.   - terminate connection" in pty.output
        pty.write(b"echo A~~B-$((1+1))\r")  # ~~ after a newline... here mid-line: sent as typed
        pty.read_until(lambda out: b"A~~B-2" in out)
        pty.write(b"~~echo X-$((2+3))\r")  # at line start (after CR): one ~ reaches the shell
        pty.read_until(lambda out: b"~echo: command not found" in out or b"~echo: not found" in out)
        pty.write(b"exit 5\r")
        assert pty.drain_until_exit(proc) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_custom_escape_character_and_none(sshd: SshdServer, known: Path, pty40x100: Pty) -> None:
    pty = pty40x100
    proc = start_shell(pty, sshd, known, "-e", "%")
    pty.write(b"\r~.")  # not the escape character any more: the shell gets "~." (and complains)
    pty.write(b"\r%.")
    assert pty.drain_until_exit(proc) == 255
    proc = start_shell(pty, sshd, known, "-e", "none")
    pty.write(b"\r~.\r%.\rexit 9\r")
    assert pty.drain_until_exit(proc) == 9


# ---------------------------------------------------------------- forwarding alongside a session


class HoldServer:
    """A local TCP server that greets, then echoes until EOF."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.sendall(b"hello\n")
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def test_list_connections_with_a_forward(sshd: SshdServer, known: Path, pty40x100: Pty) -> None:
    pty = pty40x100
    target = HoldServer()
    local = free_port()
    proc = start_shell(pty, sshd, known, "-L", f"{local}:{HOST}:{target.port}")
    try:
        with socket.create_connection((HOST, local), timeout=DEADLINE) as conn:
            assert conn.makefile("rb").readline() == b"hello\n"
            pty.write(b"\r~#")
            pty.read_until(lambda out: b"direct-tcpip: listening port" in out)
            text = pty.output.decode(errors="replace")
            assert "The following connections are open:\r\n" in text
            assert "  #0 client-session\r\n" in text
            peer = conn.getsockname()
            assert (
                f"direct-tcpip: listening port {local} for {HOST} port {target.port}, "
                f"connect from {peer[0]} port {peer[1]} to {HOST} port {local}"
            ) in text
        pty.write(b"\r~.")
        assert pty.drain_until_exit(proc) == 255
    finally:
        target.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_the_tunnel_lives_as_long_as_the_session(sshd: SshdServer, known: Path) -> None:
    """The guide's flow: log in with -L, use the tunnel, log out: the tunnel
    takes no new connections, and (as with ssh) the client waits for the
    forwarded connection still open before it exits."""
    target = HoldServer()
    local = free_port()
    argv = hashike(sshd, known, "-v", "-L", f"{local}:{HOST}:{target.port}", f"{sshd.user}@{HOST}", "cat")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"session up\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"session up\n"  # forwards are set up before the session
        with socket.create_connection((HOST, local), timeout=DEADLINE) as conn, conn.makefile("rb") as reader:
            conn.sendall(b"ping\n")
            assert reader.readline() == b"hello\n"
            assert reader.readline() == b"ping\n"
            proc.stdin.close()  # EOF: cat ends, the session ends
            for _ in range(300):  # bounded: until the listener is gone
                try:
                    socket.create_connection((HOST, local), timeout=DEADLINE).close()
                except ConnectionRefusedError:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the forward still takes connections after logout")
            conn.sendall(b"still here\n")  # the open one keeps working
            assert reader.readline() == b"still here\n"
            assert proc.poll() is None
        assert proc.wait(DEADLINE) == 0  # its last forwarded connection closed
        assert proc.stdout.read() == b""
    finally:
        target.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------- the library


async def login(sshd: SshdServer) -> SSHClient:
    identity = await file_identity(str(sshd.client_key), None)
    assert identity is not None
    algorithm, blob = sshd.public_key("ed25519")

    def check(key: object) -> bool:
        return getattr(key, "openssh_line", lambda: "")().split()[:2] == [algorithm, blob]

    auth = AuthSettings(username=sshd.user, identities=[identity], methods=("publickey",))
    return await connect(HOST, sshd.port, check_host_key=check, auth=auth)


async def test_library_run(sshd: SshdServer) -> None:
    async with await login(sshd) as client:
        result = await client.run("printf out; printf err >&2; exit 42")
        assert (result.exit_status, result.exit_signal) == (42, None)
        assert (result.stdout, result.stderr) == (b"out", b"err")
        data = os.urandom(3 * 1024 * 1024)
        echoed = await client.run("cat", input=data)
        assert echoed.exit_status == 0 and echoed.stdout == data
        killed = await client.run("kill -TERM $$")
        assert (killed.exit_status, killed.exit_signal) == (None, "TERM")
        # Several sessions at once on one connection.
        results = await asyncio.gather(*(client.run(f"echo {i}; exit {i}") for i in range(5)))
        assert [(r.exit_status, r.stdout) for r in results] == [(i, f"{i}\n".encode()) for i in range(5)]


async def test_library_process_with_a_pty(sshd: SshdServer) -> None:
    async with await login(sshd) as client:
        process = await client.create_process(
            "stty size; tty; read line; stty size", term="xterm", size=(100, 40)
        )
        assert process.pty
        assert await asyncio.wait_for(process.stdout.readline(), DEADLINE) == b"40 100\r\n"
        assert (await asyncio.wait_for(process.stdout.readline(), DEADLINE)).startswith(b"/dev/pts/")
        process.change_terminal_size(120, 50)
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        rest = await asyncio.wait_for(process.stdout.read(), DEADLINE)
        assert rest.endswith(b"50 120\r\n"), rest
        assert await asyncio.wait_for(process.wait(), DEADLINE) == 0


async def test_library_signal_and_close(sshd: SshdServer) -> None:
    async with await login(sshd) as client:
        process = await client.create_process("echo started; while :; do echo tick; sleep 0.1; done")
        assert await asyncio.wait_for(process.stdout.readline(), DEADLINE) == b"started\n"
        # sshd delivers "signal" only with privilege separation, which a root
        # login (as here) does not have; it logs the refusal and goes on.
        process.send_signal("TERM")
        process.terminate()
        assert not process.closed
        # CLOSE: sshd closes the command's pipes; its next write gets SIGPIPE.
        # (sshd keeps a session channel until its process has exited.)
        process.close()
        assert await asyncio.wait_for(process.wait(), DEADLINE) == 255
        assert process.exit_status is None
        again = await client.run("echo still connected")
        assert again.stdout == b"still connected\n"
    assert "session signalling requires privilege separation" in sshd.log_text()
