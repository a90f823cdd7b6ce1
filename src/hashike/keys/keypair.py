"""SSH public and private keys: wire blobs, signatures, and OpenSSH key files.

A :class:`PublicKey` is built from its RFC 4253 §6.6 blob, which may come from a
hostile peer: :meth:`PublicKey.from_blob` is total (only :class:`KeyFormatError`
escapes) and :meth:`PublicKey.verify` only ever answers ``True`` or ``False``.
A :class:`PrivateKey` wraps a ``cryptography`` key; every primitive and every key
file format comes from ``cryptography`` (bcrypt KDF for encrypted OpenSSH keys).
Supported: ssh-ed25519 (RFC 8709), ssh-rsa keys with rsa-sha2-256/512 signatures
only (RFC 8332), ecdsa-sha2-nistp256/384/521 (RFC 5656).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from hashike.keys.textfile import read_bounded
from hashike.proto.errors import DecodeError, SSHError
from hashike.proto.wire import Reader, encode_mpint, encode_string

__all__ = [
    "KeyFileError",
    "KeyFormatError",
    "PassphraseRequired",
    "PrivateKey",
    "PublicKey",
    "generate_private_key",
    "load_private_key",
    "load_public_key_file",
    "write_private_key",
]


class KeyFileError(SSHError):
    """A key file could not be read, decrypted or written; the message is meant for the user."""


class PassphraseRequired(KeyFileError):
    """The private key file is encrypted and no passphrase was given: prompt and try again."""

    def __init__(self, path: str) -> None:
        super().__init__(f'Load key "{path}": passphrase required to decrypt private key')
        self.path = path


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
_RSA_MIN_BITS, _RSA_MAX_BITS, _RSA_GENERATE_MIN_BITS = 1024, 16384, 3072
_MPINT_LIMIT = _RSA_MAX_BITS // 8 + 1  # room for the sign byte
_MAX_LINE = 64 * 1024
_MAX_KEY_FILE = 1024 * 1024
_WRONG_PASSPHRASE = "incorrect passphrase supplied to decrypt private key"  # OpenSSH's wording

_PublicKeyTypes = Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_PrivateKeyTypes = Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


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
        if not _RSA_MIN_BITS <= n.bit_length() <= _RSA_MAX_BITS:
            raise KeyFormatError(f"RSA key of {n.bit_length()} bits is not supported")
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
        return _parse_line(line)[0]

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


def _parse_line(line: str) -> tuple[PublicKey, str]:
    """Parse a .pub line into the key and its (possibly empty) comment."""
    if len(line) > _MAX_LINE or "\n" in line.strip():
        raise KeyFormatError("public key line too long")
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise KeyFormatError("public key line needs a key type and base64 data")
    try:
        blob = binascii.a2b_base64(parts[1].encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise KeyFormatError("public key data is not valid base64") from exc
    key = PublicKey.from_blob(blob)
    if key.key_type != parts[0]:
        raise KeyFormatError(f"key type {parts[0]!r} does not match the key data ({key.key_type})")
    return key, parts[2].strip() if len(parts) == 3 else ""


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


def generate_private_key(
    key_type: str = "ssh-ed25519", bits: int | None = None, comment: str = ""
) -> PrivateKey:
    """Make a new key. ``key_type`` is an SSH name or ``ed25519``/``rsa``/``ecdsa`` (as ssh-keygen -t).

    RSA defaults to 3072 bits and refuses fewer; ECDSA ``bits`` picks the curve (256, 384, 521).
    """
    if key_type in ("ssh-ed25519", "ed25519"):
        if bits not in (None, 256):
            raise ValueError("ed25519 keys are always 256 bits")
        return PrivateKey(Ed25519PrivateKey.generate(), comment)
    if key_type in ("ssh-rsa", "rsa"):
        bits = _RSA_GENERATE_MIN_BITS if bits is None else bits
        if not _RSA_GENERATE_MIN_BITS <= bits <= _RSA_MAX_BITS:
            raise ValueError(f"RSA keys must be {_RSA_GENERATE_MIN_BITS} to {_RSA_MAX_BITS} bits")
        return PrivateKey(rsa.generate_private_key(65537, bits), comment)
    if key_type == "ecdsa":
        key_type = f"ecdsa-sha2-nistp{bits or 256}"
    spec = _ECDSA.get(key_type)
    if spec is None or (bits is not None and key_type != f"ecdsa-sha2-nistp{bits}"):
        raise ValueError(f"unsupported key type {key_type!r} / bits {bits}")
    return PrivateKey(ec.generate_private_key(spec.curve), comment)


def _read_file(path: str, limit: int) -> bytes:
    try:
        data, more = read_bounded(path, limit)
    except OSError as exc:
        raise KeyFileError(f'Load key "{path}": {exc.strerror or exc}') from exc
    if more:
        raise KeyFileError(f'Load key "{path}": invalid format')
    return data


def _deserialize(data: bytes, passphrase: bytes | None) -> PrivateKeyTypes:
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
        return serialization.load_ssh_private_key(data, passphrase)
    return serialization.load_pem_private_key(data, passphrase)  # PKCS#1, SEC1 or PKCS#8 PEM


def _is_encrypted(data: bytes) -> bool:
    try:
        _deserialize(data, None)
    except TypeError:  # cryptography's way of saying "needs a password"
        return True
    except (ValueError, UnsupportedAlgorithm):
        pass
    return False


def _load(path: str, data: bytes, passphrase: bytes | None) -> PrivateKeyTypes:
    try:
        return _deserialize(data, passphrase)
    except TypeError:
        if passphrase is None:
            raise PassphraseRequired(path) from None
    except ValueError as exc:
        if passphrase is not None and _is_encrypted(data):
            raise KeyFileError(f'Load key "{path}": {_WRONG_PASSPHRASE}') from None
        raise KeyFileError(f'Load key "{path}": invalid format') from exc
    except UnsupportedAlgorithm as exc:
        raise KeyFileError(f'Load key "{path}": unknown or unsupported key type') from exc
    # A passphrase for a key that is not encrypted: ignore it, as ssh-keygen -P does.
    return _load(path, data, None)


def _first_line(text: str) -> str:
    """The first line of a .pub file that is neither blank nor a # comment."""
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line
    return ""


def _sibling_comment(path: str, public_key: PublicKey) -> str:
    """The comment from ``path.pub`` if it holds the same key (the OpenSSH writer in
    ``cryptography`` neither stores nor returns a private key's comment)."""
    try:
        with open(path + ".pub", "rb") as file:
            key, comment = _parse_line(_first_line(file.read(_MAX_LINE).decode("utf-8")))
    except (OSError, UnicodeDecodeError, KeyFormatError):
        return ""
    return comment if key == public_key else ""


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> PrivateKey:
    """Load an OpenSSH or PEM private key file.

    Raises :class:`PassphraseRequired` if it is encrypted and no passphrase was given,
    :class:`KeyFileError` for anything else (unreadable, wrong passphrase, bad format, DSA).
    """
    name = os.fspath(path)
    key = _load(name, _read_file(name, _MAX_KEY_FILE), passphrase or None)
    try:
        private = PrivateKey(key)
    except ValueError as exc:
        raise KeyFileError(f'Load key "{name}": {exc}') from exc
    private.comment = _sibling_comment(name, private.public_key)
    return private


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    # Write a fresh temp file created with its final mode, then rename it over the
    # target: a reader never sees a half-written key, nor a key with loose permissions.
    directory, base = os.path.split(path)
    temp = os.path.join(directory, f".{base}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    except OSError as exc:
        raise KeyFileError(f'Saving key "{path}" failed: {exc.strerror or exc}') from exc


def write_private_key(key: PrivateKey, path: str | os.PathLike[str], passphrase: bytes | None = None) -> None:
    """Write ``key`` in OpenSSH format (mode 0600; bcrypt-KDF encrypted if ``passphrase``) and
    ``path.pub`` (mode 0644, subject to the umask). Existing files are replaced."""
    name = os.fspath(path)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    data = key._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
    _write_atomic(name, data, 0o600)
    _write_atomic(name + ".pub", (key.public_key.openssh_line(key.comment) + "\n").encode("utf-8"), 0o644)


def load_public_key_file(path: str | os.PathLike[str]) -> PublicKey:
    """Load a .pub file (``type base64 [comment]``); :class:`KeyFileError` if unreadable or malformed."""
    name = os.fspath(path)
    data = _read_file(name, _MAX_LINE)
    try:
        return _parse_line(_first_line(data.decode("utf-8")))[0]
    except (UnicodeDecodeError, KeyFormatError) as exc:
        raise KeyFileError(f'Load key "{name}": invalid format') from exc
