"""hashike-keygen: keys OpenSSH reads, fingerprints ssh-keygen agrees with, bcrypt lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest


def keygen(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hashike.cli.keygen", *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@pytest.mark.parametrize(("key_type", "bits"), [("ed25519", None), ("ecdsa", "384"), ("rsa", "3072")])
def test_generated_keys_are_read_by_ssh_keygen(tmp_path: Path, key_type: str, bits: str | None) -> None:
    path = tmp_path / f"id_{key_type}"
    args = ["-t", key_type, "-f", str(path), "-N", "secret pass", "-C", "demo"]
    if bits:
        args += ["-b", bits]
    result = keygen(*args)
    assert result.returncode == 0, result.stderr
    fingerprint = result.stdout.splitlines()[-1].split()[0]
    # OpenSSH decrypts it with the passphrase and derives the same public key.
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-P", "secret pass", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.split()[:2] == Path(f"{path}.pub").read_text().split()[:2]
    listed = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], capture_output=True, text=True, timeout=30)
    assert listed.stdout.split()[1] == fingerprint
    assert (path.stat().st_mode & 0o777) == 0o600


def test_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "id"
    path.write_text("keep me")
    result = keygen("-f", str(path), "-N", "")
    assert result.returncode == 1
    assert result.stderr.strip() == f"hashike-keygen: {path} already exists."
    assert path.read_text() == "keep me"


def test_small_rsa_is_refused(tmp_path: Path) -> None:
    result = keygen("-t", "rsa", "-b", "1024", "-f", str(tmp_path / "k"), "-N", "")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1


def test_fingerprint_of_private_key(tmp_path: Path) -> None:
    path = tmp_path / "id"
    assert keygen("-f", str(path), "-N", "").returncode == 0
    (tmp_path / "id.pub").unlink()
    result = keygen("-l", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SHA256:") and "(ssh-ed25519)" in result.stdout


def test_password_hash_line() -> None:
    result = keygen("-P", "alice", input="correct horse\n")
    assert result.returncode == 0, result.stderr
    user, hashed = result.stdout.strip().split(":", 1)
    assert user == "alice"
    assert bcrypt.checkpw(b"correct horse", hashed.encode())
    assert not bcrypt.checkpw(b"wrong", hashed.encode())


def test_password_longer_than_bcrypt_reads_is_refused() -> None:
    result = keygen("-P", "alice", input="x" * 100 + "\n")
    assert result.returncode == 1
    assert "72 bytes" in result.stderr
