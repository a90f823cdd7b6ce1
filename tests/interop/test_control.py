"""The control socket (ControlMaster) against OpenSSH, both ways.

OpenSSH's ``ssh -S path -O ...`` drives a master started by the ``hashike``
command (``-M -S path -N``, logged in to hashiked): ``check``, ``forward -L``
(the new port carries the guide's POP dialogue), ``cancel`` (the port is
gone), ``forward -R 0:...`` (the port printed answers) and ``exit``. Then the
``hashike`` command drives an OpenSSH master (``ssh -M -S path -N -f``,
logged in to sshd): ``check``, ``forward -R 0:...`` and ``exit``; and a
control socket others may use is refused.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.cli.pop3 import start_pop3
from tests.interop.conftest import free_port
from tests.interop.test_forward_openssh_to_hashiked import DEADLINE, BackgroundLoop, keygen, public_line
from tests.interop.test_remote_forward import answers, check_pop3, hashike_argv, hashiked_server, start
from tests.interop.test_session_hashike_to_sshd import Pty

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient, StartSshd


@pytest.fixture(scope="module")
def pop3_port() -> Iterator[int]:
    loop = BackgroundLoop()
    try:
        yield loop.run(start_pop3()).port
    finally:
        loop.close()


@pytest.fixture
def control_path() -> Iterator[str]:
    """A short path (sun_path holds 108 bytes) in a directory of our own."""
    directory = tempfile.mkdtemp(prefix="hc", dir="/tmp")
    try:
        yield os.path.join(directory, "m")
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def wait_for_socket(path: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not os.path.exists(path):  # bounded by the deadline
        assert time.monotonic() < deadline, f"no control socket at {path}"
        time.sleep(0.05)


def ssh_control(ssh: SshClient, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [ssh.binary, "-F", "/dev/null", "-S", path, *args, "127.0.0.1"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)


def hashike_control(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "hashike.cli.client", "-F", "none", "-S", path, *args, "127.0.0.1"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)


def test_ssh_drives_a_hashike_master(
    tmp_path: Path, ssh_client: SshClient, pop3_port: int, control_path: str
) -> None:
    server, daemon = hashiked_server(tmp_path)
    master = start(hashike_argv(server, "-M", "-S", control_path))
    try:
        wait_for_socket(control_path)
        assert os.stat(control_path).st_mode & 0o777 == 0o600

        check = ssh_control(ssh_client, control_path, "-O", "check")
        assert check.returncode == 0, check.stderr
        assert f"Master running (pid={master.process.pid})" in check.stderr

        port = free_port()
        spec = f"{port}:127.0.0.1:{pop3_port}"
        forward = ssh_control(ssh_client, control_path, "-O", "forward", "-L", spec)
        assert forward.returncode == 0, forward.stderr
        check_pop3(port)
        again = ssh_control(ssh_client, control_path, "-O", "forward", "-L", spec)
        assert again.returncode == 0, again.stderr  # already there: ok, as ssh's master

        cancel = ssh_control(ssh_client, control_path, "-O", "cancel", "-L", spec)
        assert cancel.returncode == 0 and not cancel.stderr, cancel.stderr
        assert not answers(port, attempts=1)

        remote = ssh_control(ssh_client, control_path, "-O", "forward", "-R", f"0:127.0.0.1:{pop3_port}")
        assert remote.returncode == 0, remote.stderr
        check_pop3(int(remote.stdout.strip()))

        done = ssh_control(ssh_client, control_path, "-O", "exit")
        assert done.returncode == 0 and "Exit request sent." in done.stderr, done.stderr
        assert master.process.wait(DEADLINE) == 0, master.stderr
        assert not os.path.exists(control_path)
    finally:
        master.process.kill()
        master.process.wait(DEADLINE)
        daemon.stop()  # type: ignore[attr-defined]


def test_ssh_session_through_a_hashike_master(
    tmp_path: Path, ssh_client: SshClient, control_path: str
) -> None:
    """``ssh -S path host cmd``: the command runs in the master's connection,
    on the descriptors ssh passed. ssh has no key and no known host here, so
    only the master can have carried it."""
    server, daemon = hashiked_server(tmp_path)
    master = start(hashike_argv(server, "-M", "-S", control_path))
    try:
        wait_for_socket(control_path)
        argv = [ssh_client.binary, "-F", "/dev/null", "-o", "BatchMode=yes", "-S", control_path]
        command = "cat; echo hi; echo oops >&2; exit 3"
        result = subprocess.run(
            [*argv, "127.0.0.1", command], input="piped\n", capture_output=True, text=True, timeout=DEADLINE
        )
        assert (result.returncode, result.stdout, result.stderr) == (3, "piped\nhi\n", "oops\n")
        again = subprocess.run(
            [*argv, "127.0.0.1", "echo again"], capture_output=True, text=True, timeout=DEADLINE,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert (again.returncode, again.stdout) == (0, "again\n"), again.stderr
        assert master.process.poll() is None, master.stderr
    finally:
        master.process.kill()
        master.process.wait(DEADLINE)
        daemon.stop()  # type: ignore[attr-defined]


def mux_clients(ssh_client: SshClient) -> list[list[str]]:
    """ssh's client and ours, as a session through a master runs them."""
    return [
        [ssh_client.binary, "-F", "/dev/null"],
        [sys.executable, "-m", "hashike.cli.client", "-F", "none", "-o", "UserKnownHostsFile=/dev/null"],
    ]


def test_pty_sessions_through_our_master(tmp_path: Path, ssh_client: SshClient, control_path: str) -> None:
    """``-t`` in a terminal: the master asks for a pty with the client's
    terminal (passed as its stdin); ssh's client and ours say "Shared
    connection to ... closed." and exit with the command's status."""
    server, daemon = hashiked_server(tmp_path)
    master = start(hashike_argv(server, "-M", "-S", control_path))
    clients = mux_clients(ssh_client)
    try:
        wait_for_socket(control_path)
        for client in clients:
            status, said = in_a_terminal([*client, "-t", "-S", control_path, "127.0.0.1", "tty; exit 5"])
            assert status == 5, said
            assert re.match(rb"/dev/pts/\d+\r\nShared connection to 127\.0\.0\.1 closed\.\r", said), said
    finally:
        master.process.kill()
        master.process.wait(DEADLINE)
        daemon.stop()  # type: ignore[attr-defined]


def in_a_terminal(argv: list[str]) -> tuple[int, bytes]:
    """Run ``argv`` on a new pty; its exit status and all it wrote there."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(argv[0], argv)
    said, ended = b"", False
    try:
        deadline = time.monotonic() + DEADLINE
        while not ended and time.monotonic() < deadline:  # bounded; ends at the pty's EOF (EIO)
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    chunk = b""
                ended = not chunk
                said += chunk
    finally:
        if not ended:  # still running at the deadline
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), said


def test_hashike_drives_an_openssh_master(
    tmp_path: Path, start_sshd: StartSshd, ssh_client: SshClient, pop3_port: int, control_path: str
) -> None:
    key = keygen(tmp_path / "id_ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(public_line(key) + "\n")
    sshd = start_sshd(AuthorizedKeysFile=str(authorized))
    argv = ssh_client.argv(sshd.port, identity=key, args=["-M", "-S", control_path, "-N", "-f"])
    started = subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert started.returncode == 0, started.stderr
    try:
        check = hashike_control(control_path, "-O", "check")
        assert check.returncode == 0, check.stderr
        assert re.search(r"^Master running \(pid=\d+\)$", check.stderr, re.M), check.stderr

        remote = hashike_control(control_path, "-O", "forward", "-R", f"0:127.0.0.1:{pop3_port}")
        assert remote.returncode == 0, remote.stderr
        check_pop3(int(remote.stdout.strip()))

        shared = hashike_session(control_path, "cat; echo hi; echo oops >&2; exit 3", "piped\n")
        assert (shared.returncode, shared.stdout) == (3, "piped\nhi\n"), shared.stderr
        assert shared.stderr.endswith("oops\n")  # after the fixture's sshd's own debug lines

        os.chmod(control_path, 0o666)  # others could use it: refused
        refused = hashike_control(control_path, "-O", "check")
        assert refused.returncode == 255
        assert refused.stderr == f"Bad owner or permissions on control socket {control_path}\n"
        os.chmod(control_path, 0o600)
    finally:
        done = hashike_control(control_path, "-O", "exit")
    assert done.returncode == 0 and "Exit request sent." in done.stderr, done.stderr


def test_hashike_session_through_a_hashike_master(tmp_path: Path, control_path: str) -> None:
    """ControlMaster auto: a second ``hashike host cmd`` runs in the first's
    connection. It has no key and no known host, so only the master can have
    carried it; hashiked saw one login."""
    server, daemon = hashiked_server(tmp_path)
    master = start(hashike_argv(server, "-o", "ControlMaster=auto", "-S", control_path))
    try:
        wait_for_socket(control_path)
        for _ in range(2):
            shared = hashike_session(control_path, "cat; echo hi; exit 4", "in\n", "-o", "ControlMaster=auto")
            assert (shared.returncode, shared.stdout, shared.stderr) == (4, "in\nhi\n", "")
        assert daemon.log_text().count("Accepted publickey") == 1, daemon.log_text()  # type: ignore[attr-defined]
    finally:
        master.process.kill()
        master.process.wait(DEADLINE)
        daemon.stop()  # type: ignore[attr-defined]


def test_control_persist(tmp_path: Path, control_path: str) -> None:
    """ControlPersist yes: the master outlives its own session, in the
    background, until -O exit; a time: with -N it goes to the background at
    once and ends after that long with nothing to carry."""
    server, daemon = hashiked_server(tmp_path)
    login = hashike_argv(server, "-o", "ControlMaster=yes", "-S", control_path)
    login.remove("-N")
    try:
        first = subprocess.run(
            [*login[:-1], "-o", "ControlPersist=yes", "127.0.0.1", "echo first; exit 2"],
            capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert (first.returncode, first.stdout) == (2, "first\n"), first.stderr
        second = hashike_session(control_path, "echo second", "")
        assert (second.returncode, second.stdout) == (0, "second\n"), second.stderr
        assert hashike_control(control_path, "-O", "exit").returncode == 0
        wait_gone(control_path)

        quick = subprocess.run(
            [*login[:-1], "-N", "-o", "ControlPersist=1", "127.0.0.1"],
            capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert quick.returncode == 0, quick.stderr
        assert os.path.exists(control_path)  # the parent returned once the master was up
        wait_gone(control_path)  # idle: the master ended by itself
    finally:
        if os.path.exists(control_path):
            hashike_control(control_path, "-O", "exit")
        daemon.stop()  # type: ignore[attr-defined]


def wait_gone(path: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while os.path.exists(path):  # bounded by the deadline
        assert time.monotonic() < deadline, f"{path} is still there"
        time.sleep(0.05)


def hashike_session(path: str, command: str, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "hashike.cli.client", "-F", "none", "-o", "BatchMode=yes",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentityAgent=none",
        "-S", path, *args, "127.0.0.1", command,
    ]  # fmt: skip
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=DEADLINE)


def test_no_master(control_path: str) -> None:
    result = hashike_control(control_path, "-O", "check")
    assert result.returncode == 255
    assert result.stderr == f"Control socket connect({control_path}): No such file or directory\n"


def test_ask_puts_each_request_to_the_user(
    tmp_path: Path, ssh_client: SshClient, pop3_port: int, control_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ControlMaster ask: ssh's requests through our master wait for
    SSH_ASKPASS's yes (exit 0) and get Permission denied on its no."""
    asked, answer = tmp_path / "asked", tmp_path / "answer"
    askpass = tmp_path / "askpass"
    askpass.write_text(f'#!/bin/sh\necho "$SSH_ASKPASS_PROMPT|$1" >> {asked}\ngrep -qx yes {answer}\n')
    askpass.chmod(0o755)
    monkeypatch.setenv("SSH_ASKPASS", str(askpass))
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "force")
    server, daemon = hashiked_server(tmp_path)
    master = start(hashike_argv(server, "-o", "ControlMaster=ask", "-S", control_path))
    try:
        wait_for_socket(control_path)
        assert ssh_control(ssh_client, control_path, "-O", "check").returncode == 0  # never asked
        assert not asked.exists()

        port = free_port()
        spec = f"{port}:127.0.0.1:{pop3_port}"
        answer.write_text("no\n")
        refused = ssh_control(ssh_client, control_path, "-O", "forward", "-L", spec)
        assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr
        assert not answers(port, attempts=1)
        answer.write_text("yes\n")
        allowed = ssh_control(ssh_client, control_path, "-O", "forward", "-L", spec)
        assert allowed.returncode == 0, allowed.stderr
        check_pop3(port)
        lines = asked.read_text().splitlines()
        assert len(lines) == 2 and all(line.startswith("confirm|Open ") for line in lines), lines
        assert f"{port}" in lines[0]

        done = ssh_control(ssh_client, control_path, "-O", "exit")
        assert done.returncode == 0, done.stderr
        assert asked.read_text().splitlines()[-1] == "confirm|Terminate shared connection to 127.0.0.1? "
        assert master.process.wait(DEADLINE) == 0, master.stderr
    finally:
        master.stop()
        daemon.stop()  # type: ignore[attr-defined]


def test_forwards_given_at_start_can_be_cancelled(
    tmp_path: Path, ssh_client: SshClient, pop3_port: int, control_path: str
) -> None:
    """-O cancel finds a forward the master was started with, as ssh's does."""
    server, daemon = hashiked_server(tmp_path)
    port = free_port()
    spec = f"{port}:127.0.0.1:{pop3_port}"
    master = start(hashike_argv(server, "-M", "-S", control_path, "-L", spec))
    try:
        wait_for_socket(control_path)
        check_pop3(port)
        cancel = ssh_control(ssh_client, control_path, "-O", "cancel", "-L", spec)
        assert cancel.returncode == 0 and not cancel.stderr, cancel.stderr
        assert not answers(port, attempts=1)
        again = ssh_control(ssh_client, control_path, "-O", "cancel", "-L", spec)
        assert "forwarding request failed: port not forwarded" in again.stderr, again.stderr  # ssh: exit 0
    finally:
        master.stop()
        daemon.stop()  # type: ignore[attr-defined]


def lines_more_than(count: int) -> Callable[[bytes], bool]:
    return lambda out: out.count(b"\r\n") > count


def test_multiplexed_pty_follows_the_terminal_size(
    tmp_path: Path, ssh_client: SshClient, control_path: str
) -> None:
    """A terminal resized under ``ssh -S path -t`` (and ours): the client
    relays SIGWINCH to the master, which reads the passed terminal's size
    and tells the server; the remote pty has the new size."""
    server, daemon = hashiked_server(tmp_path)
    master = start(hashike_argv(server, "-M", "-S", control_path))
    clients = mux_clients(ssh_client)
    try:
        wait_for_socket(control_path)
        for client in clients:
            terminal = Pty(rows=40, cols=100)
            try:
                script = "stty size; while read x; do stty size; done"
                proc = terminal.spawn([*client, "-t", "-S", control_path, "127.0.0.1", script])
                terminal.read_until(lambda out: b"40 100\r\n" in out)
                terminal.resize(50, 120)  # the kernel sends SIGWINCH to the client
                for _ in range(50):  # bounded: the relayed signal and the keys race
                    terminal.write(b"x\r")
                    terminal.read_until(lines_more_than(terminal.output.count(b"\r\n") + 1))
                    if b"50 120\r\n" in terminal.output:
                        break
                assert b"50 120\r\n" in terminal.output, terminal.output
                terminal.write(b"\x04")  # end of input: the loop ends, so does the session
                assert terminal.drain_until_exit(proc) == 0, terminal.output
            finally:
                terminal.close()
    finally:
        master.stop()
        daemon.stop()  # type: ignore[attr-defined]
