"""OpenSSH key files: load and write private keys (OpenSSH format, bcrypt-KDF
encrypted with a passphrase, or PEM), load .pub files, generate new keys.

The keys themselves, their wire blobs and signatures are
:mod:`hashike.proto.hostkey`'s; this module only turns them into files and
back. Every key file format comes from ``cryptography``.
"""

from __future__ import annotations

import contextlib
import os
import secrets

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from hashike.keys.textfile import read_bounded
from hashike.proto.certs import public_key_from_openssh_line
from hashike.proto.errors import SSHError
from hashike.proto.hostkey import (
    MAX_KEY_LINE,
    RSA_MAX_BITS,
    KeyFormatError,
    PrivateKey,
    PublicKey,
    ecdsa_curve,
    parse_openssh_line,
)

__all__ = [
    "KeyFileError",
    "KeyFormatError",  # re-exported from hashike.proto.hostkey, with the key types
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


_RSA_GENERATE_MIN_BITS = 3072
_MAX_KEY_FILE = 1024 * 1024
_WRONG_PASSPHRASE = "incorrect passphrase supplied to decrypt private key"  # OpenSSH's wording


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
        if not _RSA_GENERATE_MIN_BITS <= bits <= RSA_MAX_BITS:
            raise ValueError(f"RSA keys must be {_RSA_GENERATE_MIN_BITS} to {RSA_MAX_BITS} bits")
        return PrivateKey(rsa.generate_private_key(65537, bits), comment)
    if key_type == "ecdsa":
        key_type = f"ecdsa-sha2-nistp{bits or 256}"
    curve = ecdsa_curve(key_type)
    if curve is None or (bits is not None and key_type != f"ecdsa-sha2-nistp{bits}"):
        raise ValueError(f"unsupported key type {key_type!r} / bits {bits}")
    return PrivateKey(ec.generate_private_key(curve), comment)


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
            key, comment = parse_openssh_line(_first_line(file.read(MAX_KEY_LINE).decode("utf-8")))
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
    data = key.crypto_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )
    _write_atomic(name, data, 0o600)
    _write_atomic(name + ".pub", (key.public_key.openssh_line(key.comment) + "\n").encode("utf-8"), 0o644)


def load_public_key_file(path: str | os.PathLike[str]) -> PublicKey:
    """Load a .pub or -cert.pub file (``type base64 [comment]``; a
    :class:`~hashike.proto.certs.Certificate` for the latter);
    :class:`KeyFileError` if unreadable or malformed."""
    name = os.fspath(path)
    data = _read_file(name, MAX_KEY_LINE)
    try:
        return public_key_from_openssh_line(_first_line(data.decode("utf-8")))[0]
    except (UnicodeDecodeError, KeyFormatError) as exc:
        raise KeyFileError(f'Load key "{name}": invalid format') from exc
