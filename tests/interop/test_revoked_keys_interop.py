"""hashiked's RevokedKeys against OpenSSH's ssh: a key revoked by a KRL that
``ssh-keygen -k`` made is refused with sshd's log line, as are certificates
revoked by serial and by key id, and keys in a plain list; the others still
log in."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.keys.keypair import load_public_key_file
from tests.interop.test_auth_openssh_to_hashiked import USER, StartHashiked, start_hashiked, user_keys
from tests.interop.test_certs_hashike_to_sshd import certify, keygen
from tests.interop.test_certs_openssh_to_hashiked import logged, run

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

__all__ = ["start_hashiked", "user_keys"]  # fixtures used here
pytestmark = pytest.mark.interop


def make_krl(path: Path, spec: str, ca: Path | None = None) -> Path:
    """``ssh-keygen -k -f path [-s ca.pub] spec``."""
    spec_file = path.with_suffix(".spec")
    spec_file.write_text(spec)
    signer = ["-s", f"{ca}.pub"] if ca is not None else []
    subprocess.run(
        ["ssh-keygen", "-q", "-k", "-f", str(path), *signer, str(spec_file)], check=True, timeout=60
    )
    return path


def test_a_key_revoked_by_a_krl_is_refused(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path], tmp_path: Path
) -> None:
    revoked = user_keys["ed25519"]
    krl = make_krl(tmp_path / "revoked.krl", f"key: {Path(f'{revoked}.pub').read_text()}")
    server = start_hashiked(f"RevokedKeys={krl}")
    assert "Permission denied (publickey)" in run(ssh_client, server, revoked, "true")
    fingerprint = load_public_key_file(f"{revoked}.pub").fingerprint()
    logged(server, f"Authentication key ED25519 {fingerprint} revoked by file {krl}")
    assert "rc=0\nstill" in run(ssh_client, server, user_keys["ecdsa"], "echo", "still")


@pytest.mark.parametrize("spec", ["serial: 5-9\n", "id: test-id\n"])
def test_certificates_revoked_by_serial_or_key_id(
    start_hashiked: StartHashiked, ssh_client: SshClient, tmp_path: Path, spec: str
) -> None:
    ca = keygen(tmp_path / "ca")
    user = keygen(tmp_path / "id")
    cert = load_public_key_file(certify(ca, Path(f"{user}.pub"), USER))  # serial 7, id test-id
    krl = make_krl(tmp_path / "revoked.krl", spec, ca)
    server = start_hashiked(f"TrustedUserCAKeys={ca}.pub", f"RevokedKeys={krl}")
    assert "Permission denied (publickey)" in run(ssh_client, server, user, "true")
    logged(server, f"Authentication key ED25519-CERT {cert.fingerprint()} revoked by file {krl}")
    assert "Accepted certificate" not in server.log_text()


def test_a_plain_key_list(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path], tmp_path: Path
) -> None:
    listed = tmp_path / "revoked_keys"
    listed.write_text(Path(f"{user_keys['rsa']}.pub").read_text())
    server = start_hashiked(f"RevokedKeys={listed}")
    assert "Permission denied (publickey)" in run(ssh_client, server, user_keys["rsa"], "true")
    logged(server, f"revoked by file {listed}")
    assert "rc=0\nok" in run(ssh_client, server, user_keys["ed25519"], "echo", "ok")


def test_an_unreadable_revocation_file_refuses_everyone(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-krl"
    server = start_hashiked(f"RevokedKeys={missing}")
    assert "Permission denied (publickey)" in run(ssh_client, server, user_keys["ed25519"], "true")
    logged(server, f"in revoked keys file {missing}: No such file or directory")
