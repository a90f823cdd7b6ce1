"""Running as a systemd service, without systemd: sd_notify(3) datagrams on
a socket the test creates (a path, and the abstract namespace), and socket
activation (sd_listen_fds(3)) with a listening socket the test binds and
hands to hashiked as fd 3 (issue 10's tests 7 and 8)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashike.aio.service import Notifier, ServiceError, _listening_socket, listen_sockets
from hashike.config.ssh_config import parse_client_config
from tests.interop.conftest import free_port
from tests.interop.test_forward_openssh_to_hashiked import keygen, public_line, start_hashiked
from tests.interop.test_remote_forward import Server, answers, hashike_argv, start

WAIT = 20.0


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """(NOTIFY_SOCKET's value, the receiving socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
    else:
        address = f"@hashike-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + address[1:])
    sock.settimeout(WAIT)
    with sock:
        yield address, sock


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


# --- the protocol, in-process ---------------------------------------------------------------


def test_notifications_arrive_in_order(notify_socket: tuple[str, socket.socket]) -> None:
    address, sock = notify_socket
    environ = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000", "OTHER": "kept"}
    notifier = Notifier.from_environment(environ)
    assert environ == {"OTHER": "kept"}  # read once, not passed on to children
    assert notifier.watchdog == 4.0
    notifier.status("connecting")
    notifier.ready("up")
    notifier.alive()
    notifier.stopping("bye")
    notifier.close()
    assert [receive(sock) for _ in range(4)] == [
        "STATUS=connecting",
        "READY=1\nSTATUS=up",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=bye",
    ]


def test_a_watchdog_for_another_process_is_not_ours() -> None:
    environ = {"NOTIFY_SOCKET": "/nowhere", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environment(environ).watchdog is None


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.active
    notifier.ready("up")  # a no-op, not an error
    notifier.alive()


def test_a_manager_that_went_away_costs_nothing(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"), watchdog=1.0)
    notifier.ready("up")  # ENOENT: logged, never raised
    notifier.close()


def test_listen_fds_for_another_process_are_not_ours() -> None:
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "ssh"}
    assert listen_sockets(environ) == []
    assert environ == {}


def test_a_handed_descriptor_must_be_a_listening_tcp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        expected = rf"fd {udp.fileno()} is not a listening TCP socket"
        with pytest.raises(ServiceError, match=expected):
            _listening_socket(udp.fileno())
    with socket.socket() as unbound, pytest.raises(ServiceError, match="is not a listening TCP socket"):
        _listening_socket(unbound.fileno())
    with pytest.raises(ServiceError, match="Bad file descriptor"):
        _listening_socket(_closed_fd())


def _closed_fd() -> int:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


# --- the commands ---------------------------------------------------------------------------


def hashiked_login(tmp_path: Path) -> tuple[Path, Path]:
    """A host key and a client key whose public line is authorized_keys."""
    client_key = keygen(tmp_path / "id_ed25519")
    (tmp_path / "authorized_keys").write_text(f"{public_line(client_key)}\n")
    return keygen(tmp_path / "host_ed25519"), client_key


def test_hashike_tunnel_notifies_ready_status_and_watchdog(
    tmp_path: Path, notify_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, sock = notify_socket
    host_key, client_key = hashiked_login(tmp_path)
    daemon = start_hashiked(tmp_path, host_key, tmp_path / "authorized_keys")
    known = tmp_path / "known_hosts"
    known.write_text(daemon.known_hosts_line() + "\n")
    listen_port = free_port()
    # BatchMode's ServerAliveInterval is 300 s: under a 2 s watchdog the server is probed every second.
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    argv = hashike_argv(Server(daemon.port, client_key, known), "-L", f"{listen_port}:127.0.0.1:9")
    client = start(argv)
    monkeypatch.delenv("NOTIFY_SOCKET")
    try:
        assert receive(sock) == "STATUS=connecting to 127.0.0.1"
        assert receive(sock) == "READY=1\nSTATUS=connected to 127.0.0.1; 1 forward up"
        assert answers(listen_port)  # READY came once the forward was up
        assert receive(sock) == "WATCHDOG=1"
        assert receive(sock) == "WATCHDOG=1"
        os.killpg(client.process.pid, signal.SIGTERM)
        assert client.process.wait(WAIT) == 0, client.stderr
        assert receive(sock) == "STOPPING=1\nSTATUS=connection to 127.0.0.1 closed"
    finally:
        client.stop()
        daemon.stop()


# POSIX sh: the socket on stdin becomes fd 3 and LISTEN_PID the pid that execs hashiked.
_ACTIVATE = 'export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@" 3<&0 </dev/null'


def test_hashiked_serves_a_login_on_a_socket_it_was_handed(
    tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    address, notify = notify_socket
    host_key, client_key = hashiked_login(tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server_argv = [
        sys.executable, "-m", "hashike.cli.server", "-h", str(host_key),
        "-o", f"AuthorizedKeysFile={tmp_path / 'authorized_keys'}",
    ]  # fmt: skip
    with listener, open(tmp_path / "hashiked.log", "w") as log:
        daemon = subprocess.Popen(
            ["sh", "-c", _ACTIVATE, "sh", *server_argv],
            stdin=listener.fileno(), stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, "NOTIFY_SOCKET": address},
        )  # fmt: skip
    try:
        assert daemon.stdout is not None
        line = daemon.stdout.readline()  # bounded: hashiked prints it or exits
        assert re.match(rf"hashiked: listening on 127\.0\.0\.1 port {port}; host key SHA256:", line), line
        assert receive(notify) == f"READY=1\nSTATUS=listening on 127.0.0.1 port {port}"
        known = tmp_path / "known_hosts"
        algorithm, blob = public_line(host_key).split()[:2]
        known.write_text(f"[127.0.0.1]:{port} {algorithm} {blob}\n")
        argv = [a for a in hashike_argv(Server(port, client_key, known)) if a != "-N"]
        result = subprocess.run(
            [*argv, "echo", "served"], capture_output=True, text=True, timeout=WAIT, stdin=subprocess.DEVNULL
        )
        assert (result.returncode, result.stdout) == (0, "served\n"), result.stderr
        daemon.terminate()
        assert daemon.wait(WAIT) == 0
        assert receive(notify) == "STOPPING=1\nSTATUS=shutting down"
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait(WAIT)
        daemon.stdout.close()  # type: ignore[union-attr]


# --- the unit files ---------------------------------------------------------------------------

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


def unit(name: str) -> dict[str, str]:
    """``Key=value`` lines of a unit file (each key appears once in ours)."""
    lines = (UNITS / name).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_the_tunnel_unit_runs_hashike_with_options_it_accepts() -> None:
    tunnel = unit("hashike-tunnel@.service")
    assert tunnel["Type"] == "notify"
    argv = tunnel["ExecStart"].split()
    assert argv[-1] == "%I" and "-N" in argv  # the instance is the Host
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    settings = parse_client_config("wisdom", config_file="none", options=options, system_config_file=None)
    assert settings.batch_mode and settings.exit_on_forward_failure
    # The watchdog outlasts a keepalive round, or a live tunnel would be killed.
    assert int(tunnel["WatchdogSec"]) > 2 * settings.server_alive_interval


def test_the_server_units_hand_one_socket_to_one_notifying_hashiked() -> None:
    service, sock = unit("hashiked.service"), unit("hashiked.socket")
    assert service["Type"] == "notify" and "hashiked" in service["ExecStart"]
    assert sock["Accept"] == "no"  # one hashiked for every connection (LISTEN_FDS)
    host, _, port = sock["ListenStream"].rpartition(":")
    assert host == "127.0.0.1" and port.isdigit()
