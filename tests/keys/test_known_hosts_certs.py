"""Host certificates against known_hosts: @cert-authority lines with host
patterns, @revoked for the certificate, its key or its CA, principals as
ssh matches them, the validity interval at the caller's time, ssh's
messages and its fallback to the plain key; ssh's host key algorithm order."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest

from hashike.keys.keypair import generate_private_key
from hashike.keys.known_hosts import HostKeyStatus, KnownHosts, evaluate_host_key, order_host_key_algorithms
from hashike.proto.certs import Certificate, CertificateFields, CertType, sign_certificate
from hashike.proto.config import DEFAULT_HOST_KEY_ALGORITHMS
from hashike.proto.hostkey import PrivateKey

NOW = 1_800_000_000
CA = generate_private_key("ssh-ed25519")
OTHER_CA = generate_private_key("ssh-ed25519")
HOST = generate_private_key("ssh-ed25519")


def cert(
    principals: tuple[str, ...] = ("server.example",), *, ca: PrivateKey = CA, **changes: Any
) -> Certificate:
    fields = CertificateFields(
        cert_type=CertType.HOST,
        key_id="host",
        principals=principals,
        valid_after=NOW - 60,
        valid_before=NOW + 3600,
    )
    return sign_certificate(HOST.public_key, ca, dataclasses.replace(fields, **changes))


def ca_line(hosts: str = "*.example", ca: PrivateKey = CA) -> str:
    return f"@cert-authority {hosts} {ca.public_key.openssh_line()}\n"


def check(
    text: str, certificate: Certificate, host: str = "server.example", port: int = 22
) -> tuple[object, ...]:
    status, entries, why = KnownHosts.parse(text).check_certificate(host, port, certificate, NOW)
    return status, len(entries), why


def test_a_trusted_ca_for_the_host_matches() -> None:
    assert check(ca_line(), cert()) == (HostKeyStatus.MATCH, 1, None)


def test_ca_line_for_other_hosts_is_not_used() -> None:
    assert check(ca_line("*.other"), cert()) == (HostKeyStatus.UNKNOWN, 0, None)
    assert check(ca_line("*.example,!server.example"), cert()) == (HostKeyStatus.UNKNOWN, 0, None)


def test_ca_line_names_the_port() -> None:
    assert check(ca_line("[server.example]:2222"), cert(), port=2222)[0] is HostKeyStatus.MATCH
    assert check(ca_line("server.example"), cert(), port=2222)[0] is HostKeyStatus.UNKNOWN


def test_another_ca_is_unknown() -> None:
    assert check(ca_line(), cert(ca=OTHER_CA)) == (HostKeyStatus.UNKNOWN, 0, None)


def test_a_plain_line_with_the_ca_key_is_not_a_ca() -> None:
    assert check(f"*.example {CA.public_key.openssh_line()}\n", cert())[0] is HostKeyStatus.UNKNOWN


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"principals": ("other.example",)}, "Certificate invalid: name is not a listed principal"),
        ({"valid_before": NOW}, "Certificate invalid: expired"),
        ({"valid_after": NOW + 1}, "Certificate invalid: not yet valid"),
        ({"cert_type": CertType.USER}, "Certificate invalid: not a host certificate"),
        (
            {"critical_options": (("force-command", "true"),)},
            "Certificate for server.example contains critical options",
        ),
    ],
)
def test_invalid_certificates_say_why(changes: dict[str, Any], reason: str) -> None:
    assert check(ca_line(), cert(**changes)) == (HostKeyStatus.UNKNOWN, 0, reason)


def test_principals_may_be_wildcards_and_empty() -> None:
    assert check(ca_line(), cert(("*.example",)))[0] is HostKeyStatus.MATCH
    assert check(ca_line(), cert(()))[0] is HostKeyStatus.MATCH
    assert check(ca_line(), cert(("SERVER.example",)), host="Server.Example")[2] is not None


@pytest.mark.parametrize("what", ["ca", "key", "certificate"])
def test_revoked_wins(what: str) -> None:
    certificate = cert()
    line = {
        "ca": CA.public_key.openssh_line(),
        "key": HOST.public_key.openssh_line(),
        "certificate": certificate.openssh_line(),
    }[what]
    assert check(ca_line() + f"@revoked * {line}\n", certificate) == (HostKeyStatus.REVOKED, 1, None)


def evaluate(tmp_path: Path, text: str, certificate: Certificate, strict: str = "yes") -> tuple[bool, str]:
    known = tmp_path / "known_hosts"
    known.write_text(text)
    err = io.StringIO()
    verdict = evaluate_host_key(
        "server.example", 22, certificate, strict=strict, known_hosts_files=[known], err=err, now=NOW
    )
    return verdict.accepted, err.getvalue()


def test_evaluate_accepts_a_certificate_silently(tmp_path: Path) -> None:
    assert evaluate(tmp_path, ca_line(), cert()) == (True, "")


def test_evaluate_falls_back_to_the_plain_key(tmp_path: Path) -> None:
    wrong = cert(("other.example",))
    accepted, err = evaluate(tmp_path, ca_line(), wrong)
    assert not accepted
    assert err == (
        "Certificate invalid: name is not a listed principal\n"
        "No ED25519 host key is known for server.example and you have requested strict checking.\n"
        "Host key verification failed.\n"
    )
    plain = f"server.example {HOST.public_key.openssh_line()}\n"
    assert evaluate(tmp_path, ca_line() + plain, wrong) == (
        True,
        "Certificate invalid: name is not a listed principal\n",
    )
    assert evaluate(tmp_path, plain, cert()) == (True, "")  # no CA: the key decides, quietly


def test_evaluate_adds_the_plain_key_not_the_certificate(tmp_path: Path) -> None:
    accepted, err = evaluate(tmp_path, "", cert(), strict="accept-new")
    assert accepted and "Permanently added 'server.example' (ED25519)" in err
    assert (tmp_path / "known_hosts").read_text() == f"server.example {HOST.public_key.openssh_line()}\n"


def test_evaluate_refuses_a_revoked_ca(tmp_path: Path) -> None:
    text = ca_line() + f"@revoked * {CA.public_key.openssh_line()}\n"
    accepted, err = evaluate(tmp_path, text + f"server.example {HOST.public_key.openssh_line()}\n", cert())
    assert not accepted
    assert "The ED25519-CERT host key for server.example is marked as revoked." in err


def test_evaluate_without_a_time_refuses_a_dated_certificate(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(ca_line())
    err = io.StringIO()
    verdict = evaluate_host_key(
        "server.example", 22, cert(), strict="yes", known_hosts_files=[known], err=err
    )
    assert not verdict.accepted and "Certificate invalid: not yet valid" in err.getvalue()


CERTS = tuple(a for a in DEFAULT_HOST_KEY_ALGORITHMS if "-cert-" in a)
PLAIN = tuple(a for a in DEFAULT_HOST_KEY_ALGORITHMS if "-cert-" not in a)


def test_order_nothing_known_keeps_the_default() -> None:
    assert (
        KnownHosts.parse("").order_algorithms("h", 22, DEFAULT_HOST_KEY_ALGORITHMS)
        == DEFAULT_HOST_KEY_ALGORITHMS
    )


def test_order_a_ca_puts_every_certificate_algorithm_first() -> None:
    known = KnownHosts.parse(
        ca_line("h") + f"h {generate_private_key('ecdsa-sha2-nistp256').public_key.openssh_line()}\n"
    )
    # The preferred ones keep the order given, ahead of the rest.
    order = known.order_algorithms("h", 22, (*PLAIN, *CERTS))
    assert order == ("ecdsa-sha2-nistp256", *CERTS, *(a for a in PLAIN if a != "ecdsa-sha2-nistp256"))


def test_order_a_known_plain_key_puts_its_algorithms_first() -> None:
    rsa_line = "h ssh-rsa " + generate_private_key("ssh-rsa").public_key.openssh_line().split()[1] + "\n"
    order = KnownHosts.parse(rsa_line).order_algorithms("h", 22, DEFAULT_HOST_KEY_ALGORITHMS)
    rsa = (
        "rsa-sha2-512-cert-v01@openssh.com",
        "rsa-sha2-256-cert-v01@openssh.com",
        "rsa-sha2-512",
        "rsa-sha2-256",
    )
    assert order[:4] == rsa
    assert set(order) == set(DEFAULT_HOST_KEY_ALGORITHMS)


def test_order_from_files_survives_an_unreadable_one(tmp_path: Path) -> None:
    unreadable = tmp_path / "dir"
    unreadable.mkdir()  # reading a directory fails: the order stays as given
    assert order_host_key_algorithms(PLAIN, "h", 22, [unreadable]) == PLAIN
    known = tmp_path / "known_hosts"
    known.write_text(ca_line("h"))
    assert order_host_key_algorithms(DEFAULT_HOST_KEY_ALGORITHMS, "h", 22, [known])[: len(CERTS)] == CERTS
