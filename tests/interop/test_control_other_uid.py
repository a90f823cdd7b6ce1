"""A hashike master's control socket against a real second account.

The socket is made reachable on purpose (0666 in a 0711 directory), as a
careless ControlPath would leave it, so that only SO_PEERCRED stands between
the other account and the master: OpenSSH's ``ssh -S path -O check`` run as
that account fails, a raw connection from it gets no hello, the master logs
ssh's line for it, and goes on serving its own user.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.interop.test_auth_hashike_to_sshd import test_account
from tests.interop.test_control import control_path, ssh_control, wait_for_socket
from tests.interop.test_forward_openssh_to_hashiked import DEADLINE
from tests.interop.test_remote_forward import hashike_argv, hashiked_server, start

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

__all__ = ["control_path", "test_account"]  # fixtures used here
pytestmark = pytest.mark.interop

# The system Python: the account cannot reach the test's own interpreter
# under /root. It prints what the master sent before closing.
_RAW_HELLO = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.settimeout(10)\n"
    "s.connect(sys.argv[1])\n"
    "print(repr(s.recv(100)))\n"
)


def as_account(account: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", account, "--", *argv],
        capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL, cwd="/",
    )  # fmt: skip


def test_other_uid_is_refused(
    tmp_path: Path, ssh_client: SshClient, control_path: str, test_account: str
) -> None:
    server, daemon = hashiked_server(tmp_path)
    master = start(hashike_argv(server, "-M", "-S", control_path))
    try:
        wait_for_socket(control_path)
        os.chmod(os.path.dirname(control_path), 0o711)
        os.chmod(control_path, 0o666)
        other = pwd.getpwnam(test_account).pw_uid

        check = as_account(test_account, ssh_client.binary, "-F", "/dev/null", "-S", control_path,
                           "-O", "check", "127.0.0.1")  # fmt: skip
        assert check.returncode == 255, check
        assert "Master running" not in check.stderr
        raw = as_account(test_account, "/usr/bin/python3", "-c", _RAW_HELLO, control_path)
        assert raw.returncode == 0 and raw.stdout.strip() == "b''", raw  # closed, no hello

        mismatch = f"control mode uid mismatch: peer euid {other} != uid {os.getuid()}"
        assert master.wait_for(mismatch, times=2), master.stderr
        mine = ssh_control(ssh_client, control_path, "-O", "check")
        assert mine.returncode == 0 and f"Master running (pid={master.process.pid})" in mine.stderr
    finally:
        master.stop()
        daemon.stop()  # type: ignore[attr-defined]
    assert "Traceback" not in master.stderr
