"""Which user certificates the server accepts (keys/cert_authority.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hashike.keys.authorized_keys import KeyOptions
from hashike.keys.cert_authority import (
    CertificateGrant,
    certificate_options,
    grant_from_authorized_keys,
    grant_from_trusted_cas,
    load_principals,
    merge_options,
    source_address_allows,
)
from hashike.proto.certs import Certificate, CertificateFields, CertType, sign_certificate
from tests.proto.test_certs import key

NOW = 1500


def cert(**changes: object) -> Certificate:
    fields = CertificateFields(
        cert_type=CertType.USER,
        key_id="k",
        principals=("alice",),
        valid_after=1000,
        valid_before=2000,
        extensions=(("permit-pty", ""),),
    )
    return sign_certificate(
        key("ssh-ed25519").public_key,
        key("ssh-ed25519", 1),
        dataclasses.replace(fields, **changes),  # type: ignore[arg-type]
    )


def cas(tmp_path: Path) -> str:
    path = tmp_path / "cas"
    path.write_text(key("ssh-ed25519", 1).public_key.openssh_line() + "\n")
    return str(path)


def trusted(
    tmp_path: Path, c: Certificate, principals_file: str | None = None, address: str = "127.0.0.1"
) -> tuple[CertificateGrant | None, list[str]]:
    errors: list[str] = []
    grant = grant_from_trusted_cas(
        c, "alice", ca_file=cas(tmp_path), principals_file=principals_file, home=str(tmp_path), uid=0,
        address=address, now=NOW, errors=errors,
    )  # fmt: skip
    return grant, errors


def test_options_from_extensions_and_critical_options() -> None:
    options = certificate_options(cert(critical_options=(("force-command", "id"),)))
    assert isinstance(options, KeyOptions)
    assert options.pty and not options.port_forwarding and not options.agent_forwarding
    assert options.command == "id"
    assert certificate_options(cert(critical_options=(("x@y", ""),))) == (
        'Certificate critical option "x@y" is not supported'
    )


def test_merge_applies_both_and_forced_commands_must_agree() -> None:
    line = KeyOptions(pty=False, command="a")
    merged = merge_options(line, KeyOptions(port_forwarding=True))
    assert isinstance(merged, KeyOptions) and not merged.pty and merged.command == "a"
    assert merge_options(line, KeyOptions(command="b")) == "forced command options do not match"
    assert merge_options(KeyOptions(), KeyOptions(command="b")).command == "b"  # type: ignore[union-attr]


def test_source_address() -> None:
    assert source_address_allows("10.0.0.0/8,127.0.0.1/32", "127.0.0.1")
    assert source_address_allows("127.0.0.0/8", "::ffff:127.0.0.2")
    assert source_address_allows("10.0.0.0/8", "127.0.0.1") is False
    assert source_address_allows("not-an-address", "127.0.0.1") is None


def test_trusted_ca(tmp_path: Path) -> None:
    grant, errors = trusted(tmp_path, cert())
    assert grant is not None and grant.via == cas(tmp_path) and errors == []
    assert trusted(tmp_path, cert(principals=()))[1] == ["Certificate lacks principal list"]
    assert trusted(tmp_path, cert(principals=("bob",)))[1] == [
        "Certificate invalid: name is not a listed principal"
    ]
    bad_source = cert(critical_options=(("source-address", "bogus"),))
    assert trusted(tmp_path, bad_source)[1] == ["Certificate source-address invalid"]
    other = sign_certificate(
        key("ssh-ed25519").public_key, key("ssh-rsa", 1), CertificateFields(cert_type=CertType.USER)
    )
    assert trusted(tmp_path, other) == (None, [])  # not our CA: nothing to say


def test_principals_file(tmp_path: Path) -> None:
    (tmp_path / "p").write_text("# comment\n\nops\n")
    assert [line.name for line in load_principals(tmp_path / "p")] == ["ops"]
    grant, errors = trusted(tmp_path, cert(principals=("ops",)), principals_file="p")
    assert grant is not None and errors == []
    missing = trusted(tmp_path, cert(principals=("ops",)), principals_file="missing")
    assert missing == (None, ["Certificate does not contain an authorized principal"])


def test_tampered_signature_is_refused(tmp_path: Path) -> None:
    c = cert()
    at = c.blob.index(b"alice")
    forged = Certificate.from_blob(c.blob[:at] + b"bobby" + c.blob[at + 5 :])
    assert trusted(tmp_path, forged)[1] == ["Certificate signature is invalid"]


def test_cert_authority_lines(tmp_path: Path) -> None:
    ca_line = key("ssh-ed25519", 1).public_key.openssh_line()
    keys = tmp_path / "ak"
    keys.write_text(f'cert-authority,principals="ops" {ca_line}\ncert-authority,command="x" {ca_line}\n')
    errors: list[str] = []
    c = cert(critical_options=(("force-command", "y"),))
    assert grant_from_authorized_keys(c, "alice", [str(keys)], "127.0.0.1", NOW, errors) is None
    assert errors == [
        "Certificate does not contain an authorized principal",
        "forced command options do not match",
    ]
    keys.write_text(f"restrict,cert-authority {ca_line}\n")
    grant = grant_from_authorized_keys(cert(), "alice", [str(keys)], "127.0.0.1", NOW, [])
    assert grant is not None and grant.via == f"{keys}:1" and not grant.options.pty  # restrict wins


def test_principals_file_lines_take_key_options(tmp_path: Path) -> None:
    """sshd_config(5): a principal may be prefixed with authorized_keys
    options, applied when a certificate is accepted through that line."""
    (tmp_path / "p").write_text(
        'bogus="x ops\nno-pty,from="127.0.0.1" ops\nexpiry-time="19700101000010Z" old\nrestrict dev\n'
    )
    errors: list[str] = []
    lines = load_principals(tmp_path / "p", errors)
    assert [(line.name, line.line) for line in lines] == [("ops", 2), ("old", 3), ("dev", 4)]
    assert errors == [f"{tmp_path / 'p'}:1: bad principal options: missing end quote"]
    grant, errors = trusted(tmp_path, cert(principals=("ops",)), principals_file="p")
    assert grant is not None and not grant.options.pty, errors  # the line's no-pty holds
    far = trusted(tmp_path, cert(principals=("ops",)), principals_file="p", address="127.0.0.9")
    assert far[0] is None and far[1][-1] == (
        f"{tmp_path / 'p'}:2: Authentication tried for alice with correct key"
        " but not from a permitted host (ip=127.0.0.9)."
    )
    old = trusted(tmp_path, cert(principals=("old",)), principals_file="p")
    assert old[0] is None and old[1][-1] == f"{tmp_path / 'p'}:3: entry expired"
    dev, _ = trusted(tmp_path, cert(principals=("dev",), extensions=(("permit-port-forwarding", ""),)), "p")
    assert dev is not None and not dev.options.port_forwarding  # restrict beats the extension


def test_cert_authority_line_restrictions_hold(tmp_path: Path) -> None:
    """A cert-authority line's from= and expiry-time bind certificate logins
    too (they were once ignored for them)."""
    ca_line = key("ssh-ed25519", 1).public_key.openssh_line()
    keys = tmp_path / "ak"
    keys.write_text(f'cert-authority,from="127.0.0.1" {ca_line}\n')
    errors: list[str] = []
    assert grant_from_authorized_keys(cert(), "alice", [str(keys)], "127.0.0.2", NOW, errors) is None
    assert errors == [
        f"{keys}:1: Authentication tried for alice with correct key"
        " but not from a permitted host (ip=127.0.0.2)."
    ]
    assert grant_from_authorized_keys(cert(), "alice", [str(keys)], "127.0.0.1", NOW, []) is not None
    keys.write_text(f'cert-authority,expiry-time="19700101000010Z" {ca_line}\n')
    errors = []
    assert grant_from_authorized_keys(cert(), "alice", [str(keys)], "127.0.0.1", NOW, errors) is None
    assert errors == [f"{keys}:1: entry expired"]
