"""OpenSSH certificates (PROTOCOL.certkeys): ``*-cert-v01@openssh.com`` blobs.

A certificate is a public key together with what a certification authority (CA)
says about it: user or host, a serial, a key id, the principals (user or host
names) it is valid for, a validity interval, critical options and extensions,
and the CA's key and signature over all of that. Where a public key blob goes
on the wire (publickey authentication, a host key), a certificate blob may go
instead, under its own algorithm names (``ssh-ed25519-cert-v01@openssh.com``,
``rsa-sha2-512-cert-v01@openssh.com`` ...); the signatures inside the protocol
are still made by the certified key with its plain algorithm.

:class:`Certificate` is a :class:`~hashike.proto.hostkey.PublicKey` (equal by
its whole blob, printed as a ``-cert.pub`` line) that verifies signatures with
the certified key. :meth:`Certificate.from_blob` is total, as PublicKey's is,
and bounded: only :class:`KeyFormatError` escapes. It checks the structure
only; the CA's signature is checked by :meth:`Certificate.signature_valid`,
which the caller asks once it knows it trusts the CA, so that a peer cannot make
us verify signatures by keys nobody trusts. :meth:`Certificate.check` applies
the rules sshd and ssh apply (sshkey_cert_check_authority): the type, the
validity interval at a ``now`` the caller passes in, and the principals.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from hashike.proto.errors import DecodeError
from hashike.proto.hostkey import (
    HostKeySigner,
    KeyFormatError,
    PrivateKey,
    PublicKey,
    decode_openssh_line,
    parse_openssh_line,
)
from hashike.proto.wire import Reader, encode_string, encode_uint32, encode_uint64

__all__ = [
    "host_key_table",
    "CERT_ALGORITHMS",
    "CERT_KEY_TYPES",
    "FOREVER",
    "MAX_PRINCIPALS",
    "CertType",
    "Certificate",
    "CertificateFields",
    "plain_algorithm",
    "public_key_from_blob",
    "public_key_from_openssh_line",
    "sign_certificate",
]

# PROTOCOL.certkeys: certificate key type -> the key type it certifies.
CERT_KEY_TYPES: dict[str, str] = {
    "ssh-ed25519-cert-v01@openssh.com": "ssh-ed25519",
    "ssh-rsa-cert-v01@openssh.com": "ssh-rsa",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": "ecdsa-sha2-nistp521",
}
# Algorithm name (publickey auth, host key) -> (certificate key type, the plain
# signature algorithm the certified key signs with). RSA certificates have one
# name per SHA-2 hash (OpenSSH 7.8); "ssh-rsa-cert-v01" itself means SHA-1 and
# is never offered nor accepted, as plain "ssh-rsa" is not (RFC 8332 §3).
CERT_ALGORITHMS: dict[str, tuple[str, str]] = {
    "ssh-ed25519-cert-v01@openssh.com": ("ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519"),
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": (
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "ecdsa-sha2-nistp256",
    ),
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": (
        "ecdsa-sha2-nistp384-cert-v01@openssh.com",
        "ecdsa-sha2-nistp384",
    ),
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": (
        "ecdsa-sha2-nistp521-cert-v01@openssh.com",
        "ecdsa-sha2-nistp521",
    ),
    "rsa-sha2-512-cert-v01@openssh.com": ("ssh-rsa-cert-v01@openssh.com", "rsa-sha2-512"),
    "rsa-sha2-256-cert-v01@openssh.com": ("ssh-rsa-cert-v01@openssh.com", "rsa-sha2-256"),
}
FOREVER = 2**64 - 1  # PROTOCOL.certkeys: valid_before of "forever"
MAX_PRINCIPALS = 256  # OpenSSH's SSHKEY_CERT_MAX_PRINCIPALS
_MAX_NAME = 64
_MAX_FIELD = 4096  # key id, one principal, one option's data
_MAX_OPTIONS = 64
_MAX_SIGNATURE = 4096


class CertType(enum.IntEnum):
    """PROTOCOL.certkeys: SSH2_CERT_TYPE_USER / SSH2_CERT_TYPE_HOST."""

    USER = 1
    HOST = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateFields:
    """What a CA signs about a key, as :func:`sign_certificate` takes it."""

    cert_type: CertType
    key_id: str = ""
    serial: int = 0
    principals: tuple[str, ...] = ()
    valid_after: int = 0
    valid_before: int = FOREVER
    # (name, data): data is the option's value as a string ("" for a flag).
    critical_options: tuple[tuple[str, str], ...] = ()
    extensions: tuple[tuple[str, str], ...] = ()
    nonce: bytes = b"\0" * 32


def plain_algorithm(algorithm: str) -> str:
    """The plain signature algorithm behind a certificate algorithm name
    (``rsa-sha2-256-cert-v01@openssh.com`` -> ``rsa-sha2-256``); a plain name
    is returned as it is."""
    entry = CERT_ALGORITHMS.get(algorithm)
    return entry[1] if entry is not None else algorithm


def _options(reader: Reader, what: str) -> tuple[tuple[str, str], ...]:
    """PROTOCOL.certkeys: name/data pairs, each name once and in lexical order;
    data is a string holding a string (empty for a flag)."""
    options: list[tuple[str, str]] = []
    while reader.remaining:
        if len(options) >= _MAX_OPTIONS:
            raise KeyFormatError(f"certificate has more than {_MAX_OPTIONS} {what}")
        name = reader.ascii(_MAX_NAME)
        data = Reader(reader.string(_MAX_FIELD + 4))
        value = data.text(_MAX_FIELD) if data.remaining else ""
        data.check_end()
        if options and name <= options[-1][0]:
            raise KeyFormatError(f"certificate {what} are not in order or repeat {name!r}")
        options.append((name, value))
    return tuple(options)


def _encode_options(options: tuple[tuple[str, str], ...]) -> bytes:
    return b"".join(
        encode_string(name) + encode_string(encode_string(value) if value else b"")
        for name, value in sorted(options)
    )


def _principals(data: bytes) -> tuple[str, ...]:
    reader = Reader(data)
    names: list[str] = []
    while reader.remaining:
        if len(names) >= MAX_PRINCIPALS:
            raise KeyFormatError(f"certificate has more than {MAX_PRINCIPALS} principals")
        names.append(reader.text(_MAX_FIELD))
    return tuple(names)


def _key_fields(reader: Reader, blob: bytes, plain_type: str) -> bytes:
    """The certified key's fields (those of its plain blob after the type name)."""
    start = len(blob) - reader.remaining
    if plain_type == "ssh-rsa":
        reader.string(_MAX_SIGNATURE)  # e
        reader.string(_MAX_SIGNATURE)  # n
    elif plain_type == "ssh-ed25519":
        reader.string(64)
    else:
        reader.string(_MAX_NAME)  # curve
        reader.string(256)  # point
    return blob[start : len(blob) - reader.remaining]


class Certificate(PublicKey):
    """An OpenSSH certificate; equal and hashable by its blob, as any key."""

    __slots__ = (
        "_signed_len",
        "_verified",
        "fields",
        "key",
        "signature",
        "signature_key",
    )

    def __init__(
        self,
        blob: bytes,
        key: PublicKey,
        fields: CertificateFields,
        signature_key: PublicKey,
        signature: bytes,
        signed_len: int,
    ) -> None:
        """Internal: use :meth:`from_blob`."""
        cert_type = next(name for name, plain in CERT_KEY_TYPES.items() if plain == key.key_type)
        super().__init__(cert_type, blob, key._key)
        self.key = key  # the certified key
        self.fields = fields
        self.signature_key = signature_key  # the CA's key
        self.signature = signature
        self._signed_len = signed_len  # the signature covers blob[:signed_len]
        self._verified: bool | None = None

    @classmethod
    def from_blob(cls, blob: bytes) -> Certificate:
        """Parse a certificate blob (its CA signature is not checked yet:
        :meth:`signature_valid`); raises only :class:`KeyFormatError`."""
        blob = bytes(blob)
        try:
            return cls._parse(blob)
        except KeyFormatError:
            raise
        except (DecodeError, ValueError) as exc:
            raise KeyFormatError(f"invalid certificate: {exc}") from exc

    @classmethod
    def _parse(cls, blob: bytes) -> Certificate:
        reader = Reader(blob)
        cert_type_name = reader.ascii(_MAX_NAME)
        plain_type = CERT_KEY_TYPES.get(cert_type_name)
        if plain_type is None:
            raise KeyFormatError(f"unsupported certificate type {cert_type_name!r}")
        nonce = reader.string(_MAX_FIELD)
        key = PublicKey.from_blob(encode_string(plain_type) + _key_fields(reader, blob, plain_type))
        serial = reader.uint64()
        kind = reader.uint32()
        if kind not in (CertType.USER, CertType.HOST):
            raise KeyFormatError(f"unknown certificate type {kind}")
        key_id = reader.text(_MAX_FIELD)
        principals = _principals(reader.string(MAX_PRINCIPALS * (_MAX_FIELD + 4)))
        valid_after, valid_before = reader.uint64(), reader.uint64()
        critical = _options(Reader(reader.string(_MAX_OPTIONS * 2 * _MAX_FIELD)), "critical options")
        extensions = _options(Reader(reader.string(_MAX_OPTIONS * 2 * _MAX_FIELD)), "extensions")
        reader.string(_MAX_FIELD)  # reserved
        # PROTOCOL.certkeys: the CA key is a plain key; PublicKey.from_blob
        # refuses certificate types, so a CA cannot itself be a certificate.
        signature_key = PublicKey.from_blob(reader.string(_MAX_SIGNATURE))
        signed_len = len(blob) - reader.remaining
        signature = reader.string(_MAX_SIGNATURE)
        reader.check_end()
        fields = CertificateFields(
            cert_type=CertType(kind),
            key_id=key_id,
            serial=serial,
            principals=principals,
            valid_after=valid_after,
            valid_before=valid_before,
            critical_options=critical,
            extensions=extensions,
            nonce=nonce,
        )
        cert = cls(blob, key, fields, signature_key, signature, signed_len)
        return cert

    @classmethod
    def from_openssh_line(cls, line: str) -> Certificate:
        """Parse a ``-cert.pub`` line (``type base64 [comment]``)."""
        cert = public_key_from_openssh_line(line)[0]
        if not isinstance(cert, Certificate):
            raise KeyFormatError("not a certificate")
        return cert

    def signature_valid(self) -> bool:
        """Does the CA's signature verify (PROTOCOL.certkeys: over every field
        up to and including the signature key)? The CA signs with its plain
        algorithms (rsa-sha2-256/512 for RSA, never SHA-1)."""
        if self._verified is None:
            ca = self.signature_key
            algorithms = ("rsa-sha2-512", "rsa-sha2-256") if ca.key_type == "ssh-rsa" else (ca.key_type,)
            self._verified = ca.verify(self.signature, self.blob[: self._signed_len], algorithms)
        return self._verified

    def verify(self, signature_blob: bytes, data: bytes, allowed_algorithms: tuple[str, ...]) -> bool:
        """A signature by the certified key, under certificate algorithm names."""
        plain = tuple(
            CERT_ALGORITHMS[name][1]
            for name in allowed_algorithms
            if CERT_ALGORITHMS.get(name, ("",))[0] == self.key_type
        )
        return self.key.verify(signature_blob, data, plain)

    def fingerprint(self) -> str:
        """The certified key's fingerprint, as ssh and sshd print a certificate's."""
        return self.key.fingerprint()

    def check(self, *, cert_type: CertType, now: int, name: str | None = None) -> str | None:
        """Why this certificate is not valid as ``cert_type`` at ``now`` (Unix
        seconds) for ``name`` (None: any), in sshd's words; None if it is.
        Host principals may be wildcard patterns only where the caller
        matches them itself. An empty principal list is valid for anyone,
        as in OpenSSH, where the caller does not require one."""
        fields = self.fields
        if fields.cert_type != cert_type:
            kind = "host" if cert_type is CertType.HOST else "user"
            return f"Certificate invalid: not a {kind} certificate"
        if now < fields.valid_after:
            return "Certificate invalid: not yet valid"
        if now >= fields.valid_before:
            return "Certificate invalid: expired"
        if name is not None and fields.principals and name not in fields.principals:
            return "Certificate invalid: name is not a listed principal"
        return None

    def critical_option(self, name: str) -> str | None:
        """The value of a critical option, None if absent."""
        return dict(self.fields.critical_options).get(name)

    def has_extension(self, name: str) -> bool:
        return any(ext == name for ext, _ in self.fields.extensions)

    def __repr__(self) -> str:
        return f"<Certificate {self.key_type} {self.fingerprint()} id {self.fields.key_id!r}>"


def public_key_from_blob(blob: bytes) -> PublicKey:
    """A key blob from the wire: a :class:`Certificate` for a certificate
    type, a plain :class:`PublicKey` otherwise; raises only KeyFormatError."""
    try:
        name = Reader(blob).ascii(_MAX_NAME)
    except DecodeError as exc:
        raise KeyFormatError(f"invalid public key: {exc}") from exc
    if name in CERT_KEY_TYPES:
        return Certificate.from_blob(blob)
    return PublicKey.from_blob(blob)


def public_key_from_openssh_line(line: str) -> tuple[PublicKey, str]:
    """``"type base64 [comment]"``, where the type may be a certificate type:
    the key (or certificate) and its comment."""
    parts = line.strip().split(None, 1)
    if parts and parts[0] in CERT_KEY_TYPES:
        key_type, blob, comment = decode_openssh_line(line)
        cert = Certificate.from_blob(blob)
        if cert.key_type != key_type:
            raise KeyFormatError(f"key type {key_type!r} does not match the key data ({cert.key_type})")
        return cert, comment
    return parse_openssh_line(line)


def sign_certificate(key: PublicKey, ca: PrivateKey, fields: CertificateFields) -> Certificate:
    """Make a certificate for ``key`` signed by ``ca`` (as ``ssh-keygen -s``
    does; RSA CAs sign with rsa-sha2-512)."""
    if isinstance(key, Certificate):
        raise ValueError("a certificate cannot certify a certificate")
    cert_type = next(name for name, plain in CERT_KEY_TYPES.items() if plain == key.key_type)
    key_fields = key.blob[4 + len(key.key_type) :]
    principals = b"".join(encode_string(p) for p in fields.principals)
    body = (
        encode_string(cert_type)
        + encode_string(fields.nonce)
        + key_fields
        + encode_uint64(fields.serial)
        + encode_uint32(fields.cert_type)
        + encode_string(fields.key_id)
        + encode_string(principals)
        + encode_uint64(fields.valid_after)
        + encode_uint64(fields.valid_before)
        + encode_string(_encode_options(fields.critical_options))
        + encode_string(_encode_options(fields.extensions))
        + encode_string(b"")  # reserved
        + encode_string(ca.public_key.blob)
    )
    signature = ca.sign(body, ca.signature_algorithms()[0])
    return Certificate.from_blob(body + encode_string(signature))


def host_key_table(
    keys: Sequence[HostKeySigner], certificates: Sequence[Certificate]
) -> dict[str, tuple[HostKeySigner, bytes]]:
    """Server: host key algorithm -> (the key that signs, the K_S blob sent).
    A certificate (sshd's HostCertificate) adds its own algorithm names for
    the key it certifies; one that certifies none of ours is left out."""
    table: dict[str, tuple[HostKeySigner, bytes]] = {}
    for key in keys:
        for algorithm in key.signature_algorithms():
            table.setdefault(algorithm, (key, key.public_key.blob))
    for cert in certificates:
        for key in keys:
            if key.public_key != cert.key:
                continue
            for algorithm, (cert_type, plain) in CERT_ALGORITHMS.items():
                if cert_type == cert.key_type and plain in key.signature_algorithms():
                    table.setdefault(algorithm, (key, cert.blob))
    return table
