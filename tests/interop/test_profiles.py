"""Profiles by name: the guide's POP.ini as a ``Host pop`` block, started with
``hashike up pop`` against hashiked, the POP dialogue through it while it is
up, ``hashike profiles`` saying so, ``hashike down pop`` freeing the port;
and a profile whose port is taken failing with ssh's lines, exit 255."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hashike.cli.pop3 import start_pop3
from tests.helpers import eventually_sync
from tests.interop.conftest import free_port
from tests.interop.test_forward_openssh_to_hashiked import (
    DEADLINE,
    BackgroundLoop,
    keygen,
    public_line,
    start_hashiked,
)
from tests.interop.test_remote_forward import answers, check_pop3

pytestmark = pytest.mark.interop


@pytest.fixture
def runtime() -> Iterator[dict[str, str]]:
    """An environment whose XDG_RUNTIME_DIR is a short private directory
    (a socket path holds 108 bytes), removed after."""
    directory = tempfile.mkdtemp(prefix="hp", dir="/tmp")
    try:
        yield {**os.environ, "XDG_RUNTIME_DIR": directory}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pop_profile(tmp_path: Path) -> Iterator[tuple[Path, int, Callable[[], None]]]:
    """hashiked, a POP server on loopback and an ssh_config with ``Host pop``
    forwarding a free port to it; the config, that port, and a call that
    kills hashiked and starts it again on its port."""
    loop = BackgroundLoop()
    pop3 = loop.run(start_pop3())
    client_key = keygen(tmp_path / "id_ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(public_line(client_key) + "\n")
    daemon = start_hashiked(tmp_path, keygen(tmp_path / "host_ed25519"), authorized)
    daemons = [daemon]

    def restart() -> None:
        daemons[-1].process.kill()
        daemons[-1].process.wait(DEADLINE)
        daemons.append(start_hashiked(tmp_path, daemon.host_key, authorized, port=daemon.port))

    known = tmp_path / "known_hosts"
    known.write_text(daemon.known_hosts_line() + "\n")
    port = free_port()
    config = tmp_path / "config"
    config.write_text(
        "Host pop\n"
        f"    HostName 127.0.0.1\n    Port {daemon.port}\n    IdentityFile {client_key}\n"
        f"    UserKnownHostsFile {known}\n    GlobalKnownHostsFile /dev/null\n"
        "    IdentityAgent none\n    BatchMode yes\n"
        f"    LocalForward {port} 127.0.0.1:{pop3.port}\n"
        "Host other\n    HostName 127.0.0.1\n"
    )
    config.chmod(0o600)
    try:
        yield config, port, restart
    finally:
        for each in daemons:
            each.stop()
        loop.close()


Profile = tuple[Path, int, Callable[[], None]]


def hashike(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "hashike.cli.client", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, env=env, stdin=subprocess.DEVNULL)


def test_up_status_down(pop_profile: Profile, runtime: dict[str, str]) -> None:
    config, port, _ = pop_profile
    listed = hashike(runtime, "profiles", "-F", str(config))
    assert listed.returncode == 0 and listed.stdout.splitlines()[0] == "pop  down", listed
    assert "other" not in listed.stdout  # no forwards: not a profile

    started = hashike(runtime, "up", "-F", str(config), "pop")
    assert started.returncode == 0 and "pop is up" in started.stderr, started
    try:
        check_pop3(port)
        assert hashike(runtime, "profiles", "-F", str(config)).stdout.splitlines() == [
            "pop  up",
            f"    -L {port}:127.0.0.1:{port_of_pop(config)}",
        ]
        shown = hashike(runtime, "status", "--json")
        assert shown.returncode == 0, shown
        (connection,) = json.loads(shown.stdout)["connections"]  # the profile's socket and symlink: once
        assert connection["connection"]["host"] == "pop"
        assert [f["kind"] for f in connection["forwards"]] == ["local"]
        again = hashike(runtime, "up", "-F", str(config), "pop")
        assert again.returncode == 0 and "pop is already up" in again.stderr, again
    finally:
        stopped = hashike(runtime, "down", "-F", str(config), "pop")
    assert stopped.returncode == 0 and "pop is down" in stopped.stderr, stopped
    assert not answers(port, attempts=1)
    assert "pop is not up" in hashike(runtime, "down", "-F", str(config), "pop").stderr


def port_of_pop(config: Path) -> str:
    line = next(line for line in config.read_text().splitlines() if "LocalForward" in line)
    return line.rsplit(":", 1)[1]


def test_up_fails_with_the_connections_lines(pop_profile: Profile, runtime: dict[str, str]) -> None:
    config, port, _ = pop_profile
    with socket.create_server(("127.0.0.1", port)):  # the profile's port is taken
        failed = hashike(runtime, "up", "-F", str(config), "pop")
    assert failed.returncode == 255, failed
    assert f"bind [127.0.0.1]:{port}: Address already in use" in failed.stderr, failed.stderr
    assert "Could not request local forwarding." in failed.stderr
    unknown = hashike(runtime, "up", "-F", str(config), "nosuch")
    assert unknown.returncode == 255 and "no profile nosuch" in unknown.stderr, unknown


def test_a_profile_is_supervised(pop_profile: Profile, runtime: dict[str, str]) -> None:
    """The server goes away and comes back: the profile reconnects by itself,
    the POP dialogue goes through again and status counts the reconnect."""
    config, port, restart = pop_profile
    started = hashike(runtime, "up", "-F", str(config), "pop")
    assert started.returncode == 0, started
    try:
        check_pop3(port)
        restart()

        def reconnected() -> bool:
            shown = hashike(runtime, "status", "--json")
            (connection,) = json.loads(shown.stdout)["connections"]
            return bool(connection["connection"]["reconnects"] == 1)

        eventually_sync(reconnected, DEADLINE, what=lambda: hashike(runtime, "status", "--json").stdout)
        check_pop3(port)
    finally:
        stopped = hashike(runtime, "down", "-F", str(config), "pop")
    assert stopped.returncode == 0 and "pop is down" in stopped.stderr, stopped
