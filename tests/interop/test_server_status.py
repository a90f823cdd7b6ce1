"""``hashike status --server`` and ``hashiked -O status`` against real
OpenSSH: ``ssh -N -L ... -R ...`` logged in to hashiked (one process, and
``Workers 2``), traffic through the -L forward; the JSON shows the user, the
-R listener as bound and the onward -L connection with at least the bytes
sent; the plain output is a table; a socket with wrong permissions, a
missing one and a malformed request are refused with one line."""

from __future__ import annotations

import getpass
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hashike.proto import server_status as ss
from tests.cli.test_status import echo_port
from tests.helpers import eventually_sync
from tests.interop.conftest import free_port
from tests.interop.test_auth_hashike_to_sshd import test_account
from tests.interop.test_control_other_uid import as_account
from tests.interop.test_forward_openssh_to_hashiked import (
    DEADLINE,
    Hashiked,
    keygen,
    public_line,
    ssh_forwards,
    start_hashiked,
)

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

__all__ = ["echo_port", "test_account"]  # fixtures used here
pytestmark = pytest.mark.interop

PAYLOAD = b"status-bytes " * 1000


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory short enough for sun_path; hashiked creates ``run`` in it."""
    base = tempfile.mkdtemp(prefix="hss", dir="/tmp")
    try:
        yield Path(base)
    finally:
        subprocess.run(["rm", "-rf", base], check=True)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
    )


def status_json(sock: Path) -> dict[str, Any]:
    done = run("hashike.cli.client", "status", "--server", str(sock), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert isinstance(document, dict)
    return document


def start(tmp_path: Path, sock: Path, *options: str) -> tuple[Hashiked, Path]:
    host_key = keygen(tmp_path / "host_ed25519")
    client_key = keygen(tmp_path / "id_ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(public_line(client_key) + "\n")
    return start_hashiked(tmp_path, host_key, authorized, f"StatusSocket={sock}", *options), client_key


@pytest.mark.parametrize("workers", ["1", "2"])
def test_status_shows_user_remote_listener_and_onward_bytes(
    tmp_path: Path, short_dir: Path, ssh_client: SshClient, echo_port: int, workers: str
) -> None:
    sock = short_dir / "run" / "status"
    server, client_key = start(tmp_path, sock, f"Workers={workers}")
    remote_port = free_port()
    ssh = None
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
        options: dict[str, str | int] = {"RemoteForward": f"{remote_port} 127.0.0.1:{echo_port}"}
        ssh, (local,) = ssh_forwards(ssh_client, server.port, client_key, [echo_port], options=options)
        assert ssh.wait_for(rf"remote forward success for: listen {remote_port}"), ssh.stderr
        with socket.create_connection(("127.0.0.1", local), timeout=DEADLINE) as conn:
            conn.sendall(PAYLOAD)
            got = b""
            while len(got) < len(PAYLOAD):  # bounded: the timeout fails the read
                chunk = conn.recv(65536)
                assert chunk, "the echo closed early"
                got += chunk
            assert got == PAYLOAD
            document = status_json(sock)
            (connection,) = document["connections"]
            assert connection["user"] == getpass.getuser()
            assert connection["peer"].startswith("127.0.0.1:")
            if workers == "2":
                assert connection["pid"] in document["workers"] and connection["pid"] != document["pid"]
            (listener,) = connection["listeners"]
            assert f"127.0.0.1:{remote_port}" in listener["listen"].split(", ")  # as bound: loopback
            (onward,) = connection["onward"]
            assert onward["target"] == f"127.0.0.1:{echo_port}"
            assert onward["bytes_in"] >= len(PAYLOAD) and onward["bytes_out"] >= len(PAYLOAD)
            table = run("hashike.cli.server", "-o", f"StatusSocket={sock}", "-O", "status")
            assert table.returncode == 0, table.stderr
            assert "hashiked status" in table.stdout and "┃" in table.stdout  # rich's table
            assert f"127.0.0.1:{remote_port}" in table.stdout and "→ client" in table.stdout
            assert f"→ 127.0.0.1:{echo_port}" in table.stdout
        # The onward connection closed: it leaves the list.
        eventually_sync(lambda: not status_json(sock)["connections"][0]["onward"], DEADLINE)
    finally:
        if ssh is not None:
            ssh.stop()
        server.stop()
    assert "Traceback" not in server.log_text()
    assert not sock.exists()  # removed at shutdown


def test_missing_socket_and_wrong_permissions_are_one_line(short_dir: Path) -> None:
    missing = run("hashike.cli.client", "status", "--server", str(short_dir / "nothing"))
    assert missing.returncode == 255
    assert missing.stderr.count("\n") == 1 and "No such file or directory" in missing.stderr
    wide = short_dir / "wide"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(wide))
        listener.listen(1)
        os.chmod(wide, 0o666)
        refused = run("hashike.cli.client", "status", "--server", str(wide))
    assert refused.returncode == 255
    assert refused.stderr == f"hashike status: Bad owner or permissions on control socket {wide}\n"
    unset = run("hashike.cli.server", "-O", "status")
    assert unset.returncode == 255
    assert unset.stderr == "hashiked: -O status: no StatusSocket in the configuration\n"


def test_server_refuses_a_wide_directory_and_a_malformed_request(tmp_path: Path, short_dir: Path) -> None:
    wide = short_dir / "wide"
    wide.mkdir(mode=0o755)
    wide.chmod(0o755)
    host_key = keygen(tmp_path / "host_ed25519")
    argv = [sys.executable, "-m", "hashike.cli.server", "-p", "0", "-h", str(host_key)]
    argv += ["-o", "ListenAddress=127.0.0.1", "-o", f"StatusSocket={wide}/status"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert done.returncode == 255
    assert (
        done.stderr
        == f"hashiked: StatusSocket {wide}/status: runtime directory {wide} has mode 0755; it must be 0700\n"
    )
    sock = short_dir / "run" / "status"
    (tmp_path / "ok").mkdir()
    server, _ = start(tmp_path / "ok", sock)
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(DEADLINE)
            conn.connect(str(sock))
            conn.sendall(ss.encode(ss.Failure("not a request")))
            decoder = ss.StatusDecoder()
            while (reply := decoder.next()) is None:  # bounded: the timeout fails the read
                data = conn.recv(4096)
                assert data, "closed without a reply"
                decoder.feed(data)
        assert reply == ss.Failure("expected a status request, version 1")
        with socket.socket(socket.AF_UNIX) as conn:  # a hostile length: closed, nothing read
            conn.settimeout(DEADLINE)
            conn.connect(str(sock))
            conn.sendall(b"\xff\xff\xff\xff")
            assert conn.recv(4096) == b""
        assert status_json(sock)["connections"] == []  # still serving
        server.assert_healthy()
    finally:
        server.stop()


# The system Python (the account cannot reach the test's own under /root):
# a status request, then what the server sent before closing. The server
# may refuse and close before the request is written: a broken pipe then.
_RAW_REQUEST = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.settimeout(10)\n"
    "s.connect(sys.argv[1])\n"
    "try:\n"
    "    s.sendall(bytes.fromhex(sys.argv[2]))\n"
    "except BrokenPipeError:\n"
    "    pass\n"
    "print(s.recv(4096).hex())\n"
)


def test_other_uid_is_refused(tmp_path: Path, short_dir: Path, test_account: str) -> None:
    """Made reachable on purpose (0666 in 0711 directories), the socket is
    still refused to another uid by SO_PEERCRED: one Failure, a log line."""
    sock = short_dir / "run" / "status"
    server, _ = start(tmp_path, sock)
    try:
        for directory in (short_dir, sock.parent):
            directory.chmod(0o711)
        sock.chmod(0o666)
        request = ss.encode(ss.StatusRequest()).hex()
        raw = as_account(test_account, "/usr/bin/python3", "-c", _RAW_REQUEST, str(sock), request)
        assert raw.returncode == 0, raw
        reply = ss.StatusDecoder()
        reply.feed(bytes.fromhex(raw.stdout.strip()))
        assert reply.next() == ss.Failure("Permission denied")
        other = pwd.getpwnam(test_account).pw_uid
        line = f"status socket: uid mismatch: peer euid {other} != uid {os.getuid()}"
        eventually_sync(lambda: line in server.log_text(), DEADLINE)
        server.assert_healthy()
    finally:
        server.stop()
