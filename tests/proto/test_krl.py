"""OpenSSH KRLs (proto/krl.py): what ``ssh-keygen -k`` writes, hand-built
sections (PROTOCOL.krl), the refusals, and what a KRL revokes."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from hashike.keys.keypair import generate_private_key, load_public_key_file
from hashike.proto.certs import Certificate, CertificateFields, CertType, sign_certificate
from hashike.proto.hostkey import PrivateKey
from hashike.proto.krl import KRL_MAGIC, MAX_KRL_SIZE, KRLFormatError, parse_krl
from hashike.proto.wire import encode_bool, encode_byte, encode_string, encode_uint32, encode_uint64

CA = generate_private_key("ssh-ed25519")
OTHER_CA = generate_private_key("ssh-ed25519")
USER = generate_private_key("ssh-ed25519")


def cert(serial: int = 5, key_id: str = "alice", ca: PrivateKey = CA) -> Certificate:
    fields = CertificateFields(cert_type=CertType.USER, key_id=key_id, serial=serial, principals=("alice",))
    return sign_certificate(USER.public_key, ca, fields)


def header(comment: str = "") -> bytes:
    return (
        KRL_MAGIC + encode_uint32(1) + encode_uint64(3) + encode_uint64(1_700_000_000) + encode_uint64(0)
        + encode_string(b"") + encode_string(comment)
    )  # fmt: skip


def section(kind: int, data: bytes) -> bytes:
    return encode_byte(kind) + encode_string(data)


def cert_section(*subsections: bytes, ca: bytes | None = None) -> bytes:
    ca_blob = CA.public_key.blob if ca is None else ca
    return section(1, encode_string(ca_blob) + encode_string(b"") + b"".join(subsections))


def extension(name: str, critical: bool) -> bytes:
    return encode_string(name) + encode_bool(critical) + encode_string(b"body")


def test_header() -> None:
    krl = parse_krl(header("made by hand"))
    assert (krl.version, krl.generated, krl.comment) == (3, 1_700_000_000, "made by hand")
    assert not krl.revokes(USER.public_key) and not krl.revokes(cert())


@pytest.mark.parametrize(
    ("subsection", "revoked", "kept"),
    [
        (section(0x20, encode_uint64(5) + encode_uint64(9)), [5, 9], [4, 6]),
        (section(0x21, encode_uint64(5) + encode_uint64(9)), [5, 7, 9], [4, 10]),
        (section(0x22, encode_uint64(4) + encode_string(bytes([0b101]))), [4, 6], [5, 7, 3]),
    ],
)
def test_serials(subsection: bytes, revoked: list[int], kept: list[int]) -> None:
    krl = parse_krl(header() + cert_section(subsection))
    assert all(krl.revokes(cert(n)) for n in revoked)
    assert not any(krl.revokes(cert(n)) for n in kept)
    assert not krl.revokes(cert(revoked[0], ca=OTHER_CA))  # another CA's serials


def test_serial_zero_is_never_revoked() -> None:
    krl = parse_krl(header() + cert_section(section(0x21, encode_uint64(0) + encode_uint64(9))))
    assert not krl.revokes(cert(0)) and krl.revokes(cert(1))


def test_key_ids_for_one_or_every_ca() -> None:
    ids = section(0x23, encode_string("alice") + encode_string("carol"))
    one = parse_krl(header() + cert_section(ids))
    assert one.revokes(cert(key_id="carol")) and not one.revokes(cert(key_id="bob"))
    assert not one.revokes(cert(key_id="alice", ca=OTHER_CA))
    every = parse_krl(header() + cert_section(ids, ca=b""))
    assert every.revokes(cert(key_id="alice", ca=OTHER_CA))


def test_plain_keys_by_blob_and_hash() -> None:
    other = generate_private_key("ecdsa-sha2-nistp256").public_key
    by_blob = parse_krl(header() + section(2, encode_string(USER.public_key.blob)))
    sha256 = parse_krl(header() + section(5, encode_string(hashlib.sha256(USER.public_key.blob).digest())))
    sha1 = parse_krl(header() + section(3, encode_string(hashlib.sha1(USER.public_key.blob).digest())))
    for krl in (by_blob, sha256, sha1):
        assert krl.revokes(USER.public_key) and not krl.revokes(other)
        assert krl.revokes(cert())  # the key a certificate certifies


def test_a_revoked_ca_revokes_its_certificates() -> None:
    krl = parse_krl(header() + section(2, encode_string(CA.public_key.blob)))
    assert krl.revokes(cert()) and not krl.revokes(cert(ca=OTHER_CA))
    assert not krl.revokes(USER.public_key)


def test_non_critical_extensions_are_skipped() -> None:
    data = header() + section(255, extension("bloom-explicit-key", False))
    data += cert_section(
        section(0x39, extension("cert-bloom-serial", False)), section(0x20, encode_uint64(5))
    )
    assert parse_krl(data).revokes(cert(5))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"SSHKRL\n\1" + header()[8:], "bad magic"),
        (header()[:8] + encode_uint32(2) + header()[12:], "format version"),
        (header() + section(255, extension("x@example.com", True)), "critical KRL extension"),
        (header() + cert_section(section(0x39, extension("y@example.com", True))), "critical certificate"),
        (header() + encode_byte(4) + encode_string(b"k") + encode_string(b"s"), "signatures"),
        (header() + section(9, b""), "unknown KRL section"),
        (header() + cert_section(section(0x2F, b"")), "unknown KRL certificate section"),
        (header() + cert_section(section(0x21, encode_uint64(9) + encode_uint64(5))), "inverted"),
        (header() + section(5, encode_string(b"\2" * 32) + encode_string(b"\1" * 32)), "out of order"),
        (header() + section(5, encode_string(b"\1" * 20)), "malformed"),
        (header() + section(2, b""), "empty"),
        (header() + section(2, encode_string(cert().blob)), "invalid KRL"),  # a certificate, not a raw key
        (header() + section(2, encode_string(USER.public_key.blob))[:-3], "invalid KRL"),
        (header()[:-2], "invalid KRL"),
        (b"\0" * (MAX_KRL_SIZE + 1), "larger than"),
    ],
)
def test_refusals(data: bytes, reason: str) -> None:
    with pytest.raises(KRLFormatError, match=reason):
        parse_krl(data)


def test_what_ssh_keygen_writes(tmp_path: Path) -> None:
    keygen = shutil.which("ssh-keygen")
    assert keygen is not None, "ssh-keygen is needed"

    def make(name: str, key_type: str = "ed25519") -> Path:
        subprocess.run(
            [keygen, "-q", "-t", key_type, "-N", "", "-f", str(tmp_path / name)], check=True, timeout=60
        )
        return tmp_path / f"{name}.pub"

    ca, listed, hashed, certified, kept = make("ca"), make("a"), make("b", "ecdsa"), make("c"), make("d")
    subprocess.run(
        [keygen, "-q", "-s", str(tmp_path / "ca"), "-I", "bad-id", "-z", "7", "-n", "x", str(certified)],
        check=True, timeout=60,
    )  # fmt: skip
    spec = tmp_path / "spec"
    spec.write_text(f"serial: 100-200\nid: other-id\nkey: {listed.read_text()}sha256: {hashed.read_text()}")
    krl_path = tmp_path / "krl"
    subprocess.run(
        [keygen, "-q", "-k", "-f", str(krl_path), "-s", str(ca), str(spec)], check=True, timeout=60
    )
    krl = parse_krl(krl_path.read_bytes())
    assert krl.revokes(load_public_key_file(listed)) and krl.revokes(load_public_key_file(hashed))
    assert not krl.revokes(load_public_key_file(kept))
    certificate = load_public_key_file(tmp_path / "c-cert.pub")
    assert isinstance(certificate, Certificate) and not krl.revokes(certificate)  # serial 7, id bad-id
    spec.write_text("serial: 5-9\n")
    subprocess.run(
        [keygen, "-q", "-k", "-f", str(krl_path), "-s", str(ca), str(spec)], check=True, timeout=60
    )
    assert parse_krl(krl_path.read_bytes()).revokes(certificate)
    spec.write_text("id: bad-id\n")
    subprocess.run(
        [keygen, "-q", "-k", "-f", str(krl_path), "-s", str(ca), str(spec)], check=True, timeout=60
    )
    assert parse_krl(krl_path.read_bytes()).revokes(certificate)
