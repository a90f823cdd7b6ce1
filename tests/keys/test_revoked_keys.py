"""RevokedKeys files (keys/revoked_keys.py): key lists and KRLs, and a file
that cannot be checked revokes everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from hashike.keys.revoked_keys import RevocationCheckError, is_revoked
from hashike.proto.wire import encode_string
from tests.proto.test_krl import CA, OTHER_CA, USER, cert, header, section


def test_a_key_list(tmp_path: Path) -> None:
    listed = tmp_path / "revoked"
    listed.write_text(f"# revoked\n\nnot a key\n{USER.public_key.openssh_line()}\n")
    assert is_revoked(listed, USER.public_key)
    assert is_revoked(listed, cert())  # the key it certifies
    assert not is_revoked(listed, CA.public_key)
    listed.write_text(CA.public_key.openssh_line() + "\n")
    assert is_revoked(listed, cert()) and not is_revoked(listed, cert(ca=OTHER_CA))
    listed.write_text(cert().openssh_line() + "\n")  # a listed certificate revokes its key
    assert is_revoked(listed, USER.public_key)


def test_a_krl(tmp_path: Path) -> None:
    krl = tmp_path / "krl"
    krl.write_bytes(header() + section(2, encode_string(USER.public_key.blob)))
    assert is_revoked(krl, USER.public_key) and is_revoked(krl, cert())
    assert not is_revoked(krl, CA.public_key)


@pytest.mark.parametrize("content", [None, b"dir", header() + b"\xff", b"x" * (16 * 1024 * 1024 + 1)])
def test_cannot_check(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "revoked"
    if content == b"dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(RevocationCheckError):
        is_revoked(path, USER.public_key)
