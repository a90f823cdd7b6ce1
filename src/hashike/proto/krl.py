"""OpenSSH key revocation lists (PROTOCOL.krl), as ``ssh-keygen -k`` writes them.

A KRL is a header (magic, format version, KRL version, date, flags, comment)
and sections: certificates revoked by serial (lists, ranges, bitmaps) or
key id under one CA (or under every CA, for an empty CA key), plain keys
revoked by their blob or by their SHA-1 or SHA-256 hash, and extensions.
:func:`parse_krl` is pure and total over any input, as the certificate
parser is: only :class:`KRLFormatError` escapes, every length is checked
before use and the input and entry counts are capped. Unknown critical
extensions and signature sections (which OpenSSH 9.4 refuses too) make the
whole KRL invalid, so that a list we cannot fully understand never passes
a key; unknown non-critical ones (Bloom filters) are skipped.

:meth:`KRL.revokes` answers as sshd does (ssh_krl_check_key): a plain key
by blob or hash; a certificate if its CA key or the key it certifies is
revoked, or a section for its CA revokes its serial (never serial 0, the
serial of a CA that gives none) or its key id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from hashike.proto.certs import Certificate
from hashike.proto.errors import DecodeError
from hashike.proto.hostkey import KeyFormatError, PublicKey
from hashike.proto.wire import Reader

__all__ = [
    "KRL",
    "KRL_MAGIC",
    "MAX_KRL_ENTRIES",
    "MAX_KRL_SIZE",
    "CertificateRevocations",
    "KRLFormatError",
    "parse_krl",
]

KRL_MAGIC = b"SSHKRL\n\0"
_FORMAT_VERSION = 1
MAX_KRL_SIZE = 16 * 1024 * 1024
MAX_KRL_ENTRIES = 1 << 20  # serials, ranges, key ids, keys and hashes together
_MAX_KEY = 16 * 1024

# PROTOCOL.krl §1 section types, §2 certificate subsection types.
_CERTIFICATES, _EXPLICIT_KEY, _SHA1, _SIGNATURE, _SHA256, _EXTENSION = 1, 2, 3, 4, 5, 255
_SERIAL_LIST, _SERIAL_RANGE, _SERIAL_BITMAP, _KEY_ID, _CERT_EXTENSION = 0x20, 0x21, 0x22, 0x23, 0x39


class KRLFormatError(KeyFormatError):
    """The data is not a KRL we can use, with the reason."""


@dataclass(frozen=True, slots=True)
class CertificateRevocations:
    """One certificate section: what it revokes of one CA's certificates
    (``ca`` is the CA key blob; empty for every CA)."""

    ca: bytes
    ranges: tuple[tuple[int, int], ...] = ()  # inclusive (lowest, highest); a list entry is (n, n)
    bitmaps: tuple[tuple[int, int], ...] = ()  # (offset, bits): bit N revokes serial offset + N
    key_ids: frozenset[bytes] = frozenset()

    def revokes(self, cert: Certificate) -> bool:
        if self.ca and self.ca != cert.signature_key.blob:
            return False
        if cert.fields.key_id.encode("utf-8") in self.key_ids:
            return True
        serial = cert.fields.serial
        if serial == 0:  # sshd ignores it: the serial of certificates that have none
            return False
        if any(low <= serial <= high for low, high in self.ranges):
            return True
        return any(serial >= offset and (bits >> (serial - offset)) & 1 for offset, bits in self.bitmaps)


@dataclass(frozen=True, slots=True)
class KRL:
    """A parsed KRL."""

    version: int
    generated: int  # Unix seconds
    comment: str
    certificates: tuple[CertificateRevocations, ...] = ()
    keys: frozenset[bytes] = frozenset()  # plain key blobs
    sha1: frozenset[bytes] = frozenset()
    sha256: frozenset[bytes] = frozenset()

    def _revokes_plain(self, key: PublicKey) -> bool:
        blob = key.blob
        return (
            blob in self.keys
            or hashlib.sha256(blob).digest() in self.sha256
            or hashlib.sha1(blob).digest() in self.sha1  # PROTOCOL.krl §4 names SHA-1
        )

    def revokes(self, key: PublicKey) -> bool:
        """Is ``key`` (a plain key or a certificate) revoked?"""
        if isinstance(key, Certificate):
            return (
                self._revokes_plain(key.signature_key)
                or self._revokes_plain(key.key)
                or any(section.revokes(key) for section in self.certificates)
            )
        return self._revokes_plain(key)


class _Budget:
    """The entry cap, shared by every section of one KRL."""

    def __init__(self) -> None:
        self.left = MAX_KRL_ENTRIES

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise KRLFormatError(f"KRL has more than {MAX_KRL_ENTRIES} entries")


def _extension(data: bytes, where: str) -> None:
    """PROTOCOL.krl §2.5 / §5: an extension we know none of; refused if critical."""
    reader = Reader(data)
    name = reader.string(1024)
    critical = reader.boolean()
    reader.string(len(data))
    reader.check_end()
    if critical:
        raise KRLFormatError(f"unsupported critical {where} extension {name.decode('ascii', 'replace')!r}")


def _strings(data: bytes, budget: _Budget, check: Callable[[bytes], None]) -> list[bytes]:
    """A section of one or more strings (keys, hashes, key ids)."""
    reader = Reader(data)
    items: list[bytes] = []
    while reader.remaining:
        budget.take()
        item = reader.string(_MAX_KEY)
        check(item)
        items.append(item)
    if not items:
        raise KRLFormatError("empty KRL section")
    return items


def _certificates(data: bytes, budget: _Budget) -> CertificateRevocations:
    """PROTOCOL.krl §2: the CA key, a reserved string, then subsections."""
    reader = Reader(data)
    ca = reader.string(_MAX_KEY)
    if ca:
        PublicKey.from_blob(ca)  # a plain key (KeyFormatError otherwise)
    reader.string(len(data))  # reserved
    ranges: list[tuple[int, int]] = []
    bitmaps: list[tuple[int, int]] = []
    key_ids: set[bytes] = set()
    while reader.remaining:
        kind = reader.byte()
        sub = Reader(reader.string(len(data)))
        if kind == _SERIAL_LIST:
            while sub.remaining:
                budget.take()
                serial = sub.uint64()
                ranges.append((serial, serial))
        elif kind == _SERIAL_RANGE:
            budget.take()
            low, high = sub.uint64(), sub.uint64()
            if low > high:
                raise KRLFormatError("KRL serial range is inverted")
            ranges.append((low, high))
        elif kind == _SERIAL_BITMAP:
            budget.take()
            offset = sub.uint64()
            bits = sub.mpint(len(data))
            if bits < 0:
                raise KRLFormatError("KRL serial bitmap is negative")
            bitmaps.append((offset, bits))
        elif kind == _KEY_ID:
            key_ids.update(_strings(sub.rest(), budget, lambda _item: None))
        elif kind == _CERT_EXTENSION:
            _extension(sub.rest(), "certificate section")
        else:
            raise KRLFormatError(f"unknown KRL certificate section type {kind:#x}")
        sub.check_end()
    return CertificateRevocations(ca, tuple(ranges), tuple(bitmaps), frozenset(key_ids))


def _plain_key(blob: bytes) -> None:
    PublicKey.from_blob(blob)  # PROTOCOL.krl §3: a raw key, never a certificate


def _hashes(size: int) -> Callable[[bytes], None]:
    previous = [b""]

    def check(digest: bytes) -> None:
        # PROTOCOL.krl §4: fixed size, in increasing numeric order.
        if len(digest) != size or digest <= previous[0]:
            raise KRLFormatError("KRL fingerprint section is malformed or out of order")
        previous[0] = digest

    return check


def _parse(data: bytes) -> KRL:
    reader = Reader(data)
    if reader.raw(len(KRL_MAGIC)) != KRL_MAGIC:
        raise KRLFormatError("not a KRL (bad magic)")
    if reader.uint32() != _FORMAT_VERSION:
        raise KRLFormatError("unsupported KRL format version")
    version, generated = reader.uint64(), reader.uint64()
    reader.uint64()  # flags: none defined
    reader.string(len(data))  # reserved
    comment = reader.text(len(data))
    budget = _Budget()
    certificates: list[CertificateRevocations] = []
    found: dict[int, set[bytes]] = {_EXPLICIT_KEY: set(), _SHA1: set(), _SHA256: set()}
    checks = {_EXPLICIT_KEY: _plain_key, _SHA1: _hashes(20), _SHA256: _hashes(32)}
    while reader.remaining:
        kind = reader.byte()
        if kind == _SIGNATURE:
            raise KRLFormatError("KRL signatures are not supported")
        section = reader.string(len(data))
        if kind == _CERTIFICATES:
            certificates.append(_certificates(section, budget))
        elif kind in found:
            found[kind].update(_strings(section, budget, checks[kind]))
        elif kind == _EXTENSION:
            _extension(section, "KRL")
        else:
            raise KRLFormatError(f"unknown KRL section type {kind}")
    return KRL(
        version,
        generated,
        comment,
        tuple(certificates),
        frozenset(found[_EXPLICIT_KEY]),
        frozenset(found[_SHA1]),
        frozenset(found[_SHA256]),
    )


def parse_krl(data: bytes) -> KRL:
    """Parse a binary KRL; raises only :class:`KRLFormatError`."""
    data = bytes(data)
    if len(data) > MAX_KRL_SIZE:
        raise KRLFormatError(f"KRL larger than {MAX_KRL_SIZE} bytes")
    try:
        return _parse(data)
    except KRLFormatError:
        raise
    except (DecodeError, KeyFormatError, ValueError) as exc:
        raise KRLFormatError(f"invalid KRL: {exc}") from exc
