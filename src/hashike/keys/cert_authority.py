"""Which user certificates a server accepts, and the restrictions they carry.

Theory of operation, as sshd(8) does it (auth2-pubkey.c). A certificate is
accepted through an authorized_keys ``cert-authority`` line whose key is the
certificate's CA (``principals=`` naming who may log in; without it, the
login name must be a principal), or through a CA in TrustedUserCAKeys (the
login name must be a principal, or, with an AuthorizedPrincipalsFile, one of
the names listed there). Either way the CA's signature must verify, the
certificate must be a user certificate within its validity interval, and its
critical options must all be understood: ``force-command``,
``source-address`` (the client's address must match) and ``verify-required``
(which only security keys can honour, and so only they are held to). The
certificate's extensions grant what a plain key has by default: without
``permit-port-forwarding`` no -L or -R, without ``permit-pty`` no terminal,
and so on. The restrictions of an authorized_keys line and of the certificate
add up; their forced commands, if both have one, must agree.

Every refusal is a reason in sshd's words, for the server's log. Files are
read bounded, at each attempt; ``now`` is passed in.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from hashike.keys.authorized_keys import (
    KeyOptions,
    OptionsError,
    expand_authorized_keys_path,
    load_authorized_keys,
    parse_key_options,
    split_options,
)
from hashike.keys.textfile import iter_lines, read_bounded
from hashike.proto.certs import Certificate, CertType

__all__ = [
    "MAX_PRINCIPALS_FILE",
    "CertificateGrant",
    "PrincipalLine",
    "certificate_options",
    "grant_from_authorized_keys",
    "grant_from_trusted_cas",
    "load_principals",
    "merge_options",
    "source_address_allows",
]

MAX_PRINCIPALS_FILE = 1 << 20
_CRITICAL = frozenset({"force-command", "source-address", "verify-required"})


@dataclass(frozen=True, slots=True)
class CertificateGrant:
    """An accepted certificate: the options that restrict the login and how
    it was trusted (``via``: the file holding the CA), for the log."""

    options: KeyOptions
    via: str


def source_address_allows(value: str, address: str) -> bool | None:
    """PROTOCOL.certkeys source-address: a comma-separated list of CIDR
    blocks; None if the list is malformed (sshd then refuses)."""
    try:
        client = ipaddress.ip_address(address.split("%", 1)[0])
        networks = [ipaddress.ip_network(item.strip(), strict=False) for item in value.split(",")]
    except ValueError:
        return None
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    return any(client in network for network in networks)


def certificate_options(cert: Certificate) -> KeyOptions | str:
    """The options a certificate grants (sshauthopt_from_cert), or why it
    cannot be used: an unknown critical option."""
    for name, _ in cert.fields.critical_options:
        if name not in _CRITICAL:
            return f'Certificate critical option "{name}" is not supported'
    return KeyOptions(
        x11_forwarding=cert.has_extension("permit-X11-forwarding"),
        agent_forwarding=cert.has_extension("permit-agent-forwarding"),
        port_forwarding=cert.has_extension("permit-port-forwarding"),
        pty=cert.has_extension("permit-pty"),
        user_rc=cert.has_extension("permit-user-rc"),
        command=cert.critical_option("force-command"),
        no_touch_required=cert.has_extension("no-touch-required"),
        verify_required=cert.critical_option("verify-required") is not None,
    )


def merge_options(line: KeyOptions, cert: KeyOptions) -> KeyOptions | str:
    """The authorized_keys line's restrictions and the certificate's, both
    applied (sshauthopt_merge); a reason if their forced commands disagree."""
    if line.command is not None and cert.command is not None and line.command != cert.command:
        return "forced command options do not match"
    return replace(
        line,
        port_forwarding=line.port_forwarding and cert.port_forwarding,
        agent_forwarding=line.agent_forwarding and cert.agent_forwarding,
        x11_forwarding=line.x11_forwarding and cert.x11_forwarding,
        pty=line.pty and cert.pty,
        user_rc=line.user_rc and cert.user_rc,
        command=line.command if line.command is not None else cert.command,
        verify_required=line.verify_required or cert.verify_required,
    )


@dataclass(frozen=True, slots=True)
class PrincipalLine:
    """One line of an AuthorizedPrincipalsFile: a principal, the key options
    that prefix it (sshd_config(5): "as in authorized_keys"), its line number."""

    name: str
    options: KeyOptions
    line: int


def load_principals(path: str | os.PathLike[str], errors: list[str] | None = None) -> list[PrincipalLine]:
    """An AuthorizedPrincipalsFile: one principal a line, optionally after
    an options field (a line with a blank outside quotes has one); blank and
    ``#`` lines ignored, a line with bad options skipped with its reason in
    ``errors``. OSError if it cannot be read."""
    data, _more = read_bounded(path, MAX_PRINCIPALS_FILE, whole_lines=True)
    lines = []
    for number, raw in enumerate(iter_lines(data), start=1):
        line = raw.decode("utf-8", "replace").strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        options = KeyOptions()
        try:
            text, rest = split_options(line)
            if rest:
                options, line = parse_key_options(text), rest
        except OptionsError as exc:
            if errors is not None:
                errors.append(f"{path}:{number}: bad principal options: {exc}")
            continue
        lines.append(PrincipalLine(line, options, number))
    return lines


def _line_refusal(options: KeyOptions, *, user: str, address: str, now: int, location: str) -> str | None:
    """The line's own restrictions, which hold for a certificate as for a
    plain key (sshd checks both in auth_authorise_keyopts): expiry-time, from=."""
    if options.expired(datetime.fromtimestamp(now, UTC)):
        return f"{location}: entry expired"
    if not options.allows_from(address):
        return (
            f"{location}: Authentication tried for {user} with correct key"
            f" but not from a permitted host (ip={address})."
        )
    return None


def _validate(
    cert: Certificate, base: KeyOptions, *, user: str, name: str | None, require: bool, address: str, now: int
) -> KeyOptions | str:
    """The checks every accepted certificate passes, and its final options."""
    if not cert.signature_valid():
        return "Certificate signature is invalid"
    if require and not cert.fields.principals:
        return "Certificate lacks principal list"
    why = cert.check(cert_type=CertType.USER, now=now, name=name)
    if why is not None:
        return why
    options = certificate_options(cert)
    if isinstance(options, str):
        return options
    merged = merge_options(base, options)
    if isinstance(merged, str):
        return merged
    source = cert.critical_option("source-address")
    if source is not None:
        allowed = source_address_allows(source, address)
        if allowed is None:
            return "Certificate source-address invalid"
        if not allowed:
            return (
                f"cert: Authentication tried for {user} with valid certificate"
                f" but not from a permitted source address ({address})."
            )
    return merged


def grant_from_authorized_keys(
    cert: Certificate, username: str, paths: Sequence[str], address: str, now: int, errors: list[str]
) -> CertificateGrant | None:
    """A ``cert-authority`` line, in one of ``paths``, that accepts ``cert``
    for ``username``; the reasons lines refused it go to ``errors``."""
    for path in paths:
        for entry in load_authorized_keys(path):
            options = entry.options
            if not options.cert_authority or entry.key != cert.signature_key:
                continue
            if options.principals is not None and not set(options.principals) & set(cert.fields.principals):
                errors.append("Certificate does not contain an authorized principal")
                continue
            location = f"{path}:{entry.line}"
            refusal = _line_refusal(options, user=username, address=address, now=now, location=location)
            if refusal is not None:
                errors.append(refusal)
                continue
            name = username if options.principals is None else None
            result = _validate(
                cert, options, user=username, name=name, require=False, address=address, now=now
            )
            if isinstance(result, str):
                errors.append(result)
                continue
            return CertificateGrant(result, location)
    return None


def grant_from_trusted_cas(
    cert: Certificate,
    username: str,
    *,
    ca_file: str,
    principals_file: str | None,
    home: str,
    uid: int,
    address: str,
    now: int,
    errors: list[str],
) -> CertificateGrant | None:
    """TrustedUserCAKeys (``ca_file``) and AuthorizedPrincipalsFile: does a
    trusted CA accept ``cert`` for ``username``?"""
    if not any(entry.key == cert.signature_key for entry in load_authorized_keys(ca_file)):
        return None  # sshd: "CA ... is not listed in ..." (debug only)
    name: str | None = username
    base = KeyOptions()
    if principals_file is not None:
        path = expand_authorized_keys_path(principals_file, username, home, uid)
        try:
            listed = load_principals(path, errors)
        except OSError:
            listed = []
        line = next((entry for entry in listed if entry.name in cert.fields.principals), None)
        if line is None:
            errors.append("Certificate does not contain an authorized principal")
            return None
        location = f"{path}:{line.line}"
        refusal = _line_refusal(line.options, user=username, address=address, now=now, location=location)
        if refusal is not None:
            errors.append(refusal)
            return None
        name, base = None, line.options
    result = _validate(cert, base, user=username, name=name, require=True, address=address, now=now)
    if isinstance(result, str):
        errors.append(result)
        return None
    return CertificateGrant(result, ca_file)
