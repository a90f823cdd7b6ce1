"""``hashike status`` against a real master: the ``hashike`` command (``-M
-S path -N -L``) logged in to hashiked on loopback, found through its entry
in the runtime directory. After 64 MiB through the -L forward the JSON shows
the bytes and as many open connections as are really open; without a tty
the plain table shows the forward; a dead master's entry is removed."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hashike.cli.status import _size
from tests.echo import start_echo_server
from tests.helpers import eventually_sync
from tests.interop.conftest import free_port
from tests.interop.test_control import wait_for_socket
from tests.interop.test_forward_openssh_to_hashiked import DEADLINE, BackgroundLoop, start_hashiked
from tests.interop.test_keepalive import hashiked_pair
from tests.interop.test_remote_forward import Server, answers, hashike_argv, hashiked_server, start

MIB = 1 << 20
VOLUME = 64 * MIB


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A runtime directory of the test's own (XDG_RUNTIME_DIR), short enough for sun_path."""
    base = tempfile.mkdtemp(prefix="hs", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", base)
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", base], check=True)


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    loop = BackgroundLoop()
    try:
        server = loop.run(start_echo_server())
        yield int(server.sockets[0].getsockname()[1])
    finally:
        loop.close()


def status(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "hashike.cli.client", "status", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)


def forward_of(port: int) -> dict[str, Any]:
    done = status("--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["schema"] == 1
    forwards = [f for c in document["connections"] for f in c.get("forwards", [])]
    found: list[dict[str, Any]] = [f for f in forwards if f["listen"].startswith(f"127.0.0.1:{port}")]
    assert len(found) == 1, document
    return found[0]


def echo_through(port: int, volume: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        writer = threading.Thread(target=sock.sendall, args=(b"\x5a" * volume,))
        writer.start()
        got = 0
        while got < volume:  # bounded by the socket's timeout
            chunk = sock.recv(1 << 20)
            assert chunk, f"echo ended after {got} bytes"
            got += len(chunk)
        writer.join(DEADLINE)


@pytest.fixture
def master(tmp_path: Path, runtime: str, echo_port: int) -> Iterator[int]:
    server, daemon = hashiked_server(tmp_path)
    port = free_port()
    path = os.path.join(runtime, "m")
    client = start(hashike_argv(server, "-M", "-S", path, "-L", f"{port}:127.0.0.1:{echo_port}"))
    try:
        wait_for_socket(path)
        yield port
    finally:
        client.process.kill()
        client.process.wait(DEADLINE)
        daemon.stop()  # type: ignore[attr-defined]


def test_json_after_64_mib_and_open_connections(master: int) -> None:
    port = master
    echo_through(port, VOLUME)
    eventually_sync(
        lambda: forward_of(port)["open"] == 0, DEADLINE, what=lambda: forward_of(port), interval=0.2
    )
    seen = forward_of(port)
    assert seen["kind"] == "local" and seen["connections"] == 1
    assert seen["bytes_in"] >= VOLUME and seen["bytes_out"] >= VOLUME
    held = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) for _ in range(2)]
    try:
        for sock in held:  # through the tunnel and back: the channel is open
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        assert forward_of(port)["open"] == 2
        peers = {c["peer"] for c in forward_of(port)["open_connections"]}
        assert peers == {f"127.0.0.1:{s.getsockname()[1]}" for s in held}
    finally:
        for sock in held:
            sock.close()
    eventually_sync(
        lambda: forward_of(port)["open"] == 0, DEADLINE, what=lambda: forward_of(port), interval=0.2
    )
    assert forward_of(port)["connections"] == 3


def test_plain_table_without_a_tty(master: int) -> None:
    echo_through(master, MIB)
    done = status()
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{master}" in done.stdout and "local" in done.stdout, done.stdout
    assert "\x1b[" not in done.stdout  # no terminal: no escape sequences


def test_stale_entry_removed(runtime: str) -> None:
    entries = Path(runtime) / "hashike"
    entries.mkdir(mode=0o700)
    gone = entries / "999999.sock"
    gone.symlink_to(os.path.join(runtime, "no-such-socket"))
    done = status("--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"schema": 1, "connections": []}
    assert not gone.is_symlink()


def test_wrong_mode_runtime_dir_refused(runtime: str) -> None:
    (Path(runtime) / "hashike").mkdir(mode=0o755)
    os.chmod(Path(runtime) / "hashike", 0o755)
    done = status()
    assert done.returncode == 255
    assert (
        done.stderr == f"hashike status: runtime directory {runtime}/hashike has mode 0755; it must be 0700\n"
    )


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1023 B"), (64 * MIB, "64.0 MiB"), (1536, "1.5 KiB")]
)
def test_sizes(n: int, text: str) -> None:
    assert _size(n) == text


SIZE = re.compile(r"(\d+(?:\.\d+)?) (B|KiB|MiB|GiB)\b")
RATE = re.compile(r"(\d+(?:\.\d+)?) (?:B|KiB|MiB|GiB)/s")
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def shown_bytes(screen: str, port: int) -> int | None:
    """The forward's "in" count on the captured screen, None if its row is not there."""
    rows = [line for line in screen.splitlines() if f"127.0.0.1:{port}" in line]
    sizes = SIZE.findall(rows[0]) if rows else []
    return int(float(sizes[0][0]) * UNITS[sizes[0][1]]) if sizes else None


def test_watch_under_tmux(master: int, runtime: str) -> None:
    port, name = master, f"hs{os.getpid()}"
    stop = threading.Event()

    def traffic() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            while not stop.wait(0.05):  # until the test has seen enough
                sock.sendall(b"\x5a" * (1 << 18))
                got = 0
                while got < 1 << 18:
                    got += len(sock.recv(1 << 18))

    def tmux(*args: str) -> str:
        done = subprocess.run(["tmux", "-L", name, *args], capture_output=True, text=True, timeout=DEADLINE)
        assert done.returncode == 0, done.stderr
        return done.stdout

    mover = threading.Thread(target=traffic)
    mover.start()
    view = f"{sys.executable} -m hashike.cli.client status --watch"
    command = f"env XDG_RUNTIME_DIR={runtime} COLUMNS=200 {view}"
    try:
        tmux("new-session", "-d", "-s", name, "-x", "200", "-y", "50", command)
        first: list[int] = []

        def row_on_screen() -> bool:
            n = shown_bytes(tmux("capture-pane", "-p", "-t", name), port)
            first[:] = [] if n is None else [n]
            return bool(first) and first[0] > 0

        def screen() -> str:
            return tmux("capture-pane", "-p", "-t", name)

        eventually_sync(row_on_screen, DEADLINE, what=screen, interval=0.2)

        def grown() -> bool:
            n = shown_bytes(tmux("capture-pane", "-p", "-t", name), port)
            return n is not None and n > first[0]

        eventually_sync(grown, DEADLINE, what=screen, interval=0.2)

        def moving() -> bool:  # the current rate, between two refreshes
            rows = [line for line in screen().splitlines() if f"127.0.0.1:{port}" in line]
            return bool(rows) and any(float(n) > 0 for n in RATE.findall(rows[0]))

        eventually_sync(moving, DEADLINE, what=screen, interval=0.2)
    finally:
        stop.set()
        mover.join(DEADLINE)
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, timeout=DEADLINE)


def connection_of(path: str) -> dict[str, Any]:
    done = status("--json", "-S", path)
    assert done.returncode == 0, done.stderr
    (conn,) = json.loads(done.stdout)["connections"]
    assert isinstance(conn, dict)
    return conn


def control(server: Server, path: str, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``hashike -S path -O command args``."""
    argv = [*hashike_argv(server, "-S", path, "-O", command, *args)]
    argv.remove("-N")
    return subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)


def remote_forwards(conn: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in conn.get("forwards", []) if f["kind"] == "remote"]


def test_remote_forward_and_reconnect_under_a_master(tmp_path: Path, runtime: str, echo_port: int) -> None:
    """-R's counters; after hashiked is killed and started again: the state
    while it is down, the reconnect count, -R listed once, the keepalive's
    round trip, a multiplexed command on the new connection, and a -R added
    with -O forward before the outage asked for again and cancelled after it."""
    server, daemon = hashiked_pair(tmp_path)
    daemons = [daemon]
    remote, path = free_port(), os.path.join(runtime, "m")
    options = ("-o", "Reconnect=yes", "-o", "ReconnectMaxDelay=2", "-o", "ServerAliveInterval=1")
    client = start(hashike_argv(server, "-M", "-S", path, *options, "-R", f"{remote}:127.0.0.1:{echo_port}"))
    try:
        wait_for_socket(path)
        eventually_sync(lambda: remote_forwards(connection_of(path)), DEADLINE, what="the -R forward")
        echo_through(remote, MIB)
        eventually_sync(
            lambda: remote_forwards(connection_of(path))[0]["bytes_in"] >= MIB,
            DEADLINE,
            what=lambda: connection_of(path),
            interval=0.2,
        )
        (seen,) = remote_forwards(connection_of(path))
        assert seen["listen"] == f"localhost:{remote}" and seen["target"] == f"127.0.0.1:{echo_port}", seen
        assert seen["connections"] == 1 and seen["bytes_out"] >= MIB
        assert connection_of(path)["connection"]["reconnects"] == 0
        later = free_port()
        added = control(server, path, "forward", "-R", f"{later}:127.0.0.1:{echo_port}")
        assert added.returncode == 0, added.stderr
        daemons[-1].process.kill()
        daemons[-1].process.wait(DEADLINE)
        eventually_sync(
            lambda: connection_of(path)["connection"]["state"].startswith("reconnecting in "),
            DEADLINE,
            what=lambda: connection_of(path),
            interval=0.1,
        )
        daemons.append(
            start_hashiked(tmp_path, daemon.host_key, tmp_path / "authorized_keys", port=server.port)
        )
        eventually_sync(
            lambda: (
                connection_of(path)["connection"]["reconnects"] == 1 and remote_forwards(connection_of(path))
            ),
            DEADLINE,
            what=lambda: connection_of(path),
            interval=0.2,
        )
        eventually_sync(lambda: len(remote_forwards(connection_of(path))) == 2, DEADLINE, what="both -R")
        conn = connection_of(path)
        assert conn["connection"]["state"] == "connected"
        assert len(remote_forwards(conn)) == 2  # the old connection's are gone
        echo_through(remote, MIB)
        echo_through(later, MIB)
        cancelled = control(server, path, "cancel", "-R", f"{later}:127.0.0.1:{echo_port}")
        assert cancelled.returncode == 0, cancelled.stderr
        eventually_sync(lambda: not answers(later, attempts=1), DEADLINE, what="the cancelled -R gone")
        eventually_sync(
            lambda: connection_of(path)["connection"]["rtt"] is not None, DEADLINE, what="a keepalive's reply"
        )
        argv = [*hashike_argv(server, "-S", path)[:-1], "127.0.0.1", "echo", "through the new one"]
        argv.remove("-N")
        shared = subprocess.run(
            argv, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL
        )
        assert (shared.returncode, shared.stdout) == (0, "through the new one\n"), shared.stderr
        plain = status("-S", path)
        assert "1 reconnect" in plain.stdout and f"localhost:{remote}" in plain.stdout, plain.stdout
    finally:
        client.stop()
        for d in daemons:
            d.stop()


def test_a_connection_without_a_master_is_shown(tmp_path: Path, runtime: str, echo_port: int) -> None:
    """No ControlMaster: the connection's own status socket in the runtime
    directory answers status, and refuses a multiplexed session (which then
    makes its own connection, as ssh's does)."""
    server, daemon = hashiked_server(tmp_path)
    port = free_port()
    client = start(hashike_argv(server, "-L", f"{port}:127.0.0.1:{echo_port}"))
    own = Path(runtime) / "hashike" / f"{client.process.pid}.sock"
    try:
        wait_for_socket(str(own))
        assert oct(own.stat().st_mode & 0o777) == "0o600"
        echo_through(port, MIB)
        eventually_sync(lambda: forward_of(port)["bytes_in"] >= MIB, DEADLINE, what=lambda: forward_of(port))
        argv = [*hashike_argv(server, "-S", str(own), "-o", "ControlMaster=no")[:-1], "127.0.0.1", "true"]
        argv.remove("-N")
        shared = subprocess.run(
            argv, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL
        )
        # Refused, in ssh's words; then, as ssh, it connected by itself.
        assert shared.stderr.startswith("Master refused session request: Permission denied\n"), shared
        assert shared.returncode == 0, shared
    finally:
        client.stop()
        daemon.stop()  # type: ignore[attr-defined]
    assert not own.exists()  # gone with the connection
