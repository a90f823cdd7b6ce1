"""-D with real programs: curl as the SOCKS client (``--socks4``,
``--socks4a``, ``--socks5``, ``--socks5-hostname``) through the ``hashike``
command, against hashiked and against OpenSSH's sshd; OpenSSH's ``ssh -D``
through hashiked; refusals with their reply codes, after which the proxy goes
on; and ``-g``, which binds beyond loopback (127.0.0.2 reaches only a
wildcard listener) and warns once.

The far side is a small HTTP server on 127.0.0.1 in a thread of the test.
"""

from __future__ import annotations

import functools
import getpass
import http.server
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.interop.conftest import free_port, interop_required
from tests.interop.test_forward_openssh_to_hashiked import SshProcess, keygen, public_line, start_hashiked
from tests.socks_client import socks4_request, socks5_greeting, socks5_request

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient, StartSshd

pytestmark = pytest.mark.interop

DEADLINE = 20.0
BODY = b"hello through the SOCKS proxy\n" * 100


@pytest.fixture
def web(tmp_path: Path) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 serving /file.txt (BODY); its port."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "file.txt").write_bytes(BODY)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def curl() -> str:
    path = shutil.which("curl")
    if path is None:
        message = "curl not found (scripts/install.sh installs it)"
        if interop_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def fetch(mode: str, proxy: str, url: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [curl(), "-sS", "--max-time", "20", "--noproxy", "", f"--{mode}", proxy, url],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


MODES = ["socks4", "socks4a", "socks5", "socks5-hostname"]


def check_curl_modes(proxy_port: int, web_port: int) -> None:
    for mode in MODES:
        # A name only where the proxy resolves it (4a, 5-hostname).
        host = "localhost" if mode in ("socks4a", "socks5-hostname") else "127.0.0.1"
        result = fetch(mode, f"127.0.0.1:{proxy_port}", f"http://{host}:{web_port}/file.txt")
        assert result.returncode == 0, (mode, result.stderr)
        assert result.stdout == BODY, mode


def socks_exchange(proxy_port: int, data: bytes, size: int, host: str = "127.0.0.1") -> bytes:
    """Send a raw handshake; what the proxy answers before closing (``size`` bytes at most)."""
    with socket.create_connection((host, proxy_port), timeout=DEADLINE) as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(data)
        got = b""
        while len(got) < size and (chunk := sock.recv(size - len(got))):
            got += chunk
        return got


def check_refusals(proxy_port: int, web_port: int) -> None:
    closed = free_port()
    answer = socks_exchange(proxy_port, socks5_greeting() + socks5_request("127.0.0.1", closed), 12)
    assert answer == b"\x05\x00\x05\x05\x00\x01" + bytes(6)  # connection refused
    answer = socks_exchange(proxy_port, socks5_greeting() + socks5_request("no-such-host.invalid", 80), 12)
    assert answer == b"\x05\x00\x05\x04\x00\x01" + bytes(6)  # host unreachable
    answer = socks_exchange(proxy_port, socks4_request("127.0.0.1", closed), 8)
    assert answer == b"\x00\x5b" + bytes(6)
    check_curl_modes(proxy_port, web_port)  # the proxy goes on


def start_hashike(argv: list[str], marker: str = r"forwarded to remote address socks:0") -> SshProcess:
    client = SshProcess.start(argv)
    if not client.wait_for(marker):
        client.stop()
        raise AssertionError(f"hashike did not set up its forward:\n{client.stderr}")
    return client


def hashike_argv(port: int, known_hosts: Path, identity: Path, user: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "hashike.cli.client", "-F", "none", "-v", "-N",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
        "-i", str(identity), "-p", str(port), *extra, f"{user}@127.0.0.1",
    ]  # fmt: skip


@pytest.fixture
def hashiked(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """hashiked, with its known_hosts file and an authorized client key."""
    client_key = keygen(tmp_path / "id_ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(public_line(client_key) + "\n")
    server = start_hashiked(tmp_path, keygen(tmp_path / "host_ed25519"), authorized)
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line() + "\n")
    try:
        yield server.port, known, client_key
    finally:
        server.assert_healthy()
        server.stop()


def test_curl_through_hashike_to_hashiked(hashiked: tuple[int, Path, Path], web: int) -> None:
    port, known, key = hashiked
    local = free_port()
    client = start_hashike(hashike_argv(port, known, key, getpass.getuser(), "-D", str(local)))
    try:
        check_curl_modes(local, web)
        check_refusals(local, web)
    finally:
        client.stop()
    assert "Traceback" not in client.stderr
    assert "open failed: connect failed: Connection refused" in client.stderr
    assert "listens beyond loopback" not in client.stderr


def test_curl_through_hashike_to_sshd(start_sshd: StartSshd, tmp_path: Path, web: int) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    local = free_port()
    client = start_hashike(hashike_argv(sshd.port, known, sshd.client_key, sshd.user, f"-D127.0.0.1:{local}"))
    try:
        check_curl_modes(local, web)
        check_refusals(local, web)
    finally:
        client.stop()
    assert "Traceback" not in client.stderr


def test_dynamic_forward_from_ssh_config(start_sshd: StartSshd, tmp_path: Path, web: int) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    local = free_port()
    config = tmp_path / "config"
    config.write_text(f"Host 127.0.0.1\n    DynamicForward localhost:{local}\n")
    argv = hashike_argv(sshd.port, known, sshd.client_key, sshd.user)
    argv[argv.index("none")] = str(config)  # -F config
    client = start_hashike(argv)
    try:
        result = fetch("socks5-hostname", f"127.0.0.1:{local}", f"http://localhost:{web}/file.txt")
        assert result.returncode == 0 and result.stdout == BODY, result.stderr
    finally:
        client.stop()


def test_openssh_ssh_dynamic_through_hashiked(
    ssh_client: SshClient, tmp_path: Path, web: int, hashiked: tuple[int, Path, Path]
) -> None:
    port, _known, key = hashiked
    local = free_port()
    argv = ssh_client.argv(
        port, identity=key, options={"ExitOnForwardFailure": "yes"}, args=["-v", "-N", "-D", str(local)]
    )
    client = SshProcess.start(argv)
    try:
        assert client.wait_for(r"Entering interactive session\."), client.stderr
        check_curl_modes(local, web)
    finally:
        client.stop()


def test_gateway_ports_binds_beyond_loopback_and_warns_once(
    hashiked: tuple[int, Path, Path], web: int
) -> None:
    """-g: -D (and -L) without a bind address listen on every address, as
    with ssh, so 127.0.0.2 reaches them; the open proxy is warned about once."""
    port, known, key = hashiked
    socks, socks2, local = free_port(), free_port(), free_port()
    extra = ["-g", "-D", str(socks), "-D", str(socks2), "-L", f"{local}:127.0.0.1:{web}"]
    client = start_hashike(hashike_argv(port, known, key, getpass.getuser(), *extra))
    try:
        assert client.wait_for(rf"Local connections to .*{local} forwarded", 1)
        answer = socks_exchange(socks, socks5_greeting(), 2, host="127.0.0.2")
        assert answer == b"\x05\x00"
        with socket.create_connection(("127.0.0.2", local), timeout=DEADLINE) as sock:
            sock.sendall(b"GET /file.txt HTTP/1.0\r\n\r\n")
            assert sock.makefile("rb").readline().startswith(b"HTTP/1.0 200")
    finally:
        client.stop()
    assert client.count("listens beyond loopback: anyone who can reach the port can use the proxy") == 1


def test_without_gateway_ports_loopback_only(hashiked: tuple[int, Path, Path]) -> None:
    port, known, key = hashiked
    socks = free_port()
    client = start_hashike(hashike_argv(port, known, key, getpass.getuser(), "-D", str(socks)))
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", socks), timeout=DEADLINE).close()
        assert socks_exchange(socks, socks5_greeting(), 2) == b"\x05\x00"
    finally:
        client.stop()
