"""The ``~C`` command line in a real terminal, against OpenSSH's sshd: the
``hashike`` command runs in a pty we drive; ``-L`` adds a forward that
answers, ``-KL`` cancels it, ``-R 0`` says its port, and bad input gets
ssh's lines. Without EnableEscapeCommandline it is off, as in OpenSSH."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.interop.test_session_hashike_to_sshd import (
    DEADLINE,
    HOST,
    HoldServer,
    Pty,
    free_port,
    known,
    pty40x100,
    sshd,
    start_shell,
)

if TYPE_CHECKING:
    from tests.interop.conftest import SshdServer

__all__ = ["known", "pty40x100", "sshd"]  # fixtures used here
pytestmark = pytest.mark.interop


def command(pty: Pty, line: str, answer: bytes) -> None:
    """``~C``, the prompt, ``line``, until ``answer`` is on screen."""
    pty.output = b""
    pty.write(b"\r~C")
    pty.read_until(lambda out: b"ssh> " in out)
    pty.write(line.encode() + b"\r")
    pty.read_until(lambda out: answer in out)


def greets(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=DEADLINE) as conn:
            return conn.makefile("rb").readline() == b"hello\n"
    except OSError:
        return False


def end(pty: Pty, proc: subprocess.Popen[bytes]) -> None:
    pty.write(b"\rexit 3\r")
    assert pty.drain_until_exit(proc) == 3
    assert b"Traceback" not in pty.output


def test_command_line_adds_and_cancels_forwards(sshd: SshdServer, known: Path, pty40x100: Pty) -> None:
    pty = pty40x100
    target = HoldServer()
    proc = start_shell(pty, sshd, known, "-o", "EnableEscapeCommandline=yes")
    try:
        local = free_port()
        command(pty, f"-L {local}:{HOST}:{target.port}", b"Forwarding port.")
        assert greets(local)
        command(pty, f"-KL {local}", b"Canceled forwarding.")
        assert not greets(local)
        command(pty, f"-KL {local}", b"Unknown port forwarding.")

        command(pty, f"-R 0:{HOST}:{target.port}", b"Forwarding port.")
        allocated = pty.output.split(b"Allocated port ")[1].split(b" ")[0]
        assert greets(int(allocated))  # sshd listens there, and the connection comes back to us
        command(pty, f"-KR {int(allocated)}", b"Canceled forwarding.")

        command(pty, "-L nonsense", b"Bad forwarding specification.")
        command(pty, "-Z 1", b"Invalid command.")
        command(pty, "?", b"Cancel dynamic forward")
        pty.write(b"echo STILL-$((40+2))\r")  # the terminal is raw again and the shell is there
        pty.read_until(lambda out: b"STILL-42" in out)
        end(pty, proc)
    finally:
        target.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_command_line_is_off_by_default(sshd: SshdServer, known: Path, pty40x100: Pty) -> None:
    pty = pty40x100
    proc = start_shell(pty, sshd, known)
    try:
        pty.write(b"\r~C")
        pty.read_until(lambda out: b"commandline disabled" in out)
        assert b"ssh> " not in pty.output
        end(pty, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
