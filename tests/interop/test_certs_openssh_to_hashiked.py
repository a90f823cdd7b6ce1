"""OpenSSH's ssh logging in to hashiked with user certificates made by
ssh-keygen -s: TrustedUserCAKeys, AuthorizedPrincipalsFile, cert-authority
lines; each refusal with the log line sshd writes for it; the certificate's
options (force-command, source-address, permit-port-forwarding)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.proto.certs import Certificate
from tests.helpers import eventually_sync
from tests.interop.test_auth_openssh_to_hashiked import (
    USER,
    Hashiked,
    StartHashiked,
    start_hashiked,
    user_keys,
)
from tests.interop.test_certs_hashike_to_sshd import certify, keygen

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

__all__ = ["start_hashiked", "user_keys"]  # fixtures used here
pytestmark = pytest.mark.interop


def run(ssh: SshClient, server: Hashiked, identity: Path, *command: str, args: tuple[str, ...] = ()) -> str:
    """ssh with the certificate beside ``identity`` (ssh loads ``-cert.pub`` itself)."""
    result = ssh.run(server.port, *command, user=USER, identity=identity, args=args, timeout=30)
    return f"rc={result.returncode}\n{result.stdout}{result.stderr}"


def logged(server: Hashiked, text: str) -> None:
    eventually_sync(lambda: text in server.log_text(), timeout=10, what=lambda: server.log_text())


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    return keygen(tmp_path / "ca")


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa", "rsa"])
def test_trusted_user_ca_each_key_type(
    start_hashiked: StartHashiked, ssh_client: SshClient, tmp_path: Path, ca: Path, key_type: str
) -> None:
    user = keygen(tmp_path / "id", key_type)
    cert = Certificate.from_openssh_line(certify(ca, Path(f"{user}.pub"), USER).read_text())
    server = start_hashiked(f"TrustedUserCAKeys={ca}.pub")
    assert "rc=0\nhello" in run(ssh_client, server, user, "echo", "hello")
    kind = {"ed25519": "ED25519", "ecdsa": "ECDSA", "rsa": "RSA"}[key_type]
    logged(
        server,
        f"Accepted publickey for {USER} from 127.0.0.1 port ",
    )
    ca_print = cert.signature_key.fingerprint()
    logged(server, f"ssh2: {kind}-CERT {cert.fingerprint()} ID test-id (serial 7) CA ED25519 {ca_print}")


def test_authorized_principals_file(
    start_hashiked: StartHashiked, ssh_client: SshClient, tmp_path: Path, ca: Path
) -> None:
    user = keygen(tmp_path / "id")
    certify(ca, Path(f"{user}.pub"), "deploy,ops")
    (tmp_path / f"principals-{USER}").write_text("# who may log in\nops\n")
    server = start_hashiked(
        f"TrustedUserCAKeys={ca}.pub", f"AuthorizedPrincipalsFile={tmp_path}/principals-%u"
    )
    assert "rc=0\nok" in run(ssh_client, server, user, "echo", "ok")


def test_principals_file_line_options(
    start_hashiked: StartHashiked, ssh_client: SshClient, tmp_path: Path, ca: Path
) -> None:
    """A principals line's options apply: ``from=`` refuses ssh from 127.0.0.1
    for one principal, ``command=`` forces the command for another."""
    user = keygen(tmp_path / "id")
    certify(ca, Path(f"{user}.pub"), "ops")
    principals = tmp_path / f"principals-{USER}"
    principals.write_text('from="127.0.0.2" ops\n')
    server = start_hashiked(
        f"TrustedUserCAKeys={ca}.pub", f"AuthorizedPrincipalsFile={tmp_path}/principals-%u"
    )
    assert "Permission denied (publickey)" in run(ssh_client, server, user, "true")
    refused = f"{principals}:1: Authentication tried for {USER} with correct key but not from a permitted"
    logged(server, refused)
    principals.write_text('command="echo forced" ops\n')
    assert "rc=0\nforced" in run(ssh_client, server, user, "echo", "mine")


def test_cert_authority_line_with_principals(
    start_hashiked: StartHashiked, ssh_client: SshClient, tmp_path: Path, ca: Path
) -> None:
    user = keygen(tmp_path / "id")
    certify(ca, Path(f"{user}.pub"), "web")
    server = start_hashiked()
    with (tmp_path / "authorized_keys").open("a") as keys:  # the fixture's AuthorizedKeysFile
        keys.write(f'cert-authority,principals="web,db" {Path(f"{ca}.pub").read_text()}')
    assert "rc=0\nok" in run(ssh_client, server, user, "echo", "ok")
    logged(server, 'Accepted certificate ID "test-id" (serial 7) signed by ED25519 CA')


@pytest.mark.parametrize(
    ("principals", "validity", "expected"),
    [
        (USER, "-1h:-1m", "Certificate invalid: expired"),
        (USER, "+1h:+2h", "Certificate invalid: not yet valid"),
        ("someone-else", "+0:+1h", "Certificate invalid: name is not a listed principal"),
    ],
)
def test_refusals(
    start_hashiked: StartHashiked,
    ssh_client: SshClient,
    tmp_path: Path,
    ca: Path,
    principals: str,
    validity: str,
    expected: str,
) -> None:
    user = keygen(tmp_path / "id")
    certify(ca, Path(f"{user}.pub"), principals, "-V", validity)
    server = start_hashiked(f"TrustedUserCAKeys={ca}.pub")
    assert "Permission denied (publickey)" in run(ssh_client, server, user, "true")
    logged(server, expected)


def test_ca_not_trusted(
    start_hashiked: StartHashiked, ssh_client: SshClient, tmp_path: Path, ca: Path
) -> None:
    user, other_ca = keygen(tmp_path / "id"), keygen(tmp_path / "other-ca")
    cert = Certificate.from_openssh_line(certify(other_ca, Path(f"{user}.pub"), USER).read_text())
    server = start_hashiked(f"TrustedUserCAKeys={ca}.pub")
    assert "Permission denied (publickey)" in run(ssh_client, server, user, "true", args=("-v",))
    # Like sshd, nothing but the key shows: no CA trusts it, no line holds it.
    assert "Accepted" not in server.log_text()
    assert cert.signature_key.fingerprint() not in server.log_text()


def test_source_address_mismatch(
    start_hashiked: StartHashiked, ssh_client: SshClient, tmp_path: Path, ca: Path
) -> None:
    user = keygen(tmp_path / "id")
    certify(ca, Path(f"{user}.pub"), USER, "-O", "source-address=10.1.2.0/24")
    server = start_hashiked(f"TrustedUserCAKeys={ca}.pub")
    assert "Permission denied (publickey)" in run(ssh_client, server, user, "true")
    logged(
        server,
        f"cert: Authentication tried for {USER} with valid certificate"
        " but not from a permitted source address (127.0.0.1).",
    )


def test_force_command(
    start_hashiked: StartHashiked, ssh_client: SshClient, tmp_path: Path, ca: Path
) -> None:
    user = keygen(tmp_path / "id")
    certify(ca, Path(f"{user}.pub"), USER, "-O", "force-command=echo forced")
    server = start_hashiked(f"TrustedUserCAKeys={ca}.pub")
    output = run(ssh_client, server, user, "echo", "asked")
    assert "rc=0\nforced" in output and "asked" not in output


def test_no_port_forwarding_without_the_extension(
    start_hashiked: StartHashiked, ssh_client: SshClient, tmp_path: Path, ca: Path
) -> None:
    user = keygen(tmp_path / "id")
    certify(ca, Path(f"{user}.pub"), USER, "-O", "clear", "-O", "permit-pty")
    server = start_hashiked(f"TrustedUserCAKeys={ca}.pub")
    # The session works; -R is refused (ExitOnForwardFailure makes ssh say so).
    assert "rc=0\nstill" in run(ssh_client, server, user, "echo", "still")
    refused = run(
        ssh_client, server, user, "true", args=("-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9")
    )
    assert "remote port forwarding failed" in refused
    # -L's channels (here -W's direct-tcpip) are refused by the same option.
    local = run(ssh_client, server, user, args=("-W", "127.0.0.1:9"))
    assert "administratively prohibited" in local, local


def test_unknown_critical_option_is_refused(
    start_hashiked: StartHashiked, ssh_client: SshClient, tmp_path: Path, ca: Path
) -> None:
    user = keygen(tmp_path / "id")
    certify(ca, Path(f"{user}.pub"), USER, "-O", "critical:frobnicate@example.com=yes")
    server = start_hashiked(f"TrustedUserCAKeys={ca}.pub")
    assert "Permission denied (publickey)" in run(ssh_client, server, user, "true")
    logged(server, 'Certificate critical option "frobnicate@example.com" is not supported')
