"""Host certificates both ways, made by ssh-keygen -s -h: hashike trusts
sshd's HostCertificate through a known_hosts @cert-authority line, and
OpenSSH's ssh trusts hashiked's (StrictHostKeyChecking=yes, nothing in
known_hosts but the CA). A certificate that does not name the host is
refused in ssh's words, and the plain key inside it is checked instead."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.interop.test_auth_openssh_to_hashiked import USER, StartHashiked, start_hashiked, user_keys
from tests.interop.test_certs_hashike_to_sshd import keygen
from tests.interop.test_cli_client import hashike_argv, run

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient, SshdServer, StartSshd

__all__ = ["start_hashiked", "user_keys"]  # fixtures used here
pytestmark = pytest.mark.interop


def host_certify(ca: Path, pub: Path, principals: str, *args: str) -> Path:
    """``ssh-keygen -s ca -h -I id -n principals key.pub``: the -cert.pub path."""
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", "host-id", "-n", principals, *args, str(pub)],
        check=True, timeout=60, capture_output=True,
    )  # fmt: skip
    return pub.with_name(pub.name.removesuffix(".pub") + "-cert.pub")


def ca_line(ca: Path, hosts: str = "*") -> str:
    return f"@cert-authority {hosts} {Path(f'{ca}.pub').read_text().strip()}\n"


def sshd_with_certificate(
    start_sshd: StartSshd, tmp_path: Path, principals: str, *args: str
) -> tuple[Path, SshdServer]:
    """An ed25519 sshd offering a certificate by a new CA; returns the CA."""
    ca = keygen(tmp_path / "ca")
    host = tmp_path / "host"
    host.mkdir()
    key = keygen(host / "ssh_host_ed25519_key")
    cert = host_certify(ca, Path(f"{key}.pub"), principals, *args)
    return ca, start_sshd(f"HostKey {key}", f"HostCertificate {cert}", key_types=())


def test_hashike_trusts_sshds_host_certificate(start_sshd: StartSshd, tmp_path: Path) -> None:
    ca, sshd = sshd_with_certificate(start_sshd, tmp_path, "127.0.0.1,localhost")
    known = tmp_path / "known_hosts"
    known.write_text(ca_line(ca, "[127.0.0.1]:*"))
    argv = hashike_argv(sshd, known, "-o", "StrictHostKeyChecking=yes", "-i", str(sshd.client_key), "-v")
    result = run([*argv, f"{sshd.user}@127.0.0.1", "echo", "certified"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "certified\n"
    assert "host key: ssh-ed25519-cert-v01@openssh.com" in result.stderr
    assert known.read_text() == ca_line(ca, "[127.0.0.1]:*")  # nothing added


def test_hashike_refuses_a_certificate_for_another_host(start_sshd: StartSshd, tmp_path: Path) -> None:
    ca, sshd = sshd_with_certificate(start_sshd, tmp_path, "elsewhere.example")
    known = tmp_path / "known_hosts"
    known.write_text(ca_line(ca))
    argv = hashike_argv(sshd, known, "-o", "StrictHostKeyChecking=yes", "-i", str(sshd.client_key))
    result = run([*argv, f"{sshd.user}@127.0.0.1", "true"])
    assert result.returncode == 255
    # ssh's words, then its fallback to the plain key, which nothing names.
    assert "Certificate invalid: name is not a listed principal\n" in result.stderr
    assert "No ED25519 host key is known for [127.0.0.1]:" in result.stderr
    assert result.stderr.endswith("Host key verification failed.\n"), result.stderr


def test_hashike_refuses_an_expired_host_certificate(start_sshd: StartSshd, tmp_path: Path) -> None:
    ca, sshd = sshd_with_certificate(start_sshd, tmp_path, "127.0.0.1", "-V", "20000101:20010101")
    known = tmp_path / "known_hosts"
    known.write_text(ca_line(ca))
    argv = hashike_argv(sshd, known, "-o", "StrictHostKeyChecking=yes", "-i", str(sshd.client_key))
    result = run([*argv, f"{sshd.user}@127.0.0.1", "true"])
    assert result.returncode == 255
    assert "Certificate invalid: expired\n" in result.stderr


def test_hashike_refuses_a_revoked_ca(start_sshd: StartSshd, tmp_path: Path) -> None:
    ca, sshd = sshd_with_certificate(start_sshd, tmp_path, "127.0.0.1")
    known = tmp_path / "known_hosts"
    revoked = f"@revoked * {Path(f'{ca}.pub').read_text().strip()}\n"
    known.write_text(ca_line(ca) + revoked)
    argv = hashike_argv(sshd, known, "-o", "StrictHostKeyChecking=yes", "-i", str(sshd.client_key))
    result = run([*argv, f"{sshd.user}@127.0.0.1", "true"])
    assert result.returncode == 255
    assert "@       WARNING: REVOKED HOST KEY DETECTED!               @" in result.stderr
    assert "The ED25519-CERT host key for [127.0.0.1]:" in result.stderr


def test_openssh_trusts_hashikeds_host_certificate(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path], tmp_path: Path
) -> None:
    ca = keygen(tmp_path / "ca")
    host_key = tmp_path / "host_ed25519"  # the fixture's host key
    cert = host_certify(ca, Path(f"{host_key}.pub"), "127.0.0.1,localhost")
    server = start_hashiked(f"HostCertificate={cert}")
    known = tmp_path / "ssh_known_hosts"
    known.write_text(ca_line(ca, "[127.0.0.1]:*"))
    options = {"StrictHostKeyChecking": "yes", "UserKnownHostsFile": str(known)}
    result = ssh_client.run(
        server.port,
        "echo",
        "certified",
        user=USER,
        identity=user_keys["ed25519"],
        options=options,
        args=["-v"],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "certified\n"
    assert "Server host certificate: ssh-ed25519-cert-v01@openssh.com" in result.stderr
    assert (
        "Host '[127.0.0.1]:" in result.stderr
        and "is known and matches the ED25519-CERT host certificate" in (result.stderr)
    )


def test_openssh_refuses_hashikeds_certificate_for_another_name(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path], tmp_path: Path
) -> None:
    ca = keygen(tmp_path / "ca")
    cert = host_certify(ca, Path(f"{tmp_path / 'host_ed25519'}.pub"), "elsewhere.example")
    server = start_hashiked(f"HostCertificate={cert}")
    known = tmp_path / "ssh_known_hosts"
    known.write_text(ca_line(ca))
    options = {"StrictHostKeyChecking": "yes", "UserKnownHostsFile": str(known)}
    result = ssh_client.run(server.port, "true", user=USER, identity=user_keys["ed25519"], options=options)
    assert result.returncode == 255
    assert "Certificate invalid: name is not a listed principal" in result.stderr
