"""Who may forward where: a policy matrix in the style of OpenSSH's
regress/forward-control.sh, and a burst of connections through sshd.

The matrix crosses hashiked's sshd_config keywords (AllowTcpForwarding,
PermitOpen, DisableForwarding) with the authorized_keys options of the key
that logs in (restrict, port-forwarding, no-port-forwarding, permitopen).
Two live targets listen, PORT and OTHER, each greeting with its own port
number; every case forwards to both and checks that each one either answers
or is refused as "administratively prohibited" — never "connect failed",
since both are up. The expected outcome comes from an oracle written here
from sshd_config(5) and sshd(8), not from the code under test: a target is
reachable when the server configuration *and* the key allow it.

Each case runs with OpenSSH's ``ssh -N -L`` against the ``hashiked``
command and with hashike's client library; a few run with the ``hashike``
command too. One hashiked per server configuration serves every key of the
matrix (the keys differ only in their authorized_keys options).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pwd
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.aio.client import SSHClient, connect
from hashike.aio.client_auth import AuthSettings, file_identity
from hashike.proto.constants import OpenFailureReason
from hashike.proto.errors import ChannelOpenFailed
from hashike.proto.hostkey import PublicKey
from tests.echo import start_echo_server
from tests.helpers import eventually
from tests.interop.conftest import free_port
from tests.interop.test_forward_hashike_to_sshd import login
from tests.interop.test_forward_openssh_to_hashiked import (
    DEADLINE,
    BackgroundLoop,
    Hashiked,
    SshProcess,
    keygen,
    public_line,
    server_port,
    ssh_forwards,
    start_hashiked,
)
from tests.interop.test_forward_openssh_to_hashiked import (
    connect as connect_socket,
)

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient, StartSshd

pytestmark = pytest.mark.interop

PROHIBITED = r"^channel \d+: open failed: administratively prohibited: open failed\r?$"

# Which of the two targets each side allows: "port", "other", both or neither.
BOTH = frozenset({"port", "other"})
NEITHER: frozenset[str] = frozenset()

# sshd_config lines ({port} and {other} are the targets' ports) and what they allow.
SERVER_CONFIGS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "AllowTcpForwarding=yes": (("AllowTcpForwarding=yes",), BOTH),
    "AllowTcpForwarding=local": (("AllowTcpForwarding=local",), BOTH),
    "AllowTcpForwarding=remote": (("AllowTcpForwarding=remote",), NEITHER),
    "AllowTcpForwarding=no": (("AllowTcpForwarding=no",), NEITHER),
    "PermitOpen=any": (("PermitOpen=any",), BOTH),
    "PermitOpen=none": (("PermitOpen=none",), NEITHER),
    "PermitOpen=PORT": (("PermitOpen=127.0.0.1:{port}",), frozenset({"port"})),
    "PermitOpen=OTHER": (("PermitOpen=127.0.0.1:{other}",), frozenset({"other"})),
    "DisableForwarding=yes": (("DisableForwarding=yes", "AllowTcpForwarding=yes"), NEITHER),
}

# authorized_keys options of one key each, and what they allow.
KEY_OPTIONS: dict[str, tuple[str, frozenset[str]]] = {
    "plain": ("", BOTH),
    "restrict": ("restrict", NEITHER),
    "restrict,port-forwarding": ("restrict,port-forwarding", BOTH),
    "no-port-forwarding": ("no-port-forwarding", NEITHER),
    "permitopen=PORT": ('permitopen="127.0.0.1:{port}"', frozenset({"port"})),
    "permitopen=OTHER": ('permitopen="127.0.0.1:{other}"', frozenset({"other"})),
}


@dataclass
class Matrix:
    directory: Path
    background: BackgroundLoop
    host_key: Path
    keys: dict[str, Path]
    authorized_keys: Path
    ports: dict[str, int]  # "port" and "other" -> the live targets' ports
    servers: dict[str, Hashiked] = field(default_factory=dict)

    def hashiked(self, config: str) -> Hashiked:
        """The hashiked running ``config``, started at its first use."""
        if config not in self.servers:
            options = [line.format(**self.ports) for line in SERVER_CONFIGS[config][0]]
            self.servers[config] = start_hashiked(
                self.directory, self.host_key, self.authorized_keys, *options
            )
        return self.servers[config]

    def allowed(self, config: str, key: str) -> frozenset[str]:
        return SERVER_CONFIGS[config][1] & KEY_OPTIONS[key][1]

    def host_public_key(self) -> PublicKey:
        return PublicKey.from_openssh_line(public_line(self.host_key))


def greeting(port: int) -> bytes:
    return f"target {port}\n".encode()


async def greeter() -> asyncio.Server:
    """A target that says which port it is, then closes."""

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        writer.write(greeting(port))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _close(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    directory = tmp_path_factory.mktemp("forward-matrix")
    background = BackgroundLoop()
    targets = [background.run(greeter()) for _ in range(2)]
    ports = {"port": server_port(targets[0]), "other": server_port(targets[1])}
    keys = {name: keygen(directory / f"id_{i}", f"matrix-{name}") for i, name in enumerate(KEY_OPTIONS)}
    authorized = directory / "authorized_keys"
    authorized.write_text(
        "".join(
            f"{options.format(**ports) + ' ' if options else ''}{public_line(keys[name])}\n"
            for name, (options, _) in KEY_OPTIONS.items()
        )
    )
    m = Matrix(directory, background, keygen(directory / "host_ed25519"), keys, authorized, ports)
    try:
        yield m
    finally:
        for server in m.servers.values():
            server.stop()
        for target in targets:
            background.run(_close(target))
        background.close()


CASES = [pytest.param(config, key, id=f"{config}/{key}") for config in SERVER_CONFIGS for key in KEY_OPTIONS]


def read_greeting(port: int) -> tuple[bytes, int]:
    """Connect to a local forward; what came back before EOF, and our port
    (the originator port ssh reports to the server)."""
    with connect_socket(port) as sock:
        origin = sock.getsockname()[1]
        data = b""
        with contextlib.suppress(ConnectionResetError):
            for _ in range(16):  # bounded: a greeting is one short line
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
        return data, origin


def check_forwards(
    client: SshProcess, server: Hashiked, locals_: list[int], m: Matrix, allowed: frozenset[str]
) -> None:
    """Connect through each local forward in turn: an allowed target greets,
    a forbidden one is refused by the server, and ssh and hashiked say so."""
    refused = 0
    for name, local in zip(("port", "other"), locals_, strict=True):
        data, origin = read_greeting(local)
        target = m.ports[name]
        if name in allowed:
            assert data == greeting(target), client.stderr
            continue
        assert data == b"", data
        refused += 1
        assert client.wait_for(PROHIBITED, times=refused), client.stderr
        line = (
            f"refused local port forward: originator 127.0.0.1 port {origin}, target 127.0.0.1 port {target}"
        )
        assert line in server.log_text(), server.log_text()
    assert client.count(PROHIBITED) == refused, client.stderr
    assert client.count("open failed") == refused, client.stderr  # never "connect failed"
    assert client.process.poll() is None, client.stderr  # a refused channel leaves the session up


@pytest.mark.parametrize(("config", "key"), CASES)
def test_openssh_ssh(matrix: Matrix, ssh_client: SshClient, config: str, key: str) -> None:
    server = matrix.hashiked(config)
    targets = [matrix.ports["port"], matrix.ports["other"]]
    client, locals_ = ssh_forwards(ssh_client, server.port, matrix.keys[key], targets)
    try:
        check_forwards(client, server, locals_, matrix, matrix.allowed(config, key))
    finally:
        client.stop()
    server.assert_healthy()


async def hashike_login(server: Hashiked, m: Matrix, key: Path) -> SSHClient:
    identity = await file_identity(str(key), None)
    assert identity is not None
    auth = AuthSettings(username=_user(), identities=[identity], host_label="127.0.0.1")
    expected = m.host_public_key()
    return await connect("127.0.0.1", server.port, check_host_key=lambda k: k == expected, auth=auth)


def _user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.mark.parametrize(("config", "key"), CASES)
async def test_hashike_library(matrix: Matrix, config: str, key: str) -> None:
    server = matrix.hashiked(config)
    allowed = matrix.allowed(config, key)
    async with await hashike_login(server, matrix, matrix.keys[key]) as client:
        for name in ("port", "other"):
            target = matrix.ports[name]
            if name in allowed:
                reader, writer = await client.open_connection("127.0.0.1", target)
                assert await asyncio.wait_for(reader.read(), DEADLINE) == greeting(target)
                writer.close()
            else:
                with pytest.raises(ChannelOpenFailed) as info:
                    await client.open_connection("127.0.0.1", target)
                assert info.value.reason == OpenFailureReason.ADMINISTRATIVELY_PROHIBITED
    server.assert_healthy()


async def done_with(server: Hashiked, client: SSHClient) -> str:
    """hashiked's log once the worker that served ``client`` has logged its
    DISCONNECT, which it does after handling what came before it in the
    same input (a later login is no sign: another worker may take it)."""
    assert client.local_address is not None
    ended = f"Received disconnect from 127.0.0.1 port {client.local_address[1]}:"
    async with asyncio.timeout(DEADLINE):
        while ended not in (log := server.log_text()):
            await asyncio.sleep(0.02)
    return log


async def test_eof_arriving_with_disconnect(matrix: Matrix) -> None:
    """The client's CHANNEL_EOF and DISCONNECT in one segment, on a channel
    whose target has already closed: hashiked's bridge would close the
    channel, but the connection is gone (it used to raise from data_received)."""
    server = matrix.hashiked("AllowTcpForwarding=yes")
    client = await hashike_login(server, matrix, matrix.keys["plain"])
    reader, writer = await client.open_connection("127.0.0.1", matrix.ports["port"])
    # The target greets and closes: hashiked has sent its EOF and waits for ours.
    assert await asyncio.wait_for(reader.read(), DEADLINE) == greeting(matrix.ports["port"])
    (channel_id,) = client.core.channels.ids()
    client.core.channels.send_eof(channel_id)
    client.close()  # one write: CHANNEL_EOF, then DISCONNECT
    await asyncio.wait_for(client.wait_closed(), DEADLINE)
    writer.close()
    log = await done_with(server, client)
    assert "Fatal error" not in log, log
    server.assert_healthy()


async def test_refused_open_arriving_with_disconnect(matrix: Matrix) -> None:
    """A forbidden direct-tcpip open and the client's DISCONNECT in one
    segment: hashiked logs the refusal but answers nothing to a closed
    connection (it used to raise from data_received)."""
    server = matrix.hashiked("PermitOpen=none")
    client = await hashike_login(server, matrix, matrix.keys["plain"])
    client.core.channels.open_direct_tcpip("127.0.0.1", matrix.ports["port"], "127.0.0.1", 4321)
    client.close()  # one write: CHANNEL_OPEN, then DISCONNECT
    await asyncio.wait_for(client.wait_closed(), DEADLINE)
    log = await done_with(server, client)
    refused = f"originator 127.0.0.1 port 4321, target 127.0.0.1 port {matrix.ports['port']}"
    assert f"refused local port forward: {refused}" in log, log
    assert "Fatal error" not in log, log
    server.assert_healthy()


# --- the hashike command --------------------------------------------------------------


def hashike_forwards(server: Hashiked, m: Matrix, key: Path) -> tuple[SshProcess, list[int]]:
    """``hashike -v -N -L lp:127.0.0.1:PORT -L lp:127.0.0.1:OTHER`` to hashiked;
    returns once both forwards listen (a lost race for a free port is retried)."""
    known = m.directory / f"known_hosts-{server.port}"
    known.write_text(server.known_hosts_line() + "\n")
    last = ""
    for _attempt in range(3):
        local = [free_port(), free_port()]
        argv = [
            sys.executable, "-m", "hashike.cli.client", "-F", "none", "-v", "-N",
            "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
            "-i", str(key), "-p", str(server.port),
            "-L", f"{local[0]}:127.0.0.1:{m.ports['port']}",
            "-L", f"{local[1]}:127.0.0.1:{m.ports['other']}",
            f"{_user()}@127.0.0.1",
        ]  # fmt: skip
        client = SshProcess.start(argv)
        if all(client.wait_for(rf"\[127\.0\.0\.1\]:{lp} forwarded to remote address") for lp in local):
            return client, local
        client.stop()
        last = client.stderr
        if "Address already in use" not in last:
            break
    raise AssertionError(f"hashike did not set up its forwards:\n{last}")


@pytest.mark.parametrize(
    ("config", "key"),
    [
        pytest.param("PermitOpen=PORT", "plain", id="PermitOpen=PORT"),
        pytest.param("AllowTcpForwarding=yes", "permitopen=OTHER", id="permitopen=OTHER"),
        pytest.param("AllowTcpForwarding=no", "plain", id="AllowTcpForwarding=no"),
    ],
)
def test_hashike_command(matrix: Matrix, config: str, key: str) -> None:
    server = matrix.hashiked(config)
    client, locals_ = hashike_forwards(server, matrix, matrix.keys[key])
    try:
        check_forwards(client, server, locals_, matrix, matrix.allowed(config, key))
    finally:
        client.stop()
    assert "Traceback" not in client.stderr, client.stderr
    server.assert_healthy()


# --- a burst of connections through one -L to OpenSSH's sshd ---------------------------------


BURST = int(os.environ.get("HASHIKE_BURST", "1000"))
BURST_PAYLOAD = 64 * 1024


async def test_burst_of_connections_through_sshd(start_sshd: StartSshd) -> None:
    """BURST simultaneous connections through one hashike -L (the library's
    forward_local) to sshd, each echoing 64 KiB of its own: all complete, none fails."""
    sshd = start_sshd()
    # Every connection of the burst arrives at once: a backlog to match.
    echo = await start_echo_server(backlog=BURST + 24)
    port = server_port(echo)
    async with await login(sshd) as client:
        listener = await client.forward_local(None, 0, "127.0.0.1", port)

        async def one(i: int) -> str | None:
            payload = hashlib.sha256(i.to_bytes(4, "big")).digest() * (BURST_PAYLOAD // 32)
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
                try:
                    writer.write(payload)
                    writer.write_eof()
                    data = await reader.read()
                finally:
                    writer.close()
            except OSError as exc:
                return f"{i}: {exc!r}"
            return None if data == payload else f"{i}: {len(data)} bytes, wrong data"

        started = time.monotonic()
        failures = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(BURST))), 100)
        seconds = time.monotonic() - started
        errors = [f for f in failures if f is not None]
        log = sshd.log_text()
        assert not errors, (errors[:10], re.findall(r".*(?:error|fatal).*", log)[:20])
        assert listener.connections == BURST
        # The last closes cross soon after: no channel is left.
        await eventually(lambda: len(client.core.channels) == 0, what=lambda: client.core.channels)
    echo.close()
    await echo.wait_closed()
    print(f"\n{BURST} x 64 KiB echoed through hashike -L and sshd in {seconds:.1f} s")
