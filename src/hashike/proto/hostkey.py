"""SSH public keys and signatures (RFC 4253 §6.6), as the transport and user
authentication use them: host keys, user keys, signature blobs, fingerprints.

A :class:`PublicKey` is built from its RFC 4253 §6.6 blob, which may come from a
hostile peer: :meth:`PublicKey.from_blob` is total (only :class:`KeyFormatError`
escapes) and :meth:`PublicKey.verify` only ever answers ``True`` or ``False``.
A :class:`PrivateKey` wraps a ``cryptography`` key in memory and signs; reading,
writing and generating key files is :mod:`hashike.keys.keypair`'s job. Every
primitive comes from ``cryptography``. Supported: ssh-ed25519 (RFC 8709), ssh-rsa
keys with rsa-sha2-256/512 signatures only (RFC 8332), ecdsa-sha2-nistp256/384/521
(RFC 5656).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import NamedTuple, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from hashike.proto.errors import DecodeError
from hashike.proto.wire import Reader, encode_mpint, encode_string

__all__ = [
    "MAX_KEY_LINE",
    "RSA_MAX_BITS",
    "HostKeySigner",
    "KeyFormatError",
    "PrivateKey",
    "PublicKey",
    "decode_openssh_line",
    "ecdsa_curve",
    "parse_openssh_line",
]


class KeyFormatError(DecodeError):
    """A public key or signature blob (from the wire or a .pub line) is malformed or unsupported."""


class _Curve(NamedTuple):
    name: str  # RFC 5656 §6.1 identifier
    curve: ec.EllipticCurve
    hash: hashes.HashAlgorithm  # RFC 5656 §6.2.1: the hash follows the curve size
    point_len: int  # uncompressed SEC1 point: 0x04 || X || Y


_ECDSA = {
    "ecdsa-sha2-nistp256": _Curve("nistp256", ec.SECP256R1(), hashes.SHA256(), 65),
    "ecdsa-sha2-nistp384": _Curve("nistp384", ec.SECP384R1(), hashes.SHA384(), 97),
    "ecdsa-sha2-nistp521": _Curve("nistp521", ec.SECP521R1(), hashes.SHA512(), 133),
}
_ECDSA_BY_CURVE = {spec.curve.name: key_type for key_type, spec in _ECDSA.items()}
# RFC 8332 §3: "ssh-rsa" (SHA-1) signatures are never offered nor accepted.
_RSA_HASHES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}
# Which signature algorithms each key type may produce, in our order of preference.
_SIG_ALGS: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
    **{key_type: (key_type,) for key_type in _ECDSA},
}
_RSA_MIN_BITS, RSA_MAX_BITS = 1024, 16384
# The public exponent's cost is the verifier's: a peer's 3071-bit e made each
# verification 17 times as slow. OpenSSL refuses e above 64 bits for moduli
# over 3072 bits (OPENSSL_RSA_MAX_PUBEXP_BITS); we refuse it for all, and an
# even or trivial e (RFC 8017 §3.1: 3 <= e, odd) is no RSA key at all.
_RSA_MAX_E_BITS = 64
_MPINT_LIMIT = RSA_MAX_BITS // 8 + 1  # room for the sign byte
MAX_KEY_LINE = 64 * 1024  # one .pub line, and so a whole .pub file


_PublicKeyTypes = Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_PrivateKeyTypes = Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def ecdsa_curve(key_type: str) -> ec.EllipticCurve | None:
    """The curve of an ``ecdsa-sha2-*`` key type; None for any other type."""
    spec = _ECDSA.get(key_type)
    return spec.curve if spec is not None else None


def _public_blob(key: _PublicKeyTypes) -> bytes:
    """Encode a ``cryptography`` public key as its SSH wire blob."""
    if isinstance(key, Ed25519PublicKey):
        # RFC 8709 §4: string "ssh-ed25519", string key (32 octets).
        return encode_string("ssh-ed25519") + encode_string(key.public_bytes_raw())
    if isinstance(key, rsa.RSAPublicKey):
        # RFC 4253 §6.6: string "ssh-rsa", mpint e, mpint n.
        numbers = key.public_numbers()
        return encode_string("ssh-rsa") + encode_mpint(numbers.e) + encode_mpint(numbers.n)
    key_type = _ECDSA_BY_CURVE.get(key.curve.name)
    if key_type is None:
        raise ValueError("unknown or unsupported key type")
    # RFC 5656 §3.1: string type, string curve identifier, string Q (uncompressed point).
    point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return encode_string(key_type) + encode_string(_ECDSA[key_type].name) + encode_string(point)


def _parse_blob(blob: bytes) -> tuple[str, _PublicKeyTypes]:
    """Decode a public key blob; raises DecodeError, ValueError or UnsupportedAlgorithm."""
    reader = Reader(blob)
    key_type = reader.ascii(64)
    key: _PublicKeyTypes
    if key_type == "ssh-ed25519":
        raw = reader.string(64)
        if len(raw) != 32:
            raise KeyFormatError(f"ssh-ed25519 key of {len(raw)} bytes, expected 32")
        key = Ed25519PublicKey.from_public_bytes(raw)
    elif key_type == "ssh-rsa":
        e, n = reader.mpint(_MPINT_LIMIT), reader.mpint(_MPINT_LIMIT)
        if e <= 0 or n <= 0:
            raise KeyFormatError("RSA key with a negative or zero component")
        if not _RSA_MIN_BITS <= n.bit_length() <= RSA_MAX_BITS:
            raise KeyFormatError(f"RSA key of {n.bit_length()} bits is not supported")
        if e < 3 or e % 2 == 0 or e.bit_length() > _RSA_MAX_E_BITS:
            raise KeyFormatError(f"RSA public exponent of {e.bit_length()} bits, or even, is not supported")
        key = rsa.RSAPublicNumbers(e, n).public_key()
    elif key_type in _ECDSA:
        spec = _ECDSA[key_type]
        if reader.ascii(64) != spec.name:
            raise KeyFormatError(f"{key_type} key names the wrong curve")
        point = reader.string(256)
        # OpenSSH and we only emit uncompressed points; insisting keeps the blob canonical.
        if len(point) != spec.point_len or point[0] != 4:
            raise KeyFormatError(f"{key_type} key is not an uncompressed point")
        key = ec.EllipticCurvePublicKey.from_encoded_point(spec.curve, point)  # checks it is on the curve
    else:
        raise KeyFormatError(f"unsupported public key type {key_type!r}")
    reader.check_end()
    # RFC 4251 §5: an mpint with superfluous leading bytes is malformed; since keys
    # compare by blob, only the canonical encoding is accepted.
    if _public_blob(key) != blob:
        raise KeyFormatError("public key blob is not canonically encoded")
    return key_type, key


class PublicKey:
    """An SSH public key; equal and hashable by its wire blob."""

    __slots__ = ("_key", "blob", "key_type")

    def __init__(self, key_type: str, blob: bytes, key: _PublicKeyTypes) -> None:
        """Internal: use :meth:`from_blob` or :meth:`from_openssh_line`."""
        self.key_type = key_type
        self.blob = blob
        self._key = key

    @classmethod
    def from_blob(cls, blob: bytes) -> PublicKey:
        """Parse and validate a public key blob; raises only :class:`KeyFormatError`."""
        try:
            key_type, key = _parse_blob(bytes(blob))
        except KeyFormatError:
            raise
        except (DecodeError, ValueError, UnsupportedAlgorithm) as exc:
            raise KeyFormatError(f"invalid public key: {exc}") from exc
        return cls(key_type, bytes(blob), key)

    @classmethod
    def from_openssh_line(cls, line: str) -> PublicKey:
        """Parse ``"type base64 [comment]"`` (a .pub file line, authorized_keys without options)."""
        return parse_openssh_line(line)[0]

    def verify(self, signature_blob: bytes, data: bytes, allowed_algorithms: tuple[str, ...]) -> bool:
        """Check an RFC 4253 §6.6 signature blob over ``data``. Never raises: False on any doubt."""
        try:
            reader = Reader(signature_blob)
            algorithm = reader.ascii(64)
            signature = reader.string(_MPINT_LIMIT + 64)
            reader.check_end()
            if algorithm not in allowed_algorithms or algorithm not in _SIG_ALGS[self.key_type]:
                return False
            self._verify(algorithm, signature, data)
        except (DecodeError, InvalidSignature, ValueError, TypeError):
            return False
        return True

    def _verify(self, algorithm: str, signature: bytes, data: bytes) -> None:
        key = self._key
        if isinstance(key, Ed25519PublicKey):
            # RFC 8709 §6: the signature is exactly 64 octets.
            if len(signature) != 64:
                raise InvalidSignature
            key.verify(signature, data)
        elif isinstance(key, rsa.RSAPublicKey):
            # RFC 8332 §3: S is as long as the modulus. Like OpenSSH, accept a shorter S
            # (some signers drop leading zero octets) by restoring them.
            size = (key.key_size + 7) // 8
            if len(signature) > size:
                raise InvalidSignature
            key.verify(signature.rjust(size, b"\0"), data, padding.PKCS1v15(), _RSA_HASHES[algorithm])
        else:
            # RFC 5656 §3.1.2: the signature is mpint r || mpint s, both positive.
            reader = Reader(signature)
            r, s = reader.mpint(72), reader.mpint(72)
            reader.check_end()
            if r <= 0 or s <= 0:
                raise InvalidSignature
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_ECDSA[self.key_type].hash))

    def fingerprint(self) -> str:
        """The SHA256 fingerprint as ``ssh-keygen -l`` prints it."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode("ascii")
        return "SHA256:" + digest.rstrip("=")

    def openssh_line(self, comment: str = "") -> str:
        """``"type base64 comment"``, the .pub / authorized_keys form (no trailing newline)."""
        if "\n" in comment or "\r" in comment:
            raise ValueError("a key comment cannot contain a line break")
        line = f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"
        return f"{line} {comment}" if comment else line

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self.blob == other.blob

    def __hash__(self) -> int:
        return hash(self.blob)

    def __repr__(self) -> str:
        return f"<PublicKey {self.key_type} {self.fingerprint()}>"


def decode_openssh_line(line: str) -> tuple[str, bytes, str]:
    """Split ``"type base64 [comment]"`` into the type, the decoded blob and the comment."""
    if len(line) > MAX_KEY_LINE or "\n" in line.strip():
        raise KeyFormatError("public key line too long")
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise KeyFormatError("public key line needs a key type and base64 data")
    try:
        blob = binascii.a2b_base64(parts[1].encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise KeyFormatError("public key data is not valid base64") from exc
    return parts[0], blob, parts[2].strip() if len(parts) == 3 else ""


def parse_openssh_line(line: str) -> tuple[PublicKey, str]:
    """Parse ``"type base64 [comment]"`` into the key and its (possibly empty) comment."""
    key_type, blob, comment = decode_openssh_line(line)
    key = PublicKey.from_blob(blob)
    if key.key_type != key_type:
        raise KeyFormatError(f"key type {key_type!r} does not match the key data ({key.key_type})")
    return key, comment


class HostKeySigner(Protocol):
    """What a server's transport signs exchange hashes with (RFC 4253 §8): a
    :class:`PrivateKey`, or a stand-in that asks a key held elsewhere (a
    process that dropped its privileges asks the one that kept the keys)."""

    @property
    def public_key(self) -> PublicKey: ...

    def signature_algorithms(self) -> tuple[str, ...]: ...

    def sign(self, data: bytes, algorithm: str) -> bytes:
        """The RFC 4253 §6.6 signature blob, or an SSHError if none can be made."""
        ...


class PrivateKey:
    """A private key that signs with the SSH signature algorithms of its type."""

    __slots__ = ("_key", "comment", "key_type", "public_key")

    def __init__(self, key: PrivateKeyTypes, comment: str = "") -> None:
        """Wrap a ``cryptography`` private key; ValueError if its type is not supported."""
        if not isinstance(key, Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("unknown or unsupported key type")
        try:
            self.public_key = PublicKey.from_blob(_public_blob(key.public_key()))
        except KeyFormatError as exc:
            raise ValueError(str(exc)) from exc
        self._key: _PrivateKeyTypes = key
        self.key_type = self.public_key.key_type
        self.comment = comment

    @property
    def crypto_key(self) -> _PrivateKeyTypes:
        """The wrapped ``cryptography`` key, for writing it to a key file."""
        return self._key

    def signature_algorithms(self) -> tuple[str, ...]:
        """The signature algorithms this key can produce, most preferred first."""
        return _SIG_ALGS[self.key_type]

    def sign(self, data: bytes, algorithm: str) -> bytes:
        """Sign ``data``; returns the RFC 4253 §6.6 blob ``string(algorithm) || string(signature)``."""
        if algorithm not in self.signature_algorithms():
            raise ValueError(f"a {self.key_type} key cannot make {algorithm!r} signatures")
        key = self._key
        if isinstance(key, Ed25519PrivateKey):
            signature = key.sign(data)  # RFC 8709 §6
        elif isinstance(key, rsa.RSAPrivateKey):
            signature = key.sign(data, padding.PKCS1v15(), _RSA_HASHES[algorithm])  # RFC 8332 §3
        else:
            # RFC 5656 §3.1.2: cryptography gives DER; SSH wants mpint r || mpint s.
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_ECDSA[self.key_type].hash)))
            signature = encode_mpint(r) + encode_mpint(s)
        return encode_string(algorithm) + encode_string(signature)

    def __repr__(self) -> str:
        return f"<PrivateKey {self.key_type} {self.public_key.fingerprint()}>"
