"""Sessions, OpenSSH ``ssh`` -> the ``hashiked`` command.

Real ``ssh`` runs commands and shells on a ``hashiked`` subprocess: the exit
status comes back as ssh's own, 16 MiB go through ``cat`` byte for byte,
stderr stays apart from stdout, ``ssh -tt`` gets a pty of the size of the
terminal ssh itself runs in (a pty the test makes and sizes), window size
changes reach the remote program, ``ssh host`` gives an interactive shell,
``MaxSessions 0`` refuses sessions while ``-L`` still works, and a
``command=`` key runs only its command.

ssh runs with ``LogLevel=ERROR`` so that its stderr is the remote stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.interop.conftest import free_port
from tests.interop.test_forward_openssh_to_hashiked import (
    Hashiked,
    keygen,
    public_line,
    ssh_forwards,
    start_hashiked,
)

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

pytestmark = pytest.mark.interop

DEADLINE = 30.0  # any single ssh run
QUIET = {"LogLevel": "ERROR"}  # no "Permanently added ... to the list of known hosts"


@dataclass
class Setup:
    tmp_path: Path
    host_key: Path
    client_key: Path
    authorized: Path

    def start(self, *options: str, key_options: str = "") -> Hashiked:
        prefix = f"{key_options} " if key_options else ""
        self.authorized.write_text(prefix + public_line(self.client_key) + "\n")
        server = start_hashiked(self.tmp_path / "hashiked", self.host_key, self.authorized, *options)
        self._servers.append(server)
        return server

    def __post_init__(self) -> None:
        self._servers: list[Hashiked] = []

    def stop(self) -> None:
        for server in self._servers:
            server.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("session-keys")
    return keygen(directory / "host_ed25519"), keygen(directory / "id_ed25519")


@pytest.fixture
def setup(tmp_path: Path, keys: tuple[Path, Path]) -> Iterator[Setup]:
    result = Setup(tmp_path, keys[0], keys[1], tmp_path / "authorized_keys")
    try:
        yield result
    finally:
        result.stop()


def ssh_run(
    ssh: SshClient,
    server: Hashiked,
    key: Path,
    *command: str,
    input: bytes = b"",
    args: Sequence[str] = (),
    timeout: float = DEADLINE,
    quiet: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    argv = ssh.argv(server.port, *command, identity=key, options=QUIET if quiet else None, args=args)
    return subprocess.run(argv, input=input, capture_output=True, timeout=timeout, check=False)


# --- ssh in a terminal of a known size -------------------------------------------------


class Terminal:
    """``ssh`` started on a pty the test owns, of ``rows`` x ``columns``: ssh
    takes the size for its pty-req from its stdin. Output is collected by a
    thread; the pty is not ssh's controlling terminal, so SIGWINCH is sent
    by hand after a resize."""

    def __init__(self, argv: list[str], rows: int, columns: int) -> None:
        self.master, slave = os.openpty()
        self.local_name = os.ttyname(slave)
        self.resize(rows, columns)
        try:
            self.process = subprocess.Popen(
                argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
            )
        finally:
            os.close(slave)
        self._output = bytearray()
        self._lock = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.1)
                chunk = os.read(self.master, 65536) if ready else None
            except OSError:  # EIO: ssh and everything else closed the slave
                chunk = b""
            with self._lock:
                if chunk == b"":
                    self._eof = True
                    self._lock.notify_all()
                    return
                if chunk:
                    self._output += chunk
                    self._lock.notify_all()

    @property
    def output(self) -> bytes:
        with self._lock:
            return bytes(self._output)

    def wait_for(self, pattern: bytes, timeout: float = DEADLINE) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:  # bounded by the deadline
                if re.search(pattern, self._output):
                    return True
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return False
                self._lock.wait(remaining)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = DEADLINE) -> int:
        """ssh's exit status, once it exited and its output is read."""
        try:
            status = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            self._reader.join(timeout)
            os.close(self.master)
        return status


# --- commands, exit status, streams ---------------------------------------------------


def test_exit_status(setup: Setup, ssh_client: SshClient) -> None:
    server = setup.start()
    result = ssh_run(ssh_client, server, setup.client_key, "exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == b""
    server.assert_healthy()


def test_16_mib_through_cat(setup: Setup, ssh_client: SshClient) -> None:
    server = setup.start()
    data = os.urandom(16 << 20)
    result = ssh_run(ssh_client, server, setup.client_key, "cat", input=data, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == len(data)
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(data).hexdigest()
    server.assert_healthy()


def test_stderr_separate_from_stdout(setup: Setup, ssh_client: SshClient) -> None:
    server = setup.start()
    result = ssh_run(ssh_client, server, setup.client_key, "echo out; echo err >&2; exit 1")
    assert (result.returncode, result.stdout, result.stderr) == (1, b"out\n", b"err\n")


def test_killed_by_signal(setup: Setup, ssh_client: SshClient) -> None:
    # exit-signal: ssh has no status for it and exits 255, as with sshd.
    server = setup.start()
    result = ssh_run(ssh_client, server, setup.client_key, "echo before; kill -KILL $$")
    assert result.stdout == b"before\n"
    assert result.returncode == 255, result.stderr


# --- ptys ---------------------------------------------------------------------------------


def test_tt_gets_a_pty_of_the_terminal_size(setup: Setup, ssh_client: SshClient) -> None:
    server = setup.start()
    argv = ssh_client.argv(
        server.port, "tty; stty size; exit 6", identity=setup.client_key, options=QUIET, args=["-tt"]
    )
    terminal = Terminal(argv, rows=40, columns=100)
    status = terminal.finish()
    text = terminal.output.decode(errors="replace")
    lines = [line for line in text.replace("\r", "").split("\n") if line]
    assert status == 6, text
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), text
    assert lines[0] != terminal.local_name  # hashiked's pty, not the one ssh runs in
    assert lines[1] == "40 100", text
    server.assert_healthy()


def test_window_change_reaches_the_program(setup: Setup, ssh_client: SshClient) -> None:
    server = setup.start()
    script = "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done"
    argv = ssh_client.argv(server.port, script, identity=setup.client_key, options=QUIET, args=["-tt"])
    terminal = Terminal(argv, rows=24, columns=80)
    assert terminal.wait_for(rb"ready"), terminal.output
    terminal.resize(50, 132)
    os.kill(terminal.process.pid, signal.SIGWINCH)  # the kernel would, were it ssh's terminal
    assert terminal.wait_for(rb"50 132"), terminal.output
    assert terminal.finish() == 0, terminal.output


def test_interactive_shell(setup: Setup, ssh_client: SshClient) -> None:
    """``ssh host``: a login shell on a pty, driven through ssh's terminal."""
    server = setup.start()
    argv = ssh_client.argv(server.port, identity=setup.client_key, options=QUIET)
    terminal = Terminal(argv, rows=30, columns=90)
    terminal.write(b"echo result=$((6*7)) $SSH_TTY; stty size; exit 4\n")
    status = terminal.finish()
    text = terminal.output.decode(errors="replace")
    assert status == 4, text
    assert re.search(r"result=42 /dev/pts/\d+\r\n30 90\r\n", text), text
    server.assert_healthy()


def test_shell_and_forward_together(setup: Setup, ssh_client: SshClient) -> None:
    """The guide's flow: ``ssh -L ... host`` is a shell plus the forward, and
    the forward ends with the shell."""
    server = setup.start()
    with socket.create_server(("127.0.0.1", 0)) as target:
        target_port = target.getsockname()[1]
        local = free_port()
        argv = ssh_client.argv(
            server.port,
            identity=setup.client_key,
            options=QUIET,
            args=["-L", f"{local}:127.0.0.1:{target_port}"],
        )
        terminal = Terminal(argv, rows=24, columns=80)
        terminal.write(b"echo logged-in\n")
        assert terminal.wait_for(rb"logged-in\r\n"), terminal.output
        with _connect_retrying(local) as sock:
            conn, _ = target.accept()
            with conn:
                sock.sendall(b"through the tunnel")
                assert _recv_exactly(conn, 18) == b"through the tunnel"
        terminal.write(b"exit\n")
        assert terminal.finish() == 0, terminal.output
    with pytest.raises(OSError):  # ssh is gone: so is the tunnel
        socket.create_connection(("127.0.0.1", local), timeout=5).close()


# --- policy ---------------------------------------------------------------------------


def test_max_sessions_zero_is_forwarding_only(setup: Setup, ssh_client: SshClient) -> None:
    server = setup.start("MaxSessions=0")
    result = ssh_run(ssh_client, server, setup.client_key, "true", quiet=False)
    assert result.returncode == 255
    # sshd's refusal, word for word as ssh reports it.
    assert b"open failed: connect failed: open failed" in result.stderr, result.stderr
    with socket.create_server(("127.0.0.1", 0)) as target:
        client, (local,) = ssh_forwards(ssh_client, server.port, setup.client_key, [target.getsockname()[1]])
        try:
            with socket.create_connection(("127.0.0.1", local), timeout=DEADLINE) as sock:
                conn, _ = target.accept()
                with conn:
                    conn.sendall(b"+OK forwarding works\r\n")
                    assert _recv_exactly(sock, 22) == b"+OK forwarding works\r\n"
        finally:
            client.stop()
    server.assert_healthy()


def test_forced_command_runs_only_its_command(setup: Setup, ssh_client: SshClient) -> None:
    server = setup.start(key_options='command="echo forced: $SSH_ORIGINAL_COMMAND; exit 5"')
    result = ssh_run(ssh_client, server, setup.client_key, "echo mine; touch /tmp/never")
    assert result.stdout == b"forced: echo mine; touch /tmp/never\n"
    assert result.returncode == 5


def test_no_pty_key_refuses_the_pty(setup: Setup, ssh_client: SshClient) -> None:
    # ssh -tt gives up when the pty is refused (exit 255, nothing run): with
    # sshd and a no-pty key it does exactly the same.
    server = setup.start(key_options="no-pty")
    result = ssh_run(ssh_client, server, setup.client_key, "tty", args=["-tt"])
    assert result.stderr == b"PTY allocation request failed on channel 0\r\n"
    assert (result.returncode, result.stdout) == (255, b"")
    assert "pty allocation disabled" in server.log_text()
    # Without -t the key works as usual.
    result = ssh_run(ssh_client, server, setup.client_key, "tty")
    assert (result.returncode, result.stdout) == (1, b"not a tty\n")
    server.assert_healthy()


# --- helpers ----------------------------------------------------------------------------


@contextlib.contextmanager
def _connect_retrying(port: int) -> Iterator[socket.socket]:
    """ssh listens on -L ports right after logging in: retry (bounded) until it does."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with sock:
        yield sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    sock.settimeout(DEADLINE)
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data
