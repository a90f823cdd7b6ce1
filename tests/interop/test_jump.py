"""Jump hosts and stdio forwarding against OpenSSH, both ways.

Each login has its own Host block in one ssh_config file (its port, its own
client key with IdentitiesOnly, one known_hosts file for all): a hop that
borrowed the destination's block would offer the wrong key, or check its
host key under the wrong name, and fail. hashiked and sshd accept different
client keys for that reason.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.cli.pop3 import GREETING, start_pop3
from tests.interop.test_forward_openssh_to_hashiked import (
    DEADLINE,
    BackgroundLoop,
    Hashiked,
    keygen,
    public_line,
    start_hashiked,
)

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient, SshdServer, StartSshd

HASHIKE = [sys.executable, "-m", "hashike.cli.client"]


@dataclass
class Hosts:
    config: Path  # Host blocks "hashiked" and "sshd"
    known_hosts: Path
    hashiked: Hashiked
    sshd: SshdServer


def host_block(name: str, port: int, key: Path, known_hosts: Path) -> str:
    return (
        f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n  IdentityAgent none\n"
    )


@pytest.fixture
def hosts(tmp_path: Path, start_sshd: StartSshd) -> Iterator[Hosts]:
    sshd = start_sshd()
    client_key = keygen(tmp_path / "id_hashiked")  # not the key sshd takes
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(public_line(client_key) + "\n")
    daemon = start_hashiked(tmp_path / "hashiked", keygen(tmp_path / "host_ed25519"), authorized)
    known = tmp_path / "known_hosts"
    known.write_text(daemon.known_hosts_line() + "\n" + sshd.known_hosts_lines())
    config = tmp_path / "config"
    config.write_text(
        host_block("hashiked", daemon.port, client_key, known)
        + host_block("sshd", sshd.port, sshd.client_key, known)
    )
    try:
        yield Hosts(config, known, daemon, sshd)
    finally:
        daemon.assert_healthy()
        daemon.stop()


def run(argv: Sequence[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True, text=True, timeout=2 * DEADLINE,
    )  # fmt: skip


def test_two_hops_mixing_hashiked_and_sshd(hosts: Hosts) -> None:
    # hashike -> hashiked -> sshd -> hashiked, each a login of its own.
    result = run([*HASHIKE, "-F", str(hosts.config), "-J", "hashiked,sshd", "hashiked", "echo", "through"])
    assert (result.returncode, result.stdout) == (0, "through\n"), result.stderr
    # And the other way round: hashike -> sshd -> hashiked -> sshd.
    result = run([*HASHIKE, "-F", str(hosts.config), "-J", "sshd,hashiked", "sshd", "echo", "back"])
    assert (result.returncode, result.stdout) == (0, "back\n"), result.stderr


def test_proxy_jump_from_the_config_file(hosts: Hosts, tmp_path: Path) -> None:
    config = tmp_path / "config2"
    config.write_text(
        "Host via\n  ProxyJump hashiked\n" + hosts.config.read_text().replace("Host sshd", "Host sshd via")
    )
    result = run([*HASHIKE, "-F", str(config), "via", "echo", "configured"])
    assert (result.returncode, result.stdout) == (0, "configured\n"), result.stderr


def test_openssh_ssh_jumps_through_hashiked(hosts: Hosts, ssh_client: SshClient) -> None:
    ssh = ssh_client.binary
    result = run([ssh, "-F", str(hosts.config), "-J", "hashiked", "sshd", "echo", "openssh"])
    assert (result.returncode, result.stdout) == (0, "openssh\n"), result.stderr


def test_a_wrong_host_key_at_the_middle_hop_is_refused(hosts: Hosts) -> None:
    # sshd's port listed with hashiked's key: the middle hop is an impostor.
    algorithm, blob = public_line(hosts.hashiked.host_key).split()[:2]
    hosts.known_hosts.write_text(
        hosts.hashiked.known_hosts_line() + f"\n[127.0.0.1]:{hosts.sshd.port} {algorithm} {blob}\n"
    )
    result = run([*HASHIKE, "-F", str(hosts.config), "-J", "hashiked,sshd", "hashiked", "echo", "no"])
    assert result.returncode == 255
    assert "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @" in result.stderr
    assert (
        f"Host key for [127.0.0.1]:{hosts.sshd.port} has changed and you have requested strict checking.\n"
        in (result.stderr)
    )
    assert result.stderr.endswith("Host key verification failed.\n")
    assert result.stdout == ""


@pytest.fixture(scope="module")
def pop3_port() -> Iterator[int]:
    loop = BackgroundLoop()
    try:
        yield loop.run(start_pop3()).port
    finally:
        loop.close()


@pytest.mark.parametrize("server", ["hashiked", "sshd"])
def test_stdio_forward_carries_the_pop_dialogue(hosts: Hosts, pop3_port: int, server: str) -> None:
    result = run(
        [*HASHIKE, "-F", str(hosts.config), "-W", f"127.0.0.1:{pop3_port}", server], input="QUIT\r\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [GREETING.decode(), "+OK bye"]


def test_stdio_forward_to_a_refused_port_fails_as_ssh_does(hosts: Hosts) -> None:
    result = run([*HASHIKE, "-F", str(hosts.config), "-W", "127.0.0.1:1", "hashiked"])
    assert result.returncode == 255
    assert result.stderr.endswith("stdio forwarding failed\n"), result.stderr
    assert "channel 0: open failed: connect failed: " in result.stderr


def test_proxy_command_with_hashike_w(hosts: Hosts, ssh_client: SshClient) -> None:
    # ProxyCommand's %h %p are the destination's HostName and Port.
    relay = f"{' '.join(HASHIKE)} -F {hosts.config} -W %h:%p hashiked"
    result = run(
        [*HASHIKE, "-F", str(hosts.config), "-o", f"ProxyCommand={relay}", "sshd", "echo", "proxied"]
    )
    assert (result.returncode, result.stdout) == (0, "proxied\n"), result.stderr
    # OpenSSH's ssh takes hashike -W as its ProxyCommand too.
    ssh = ssh_client.binary
    result = run([ssh, "-F", str(hosts.config), "-o", f"ProxyCommand={relay}", "sshd", "echo", "ssh"])
    assert (result.returncode, result.stdout) == (0, "ssh\n"), result.stderr
