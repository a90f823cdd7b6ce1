"""hashiked's keywords for certificates and central key sources: HostCertificate
(which certificates are offered; the rest logged in sshd's words and
skipped), RevokedKeys, AuthorizedKeysCommand(User)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hashike.cli.server import _load_host_certificates
from hashike.config.sshd_config import ConfigError, parse_server_config
from hashike.keys.keypair import generate_private_key
from hashike.proto.certs import CertificateFields, CertType, sign_certificate


def test_host_certificate_keyword_appends() -> None:
    settings = parse_server_config(None, ["HostCertificate /a-cert.pub", "HostCertificate /b-cert.pub"])
    assert settings.host_certificate_files == ("/a-cert.pub", "/b-cert.pub")
    assert parse_server_config(None, []).host_certificate_files == ()


def test_certificates_for_other_keys_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host, other, ca = (generate_private_key("ssh-ed25519") for _ in range(3))
    fields = CertificateFields(cert_type=CertType.HOST, principals=("h",))
    good, foreign = tmp_path / "good-cert.pub", tmp_path / "foreign-cert.pub"
    good.write_text(sign_certificate(host.public_key, ca, fields).openssh_line() + "\n")
    foreign.write_text(sign_certificate(other.public_key, ca, fields).openssh_line() + "\n")
    plain, missing = tmp_path / "plain.pub", tmp_path / "missing-cert.pub"
    plain.write_text(host.public_key.openssh_line() + "\n")
    settings = parse_server_config(None, [f"HostCertificate {p}" for p in (good, foreign, plain, missing)])
    with caplog.at_level(logging.DEBUG, logger="hashike.server"):
        certs = _load_host_certificates(settings, [host])
    assert [c.key for c in certs] == [host.public_key]
    assert f"No matching private key for certificate: {foreign}" in caplog.text
    assert f"Certificate file is not a certificate: {plain}" in caplog.text
    assert f'Could not load host certificate "{missing}"' in caplog.text


def test_revoked_keys_keyword() -> None:
    assert (
        parse_server_config(None, ["RevokedKeys /etc/ssh/revoked.krl"]).revoked_keys == "/etc/ssh/revoked.krl"
    )
    assert parse_server_config(None, ["RevokedKeys none"]).revoked_keys is None


def test_authorized_keys_command_keywords() -> None:
    settings = parse_server_config(
        None, ['AuthorizedKeysCommand /usr/bin/keys "%u" %f', "AuthorizedKeysCommandUser nobody"]
    )
    assert settings.authorized_keys_command == ("/usr/bin/keys", "%u", "%f")
    assert settings.authorized_keys_command_user == "nobody"
    assert parse_server_config(None, ["AuthorizedKeysCommand none"]).authorized_keys_command == ()
    with pytest.raises(ConfigError, match="must be an absolute path"):
        parse_server_config(None, ["AuthorizedKeysCommand keys %u"])
    with pytest.raises(ConfigError, match="unknown token %x"):
        parse_server_config(None, ["AuthorizedKeysCommand /usr/bin/keys %x"])
