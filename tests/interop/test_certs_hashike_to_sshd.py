"""hashike's client logging in to OpenSSH's sshd with user certificates that
OpenSSH's ssh-keygen -s made: each key type, next to the identity file, from
CertificateFile, and through ssh-agent holding the certificate."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.aio.agent import AgentClient
from hashike.aio.client import connect
from hashike.aio.client_auth import AuthSettings, Identity, certificate_identities, file_identity
from hashike.proto.certs import Certificate
from tests.interop.test_auth_hashike_to_sshd import host_key_check, no_passphrase
from tests.interop.test_cli_client import hashike_argv, run

if TYPE_CHECKING:
    from tests.interop.conftest import StartSshd

KEYGEN = {"ed25519": ["-t", "ed25519"], "ecdsa": ["-t", "ecdsa"], "rsa": ["-t", "rsa", "-b", "2048"]}


def keygen(path: Path, key_type: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", *KEYGEN[key_type], "-N", "", "-f", str(path)], check=True, timeout=60)
    return path


def certify(ca: Path, pub: Path, principals: str, *args: str) -> Path:
    """``ssh-keygen -s ca -I id -n principals -V +1h [args] key.pub``: the -cert.pub path."""
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", "test-id", "-n", principals, "-V", "+1h", "-z", "7", *args,
         str(pub)],
        check=True, timeout=60, capture_output=True,
    )  # fmt: skip
    return pub.with_name(pub.name.removesuffix(".pub") + "-cert.pub")


@pytest.mark.parametrize("key_type", sorted(KEYGEN))
async def test_user_certificate_next_to_the_identity_file(
    start_sshd: StartSshd, tmp_path: Path, key_type: str
) -> None:
    ca = keygen(tmp_path / "ca")
    user = keygen(tmp_path / "id", key_type)
    sshd = start_sshd(f"TrustedUserCAKeys {ca}.pub")
    cert = certify(ca, Path(f"{user}.pub"), sshd.user)
    identity = await file_identity(str(user), no_passphrase())
    assert identity is not None
    identities = certificate_identities(identity, [str(cert)])
    assert len(identities) == 1 and isinstance(identities[0].public_key, Certificate)
    auth = AuthSettings(username=sshd.user, identities=identities, host_label=sshd.host)
    async with await connect(sshd.host, sshd.port, check_host_key=host_key_check(sshd), auth=auth) as client:
        assert client.auth_method == "publickey"
    assert "ID test-id (serial 7) CA ED25519" in sshd.log_text()


async def test_certificate_of_another_key_is_not_offered(tmp_path: Path) -> None:
    ca = keygen(tmp_path / "ca")
    user, other = keygen(tmp_path / "id"), keygen(tmp_path / "other")
    cert = certify(ca, Path(f"{other}.pub"), "alice")
    identity = await file_identity(str(user), no_passphrase())
    assert identity is not None
    assert certificate_identities(identity, [str(cert), str(tmp_path / "missing-cert.pub")]) == []


@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
async def test_user_certificate_through_openssh_agent(
    start_sshd: StartSshd, tmp_path: Path, ssh_agent: str, key_type: str
) -> None:
    ca = keygen(tmp_path / "ca")
    user = keygen(tmp_path / "agent_key", key_type)
    sshd = start_sshd(f"TrustedUserCAKeys {ca}.pub")
    certify(ca, Path(f"{user}.pub"), sshd.user)
    env = {**os.environ, "SSH_AUTH_SOCK": ssh_agent}
    # ssh-add loads agent_key-cert.pub beside the key: the agent holds both.
    subprocess.run(["ssh-add", str(user)], env=env, check=True, capture_output=True, timeout=30)
    user.unlink()
    async with await AgentClient.connect(ssh_agent) as agent:
        held = await agent.identities()
        certs = [Identity(key, f"agent: {c}") for key, c in held if isinstance(key, Certificate)]
        assert len(certs) == 1
        auth = AuthSettings(username=sshd.user, identities=certs, agent=agent)
        async with await connect(
            sshd.host, sshd.port, check_host_key=host_key_check(sshd), auth=auth
        ) as client:
            assert client.auth_method == "publickey"
    assert "ID test-id (serial 7) CA ED25519" in sshd.log_text()


@pytest.mark.parametrize("where", ["beside", "CertificateFile"])
def test_cli_offers_the_certificate(start_sshd: StartSshd, tmp_path: Path, where: str) -> None:
    ca = keygen(tmp_path / "ca")
    user = keygen(tmp_path / "id")
    sshd = start_sshd(f"TrustedUserCAKeys {ca}.pub")
    cert = certify(ca, Path(f"{user}.pub"), sshd.user)
    extra: list[str] = []
    if where == "CertificateFile":
        moved = tmp_path / "elsewhere.pub"
        cert.rename(moved)
        extra = ["-o", f"CertificateFile={moved}"]
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_lines())
    result = run(hashike_argv(sshd, known, *extra, "-i", str(user), f"{sshd.user}@127.0.0.1", "echo", "hi"))
    assert (result.returncode, result.stdout) == (0, "hi\n"), result.stderr
    assert "ID test-id (serial 7) CA ED25519" in sshd.log_text()
