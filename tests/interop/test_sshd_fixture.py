"""The interop fixtures themselves: a real sshd starts, serves its host keys, accepts
the client key, takes extra config lines, and is gone after teardown."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient, SshdServer, StartSshd

pytestmark = pytest.mark.interop

CONFTEST = Path(__file__).with_name("conftest.py")


def read_banner(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as s:
        data = b""
        while b"\n" not in data:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    return data


def keyscan(
    paths: dict[str, str], server: SshdServer, types: str = "ed25519,ecdsa,rsa"
) -> set[tuple[str, str]]:
    """(algorithm, base64 blob) of every key ssh-keyscan reads from the server."""
    out = subprocess.run(
        [paths["ssh-keyscan"], "-T", "10", "-t", types, "-p", str(server.port), server.host],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    keys = set()
    for line in out.stdout.splitlines():
        if line and not line.startswith("#"):
            name, alg, blob = line.split()[:3]
            assert name == f"[{server.host}]:{server.port}"
            keys.add((alg, blob))
    return keys


def port_is_closed(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sshd_answers_with_openssh_banner(sshd_server: SshdServer) -> None:
    assert sshd_server.host == "127.0.0.1"
    assert sshd_server.process.poll() is None
    banner = read_banner(sshd_server.host, sshd_server.port)
    assert banner.startswith(b"SSH-2.0-OpenSSH_")
    assert banner.endswith(b"\r\n")


def test_keyscan_returns_the_fixture_host_keys(
    sshd_server: SshdServer, openssh_paths: dict[str, str]
) -> None:
    assert set(sshd_server.host_keys) == {"ed25519", "ecdsa", "rsa"}
    expected = {sshd_server.public_key(t) for t in sshd_server.host_keys}
    assert {alg for alg, _ in expected} == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}
    assert keyscan(openssh_paths, sshd_server) == expected


def test_known_hosts_lines_match_keyscan(sshd_server: SshdServer, openssh_paths: dict[str, str]) -> None:
    scanned = keyscan(openssh_paths, sshd_server)
    lines = sshd_server.known_hosts_lines().splitlines()
    assert len(lines) == 3
    for line in lines:
        name, alg, blob = line.split()
        assert name == f"[127.0.0.1]:{sshd_server.port}"
        assert (alg, blob) in scanned
    assert sshd_server.known_hosts_line("rsa") in lines


def test_host_key_files_and_log(sshd_server: SshdServer) -> None:
    for path in sshd_server.host_keys.values():
        assert path.is_file()
        assert Path(f"{path}.pub").is_file()
        assert path.parent == sshd_server.directory
    read_banner(sshd_server.host, sshd_server.port)
    log = sshd_server.log_text()
    assert f"Server listening on 127.0.0.1 port {sshd_server.port}" in log
    assert "debug3:" in log  # LogLevel DEBUG3


def test_ssh_client_logs_in_with_the_client_key(sshd_server: SshdServer, ssh_client: SshClient) -> None:
    # Also checks the known_hosts line: strict checking against it must pass.
    known_hosts = sshd_server.directory / "known_hosts"
    known_hosts.write_text(sshd_server.known_hosts_lines())
    result = ssh_client.run(
        sshd_server.port,
        "echo",
        "hello from sshd",
        user=sshd_server.user,
        identity=sshd_server.client_key,
        options={"StrictHostKeyChecking": "yes", "UserKnownHostsFile": str(known_hosts)},
    )
    assert result.returncode == 0, result.stderr + sshd_server.log_text()[-3000:]
    assert result.stdout == "hello from sshd\n"


def test_ssh_client_argv_shape(ssh_client: SshClient) -> None:
    argv = ssh_client.argv(2222, "true", user="u", options={"Ciphers": "aes128-ctr"}, args=["-N"])
    assert argv[:3] == [ssh_client.binary, "-F", "/dev/null"]
    assert argv[3:5] == ["-o", "Ciphers=aes128-ctr"]
    for option in ("BatchMode=yes", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"):
        assert option in argv
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[-3:] == ["-N", "u@127.0.0.1", "true"]


def test_extra_config_lines_take_effect(start_sshd: StartSshd, ssh_client: SshClient) -> None:
    server = start_sshd("Ciphers aes128-ctr", KexAlgorithms="curve25519-sha256")
    assert server.config.read_text().splitlines()[:2] == [
        "Ciphers aes128-ctr",
        "KexAlgorithms curve25519-sha256",
    ]

    def login(**options: str) -> subprocess.CompletedProcess[str]:
        return ssh_client.run(
            server.port, "true", user=server.user, identity=server.client_key, options=options
        )

    ok = login(Ciphers="aes128-ctr")
    assert ok.returncode == 0, ok.stderr
    refused = login(Ciphers="aes256-ctr")
    assert refused.returncode == 255
    assert "no matching cipher" in refused.stderr
    refused = login(KexAlgorithms="ecdh-sha2-nistp256")
    assert "no matching key exchange method" in refused.stderr


def test_caller_lines_win_over_fixture_defaults(start_sshd: StartSshd) -> None:
    server = start_sshd("LogLevel INFO")
    read_banner(server.host, server.port)
    assert "debug3:" not in server.log_text()


def test_key_types_selects_host_keys(start_sshd: StartSshd, openssh_paths: dict[str, str]) -> None:
    server = start_sshd(key_types=("rsa",))
    assert set(server.host_keys) == {"rsa"}
    assert keyscan(openssh_paths, server) == {server.public_key("rsa")}


def test_several_servers_at_once(start_sshd: StartSshd) -> None:
    a, b = start_sshd(), start_sshd()
    assert a.port != b.port
    assert read_banner(a.host, a.port).startswith(b"SSH-2.0-OpenSSH_")
    assert read_banner(b.host, b.port).startswith(b"SSH-2.0-OpenSSH_")


def test_bad_config_line_is_reported(start_sshd: StartSshd) -> None:
    with pytest.raises(RuntimeError, match="sshd rejected its config"):
        start_sshd("NoSuchOption yes")


def test_port_and_address_are_the_fixtures(start_sshd: StartSshd) -> None:
    for line in ("Port 2222", "ListenAddress=0.0.0.0"):
        with pytest.raises(ValueError, match="chooses the address and port"):
            start_sshd(line)
    with pytest.raises(ValueError, match="chooses the address and port"):
        start_sshd(Port=2222)


def test_stop_closes_port_and_ends_connections(start_sshd: StartSshd) -> None:
    server = start_sshd()
    # An open connection has a per-connection sshd child; stop() must end it too.
    with socket.create_connection((server.host, server.port), timeout=5) as conn:
        conn.recv(256)
        server.stop()
        assert server.process.poll() is not None
        assert port_is_closed(server.host, server.port)
        conn.settimeout(5)
        try:
            data = conn.recv(4096)
        except ConnectionResetError:
            data = b""
        assert data == b""
    server.stop()  # idempotent


def test_interop_mark_is_applied(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("interop") is not None


def test_openssh_kex_parametrization(openssh_kex: str) -> None:
    # Parametrized by conftest's pytest_generate_tests from `ssh -Q kex`.
    assert openssh_kex
    assert " " not in openssh_kex


def test_openssh_cipher_parametrization(openssh_cipher: str, ssh_client: SshClient) -> None:
    listed = subprocess.run([ssh_client.binary, "-Q", "cipher"], capture_output=True, text=True, timeout=10)
    assert openssh_cipher in listed.stdout.split()


# --- the fixture's lifecycle, seen from outside a pytest run ---------------------------

INNER_TEST = """
import os
from pathlib import Path

def test_record(sshd_server):
    Path(os.environ["RECORD"]).write_text(f"{sshd_server.port} {sshd_server.process.pid}")

def test_version():
    from conftest import openssh_version
    assert openssh_version() >= (7, 0)
"""


def run_inner_pytest(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    project = tmp_path / "inner"
    project.mkdir()
    shutil.copy(CONFTEST, project / "conftest.py")
    (project / "test_inner.py").write_text(INNER_TEST)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",
            "-o",
            "markers=interop",
            ".",
        ],
        cwd=project,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_teardown_stops_sshd(tmp_path: Path) -> None:
    record = tmp_path / "record"
    result = run_inner_pytest(tmp_path, {"RECORD": str(record)})
    assert result.returncode == 0, result.stdout + result.stderr
    port, pid = (int(x) for x in record.read_text().split())
    assert port_is_closed("127.0.0.1", port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize(("required", "outcome"), [("", "2 skipped"), ("1", "2 errors")])
def test_missing_openssh_skips_or_fails(tmp_path: Path, required: str, outcome: str) -> None:
    empty = tmp_path / "no-openssh"
    empty.mkdir()
    env = {"RECORD": str(tmp_path / "record"), "HASHIKE_OPENSSH_PATH": str(empty)}
    result = run_inner_pytest(tmp_path, {**env, "HASHIKE_REQUIRE_INTEROP": required})
    assert outcome in result.stdout, result.stdout
    assert "OpenSSH programs not found" in result.stdout
    assert result.returncode == (1 if required else 0)
    assert not (tmp_path / "record").exists()
