"""The ``hashike`` command against a real OpenSSH sshd: what a user sees."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hashike.keys.keypair import generate_private_key, write_private_key

if TYPE_CHECKING:
    from tests.interop.conftest import SshdServer, StartSshd


def hashike_argv(sshd: SshdServer, known_hosts: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "hashike.cli.client", "-F", "none",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
        "-p", str(sshd.port), *extra,
    ]  # fmt: skip


def run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_unknown_host_key_in_batch_mode_is_refused(start_sshd: StartSshd, tmp_path: Path) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    result = run(hashike_argv(sshd, known, "-i", str(sshd.client_key), f"{sshd.user}@127.0.0.1", "-N"))
    assert result.returncode == 255
    assert result.stderr.endswith("Host key verification failed.\n"), result.stderr
    assert "Traceback" not in result.stderr
    assert not known.exists()


def test_accept_new_then_changed_key(start_sshd: StartSshd, tmp_path: Path) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    argv = hashike_argv(
        sshd, known, "-o", "StrictHostKeyChecking=accept-new", "-i", str(sshd.client_key), "-v"
    )
    proc = subprocess.Popen(
        [*argv, f"{sshd.user}@127.0.0.1", "-N"], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # bounded: until authenticated or 20 s
        line = proc.stderr.readline()
        lines.append(line)
        if "Authenticated to 127.0.0.1" in line or not line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    text = "".join(lines)
    assert (
        f"Warning: Permanently added '[127.0.0.1]:{sshd.port}' (ED25519) to the list of known hosts." in text
    )
    assert 'using "publickey"' in text, text
    assert proc.returncode == 0
    # OpenSSH's ssh accepts the line hashike recorded.
    ok = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(known)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and "ssh-ed25519" in ok.stdout
    # Now the server presents another key: refused loudly.
    other = generate_private_key()
    known.write_text(f"[127.0.0.1]:{sshd.port} {other.public_key.openssh_line()}\n")
    result = run(hashike_argv(sshd, known, "-i", str(sshd.client_key), f"{sshd.user}@127.0.0.1", "-N"))
    assert result.returncode == 255
    assert "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!" in result.stderr
    assert result.stderr.endswith("Host key verification failed.\n")


def test_wrong_key_is_permission_denied(start_sshd: StartSshd, tmp_path: Path) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    stranger = tmp_path / "stranger"
    write_private_key(generate_private_key(), stranger)
    result = run(hashike_argv(sshd, known, "-i", str(stranger), f"{sshd.user}@127.0.0.1", "-N"))
    assert result.returncode == 255
    assert result.stderr == f"{sshd.user}@127.0.0.1: Permission denied (publickey).\n"


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "hashike.cli.client", "-F", "none", "-p", str(port), "127.0.0.1", "-N"]
    result = run(argv)
    assert result.returncode == 255
    assert result.stderr == f"hashike: connect to host 127.0.0.1 port {port}: Connection refused\n"


def test_bad_forward_spec() -> None:
    result = run([sys.executable, "-m", "hashike.cli.client", "-F", "none", "-L", "nonsense", "127.0.0.1"])
    assert result.returncode == 255
    assert result.stderr.strip() == "Bad local forwarding specification 'nonsense'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_guide_command_line_with_sshd(start_sshd: StartSshd, tmp_path: Path) -> None:
    """hashike -N -L40000:host:110 (attached form, as in the guide), then a
    client reads the POP3 greeting through the tunnel."""
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    pop3 = subprocess.Popen(
        [sys.executable, "-c", POP3_SERVER], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    assert pop3.stdout is not None
    pop3_port = int(pop3.stdout.readline())
    local = free_port()
    argv = hashike_argv(
        sshd, known, "-N", f"-L{local}:127.0.0.1:{pop3_port}", "-i", str(sshd.client_key), "-v"
    )
    proc = subprocess.Popen(
        [*argv, f"{sshd.user}@127.0.0.1"], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        while True:  # bounded: until the forward is up or 20 s
            assert time.monotonic() < deadline, "hashike did not announce the forward within 20 s"
            line = proc.stderr.readline()
            assert line, "hashike's stderr ended before it announced the forward"
            if "forwarded to remote address" in line:
                break
        with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
            assert conn.makefile("rb").readline() == b"+OK POP3 wisdom server ready\r\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        pop3.kill()
        pop3.wait(10)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest


POP3_SERVER = """
import asyncio
from hashike.cli.pop3 import start_pop3
async def main():
    pop3 = await start_pop3()
    print(pop3.port, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_local_port_in_use(start_sshd: StartSshd, tmp_path: Path) -> None:
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = hashike_argv(
            sshd, known, "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{port}:127.0.0.1:9"
        )
        result = run([*argv, "-i", str(sshd.client_key), f"{sshd.user}@127.0.0.1"])
    assert result.returncode == 255
    assert result.stderr.splitlines() == [
        f"bind [127.0.0.1]:{port}: Address already in use",
        f"channel_setup_fwd_listener_tcpip: cannot listen to port: {port}",
        "Could not request local forwarding.",
    ]


def test_privileged_local_port_without_the_capability(start_sshd: StartSshd, tmp_path: Path) -> None:
    """As an ordinary user would: no CAP_NET_BIND_SERVICE (files stay readable)."""
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    argv = hashike_argv(sshd, known, "-N", "-o", "ExitOnForwardFailure=yes", "-L", "110:127.0.0.1:110")
    argv += ["-i", str(sshd.client_key), f"{sshd.user}@127.0.0.1"]
    if os.geteuid() == 0:
        argv = ["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service", *argv]
    result = run(argv)
    assert result.returncode == 255
    assert result.stderr.splitlines() == [
        "bind [127.0.0.1]:110: Permission denied. Privileged ports can only be forwarded by root; "
        "use a port of 1024 or more, e.g. -L 40110:127.0.0.1:110.",
        "Could not request local forwarding.",
    ]


def test_background_after_authentication(start_sshd: StartSshd, tmp_path: Path) -> None:
    """-f: the command returns 0 once logged in and forwarding; the tunnel
    keeps working from the background process."""
    sshd = start_sshd()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    target = socket.create_server(("127.0.0.1", 0))
    target_port = target.getsockname()[1]
    local = free_port()
    argv = hashike_argv(sshd, known, "-f", "-N", "-L", f"{local}:127.0.0.1:{target_port}")
    argv += ["-i", str(sshd.client_key), f"{sshd.user}@127.0.0.1"]
    # As with ssh -f, the background process keeps stderr: wait for the
    # foreground process to exit, not for the end of its output.
    errors = tmp_path / "stderr"
    with errors.open("w") as err:
        parent = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        returncode = parent.wait(30)
    try:
        assert returncode == 0, errors.read_text()
        with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
            target.settimeout(10)
            accepted, _ = target.accept()
            with accepted:
                accepted.sendall(b"hello from the far side\n")
                assert conn.makefile("rb").readline() == b"hello from the far side\n"
    finally:
        target.close()
        # The background hashike is the only process listening on ``local``.
        subprocess.run(["fuser", "-k", "-TERM", f"{local}/tcp"], capture_output=True, timeout=10)


def test_too_many_authentication_failures_in_ssh_words(start_sshd: StartSshd, tmp_path: Path) -> None:
    """Past MaxAuthTries sshd sends DISCONNECT 2: our client says so as ssh does
    (packet.c), not a bare "Connection closed by remote host"."""
    sshd = start_sshd(MaxAuthTries=2)
    identities = []
    for n in range(4):  # none of them authorized
        write_private_key(generate_private_key(), tmp_path / f"id_{n}")
        identities += ["-i", str(tmp_path / f"id_{n}")]
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    result = run(hashike_argv(sshd, known, *identities, f"{sshd.user}@127.0.0.1", "true"))
    assert result.returncode == 255
    peer = f"127.0.0.1 port {sshd.port}"
    assert result.stderr.splitlines()[-2:] == [
        f"Received disconnect from {peer}:2: Too many authentication failures",
        f"Disconnected from {peer}",
    ], result.stderr
