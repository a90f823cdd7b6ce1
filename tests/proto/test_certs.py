"""OpenSSH certificates (proto/certs.py): parsing what ssh-keygen -s makes,
our own encoder, the CA signature, the validity rules."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from hashike.keys.keypair import generate_private_key
from hashike.proto.certs import (
    FOREVER,
    Certificate,
    CertificateFields,
    CertType,
    plain_algorithm,
    public_key_from_blob,
    public_key_from_openssh_line,
    sign_certificate,
)
from hashike.proto.hostkey import KeyFormatError, PrivateKey, PublicKey
from hashike.proto.wire import encode_string

KEY_TYPES = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"]
KEYGEN_TYPES = {"ed25519": ["-t", "ed25519"], "ecdsa": ["-t", "ecdsa"], "rsa": ["-t", "rsa", "-b", "2048"]}
_KEYS: dict[str, PrivateKey] = {}


def key(key_type: str, slot: int = 0) -> PrivateKey:
    name = f"{key_type}/{slot}"
    if name not in _KEYS:
        _KEYS[name] = generate_private_key(key_type)
    return _KEYS[name]


def user_fields(**changes: object) -> CertificateFields:
    base = CertificateFields(
        cert_type=CertType.USER,
        key_id="alice@example",
        serial=7,
        principals=("alice", "bob"),
        valid_after=1000,
        valid_before=2000,
        critical_options=(("source-address", "127.0.0.1/32"), ("force-command", "/bin/true")),
        extensions=(("permit-pty", ""), ("permit-port-forwarding", "")),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def keygen_certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """(cert line, CA line) per key type, made by OpenSSH's ssh-keygen -s."""
    keygen = shutil.which("ssh-keygen")
    assert keygen is not None, "ssh-keygen is needed"
    out: dict[str, tuple[str, str]] = {}
    for name, args in KEYGEN_TYPES.items():
        d = tmp_path_factory.mktemp(name)
        for stem in ("ca", "user"):
            subprocess.run([keygen, "-q", *args, "-N", "", "-f", str(d / stem)], check=True)
        subprocess.run(
            [keygen, "-q", "-s", str(d / "ca"), "-I", f"id-{name}", "-n", "alice,bob", "-V", "+1h",
             "-z", "42", "-O", "source-address=127.0.0.1/32", "-O", "force-command=/bin/true",
             str(d / "user.pub")],
            check=True,
        )  # fmt: skip
        out[name] = ((d / "user-cert.pub").read_text(), (d / "ca.pub").read_text())
    return out


@pytest.mark.parametrize("name", sorted(KEYGEN_TYPES))
def test_parses_ssh_keygen_certificates(name: str, keygen_certs: dict[str, tuple[str, str]]) -> None:
    line, ca_line = keygen_certs[name]
    cert = Certificate.from_openssh_line(line)
    assert cert.signature_valid()
    assert cert.signature_key == PublicKey.from_openssh_line(ca_line)
    fields = cert.fields
    assert (fields.cert_type, fields.key_id, fields.serial) == (CertType.USER, f"id-{name}", 42)
    assert fields.principals == ("alice", "bob")
    assert fields.valid_before - fields.valid_after > 3000
    assert cert.critical_option("force-command") == "/bin/true"
    assert cert.critical_option("source-address") == "127.0.0.1/32"
    assert cert.has_extension("permit-pty") and not cert.has_extension("no-such")
    assert cert.openssh_line() == " ".join(line.split()[:2])
    assert public_key_from_blob(cert.blob) == cert
    assert cert.fingerprint() == cert.key.fingerprint()


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("ca_type", ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp384"])
def test_sign_and_parse_round_trip(key_type: str, ca_type: str) -> None:
    ca = key(ca_type, 1)
    cert = sign_certificate(key(key_type).public_key, ca, user_fields())
    again = Certificate.from_blob(cert.blob)
    assert again == cert and again.signature_valid()
    fields = user_fields()
    sorted_fields = user_fields(
        critical_options=tuple(sorted(fields.critical_options)), extensions=tuple(sorted(fields.extensions))
    )
    assert again.fields == sorted_fields
    assert again.key == key(key_type).public_key
    assert again.signature_key == ca.public_key


def test_tampered_certificate_fails_the_signature_check() -> None:
    cert = sign_certificate(key("ssh-ed25519").public_key, key("ssh-ed25519", 1), user_fields())
    at = cert.blob.index(b"alice@example")
    tampered = Certificate.from_blob(cert.blob[:at] + b"mallory@examp" + cert.blob[at + 13 :])
    assert not tampered.signature_valid()


@pytest.mark.parametrize("algorithm", ["rsa-sha2-256", "rsa-sha2-512"])
def test_certificate_verifies_signatures_under_certificate_names(algorithm: str) -> None:
    user = key("ssh-rsa")
    cert = sign_certificate(user.public_key, key("ssh-ed25519", 1), user_fields())
    signature = user.sign(b"data", algorithm)
    assert cert.verify(signature, b"data", (f"{algorithm}-cert-v01@openssh.com",))
    assert not cert.verify(signature, b"data", (algorithm,))  # a plain name is not a certificate's
    other = "rsa-sha2-512" if algorithm == "rsa-sha2-256" else "rsa-sha2-256"
    assert not cert.verify(signature, b"data", (f"{other}-cert-v01@openssh.com",))
    assert plain_algorithm(f"{algorithm}-cert-v01@openssh.com") == algorithm
    assert plain_algorithm("ssh-ed25519") == "ssh-ed25519"


def test_check_follows_sshd() -> None:
    cert = sign_certificate(key("ssh-ed25519").public_key, key("ssh-ed25519", 1), user_fields())
    assert cert.check(cert_type=CertType.USER, now=1500, name="alice") is None
    assert cert.check(cert_type=CertType.USER, now=1500) is None
    assert cert.check(cert_type=CertType.USER, now=999, name="alice") == "Certificate invalid: not yet valid"
    assert cert.check(cert_type=CertType.USER, now=2000, name="alice") == "Certificate invalid: expired"
    assert (
        cert.check(cert_type=CertType.USER, now=1500, name="carol")
        == "Certificate invalid: name is not a listed principal"
    )
    assert cert.check(cert_type=CertType.HOST, now=1500) == "Certificate invalid: not a host certificate"
    host = sign_certificate(
        key("ssh-ed25519").public_key, key("ssh-ed25519", 1), user_fields(cert_type=CertType.HOST)
    )
    assert host.check(cert_type=CertType.USER, now=1500) == "Certificate invalid: not a user certificate"
    forever = sign_certificate(
        key("ssh-ed25519").public_key, key("ssh-ed25519", 1), user_fields(valid_before=FOREVER)
    )
    assert forever.check(cert_type=CertType.USER, now=2**63, name="bob") is None


def test_a_certificate_cannot_be_a_ca_or_be_certified() -> None:
    inner = sign_certificate(key("ssh-ed25519").public_key, key("ssh-ed25519", 1), user_fields())
    with pytest.raises(ValueError, match="cannot certify"):
        sign_certificate(inner, key("ssh-ed25519", 1), user_fields())
    good = sign_certificate(key("ssh-ed25519").public_key, key("ssh-ed25519", 1), user_fields())
    ca_blob = key("ssh-ed25519", 1).public_key.blob
    at = good.blob.index(encode_string(ca_blob))
    # The CA key replaced by a certificate blob: refused at parse time.
    forged = good.blob[:at] + encode_string(inner.blob) + good.blob[at + 4 + len(ca_blob) :]
    with pytest.raises(KeyFormatError):
        Certificate.from_blob(forged)


@pytest.mark.parametrize(
    "options",
    [
        (("b", ""), ("a", "")),  # out of order
        (("a", ""), ("a", "")),  # repeated
    ],
)
def test_options_must_be_sorted_and_unique(options: tuple[tuple[str, str], ...]) -> None:
    good = sign_certificate(key("ssh-ed25519").public_key, key("ssh-ed25519", 1), user_fields(extensions=()))
    # The empty extensions and reserved strings come just before the CA key.
    at = good.blob.index(encode_string(key("ssh-ed25519", 1).public_key.blob)) - 8
    bad_opts = b"".join(encode_string(n) + encode_string(v) for n, v in options)
    bad = good.blob[:at] + encode_string(bad_opts) + good.blob[at + 4 :]
    with pytest.raises(KeyFormatError, match="order"):
        Certificate.from_blob(bad)


def test_lines_and_blobs() -> None:
    cert = sign_certificate(key("ssh-ed25519").public_key, key("ssh-ed25519", 1), user_fields())
    parsed, comment = public_key_from_openssh_line(cert.openssh_line("me@host") + "\n")
    assert parsed == cert and comment == "me@host"
    plain, _ = public_key_from_openssh_line(key("ssh-ed25519").public_key.openssh_line())
    assert not isinstance(plain, Certificate)
    with pytest.raises(KeyFormatError, match="not a certificate"):
        Certificate.from_openssh_line(key("ssh-ed25519").public_key.openssh_line())
    wrong = "ssh-rsa-cert-v01@openssh.com " + cert.openssh_line().split()[1]
    with pytest.raises(KeyFormatError, match="does not match"):
        public_key_from_openssh_line(wrong)
    for blob in (b"", b"\0\0\0\x05abcde", encode_string("ssh-ed25519-cert-v01@openssh.com")):
        with pytest.raises(KeyFormatError):
            public_key_from_blob(blob)
    assert "alice@example" in repr(cert)


def test_unknown_certificate_type_number_is_refused(tmp_path: Path) -> None:
    cert = sign_certificate(key("ssh-ed25519").public_key, key("ssh-ed25519", 1), user_fields())
    needle = (7).to_bytes(8, "big") + (1).to_bytes(4, "big")
    at = cert.blob.index(needle)
    bad = cert.blob[:at] + (7).to_bytes(8, "big") + (3).to_bytes(4, "big") + cert.blob[at + 12 :]
    with pytest.raises(KeyFormatError, match="unknown certificate type"):
        Certificate.from_blob(bad)
