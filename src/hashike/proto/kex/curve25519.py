"""RFC 8731: curve25519-sha256 (and its pre-standard name curve25519-sha256@libssh.org)."""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from hashike.proto.errors import KeyExchangeFailed
from hashike.proto.kex.base import KexMethod
from hashike.proto.wire import encode_mpint

__all__ = ["CURVE25519", "CURVE25519_LIBSSH", "x25519_agree", "x25519_keypair"]


def x25519_keypair(rng: Callable[[int], bytes]) -> tuple[X25519PrivateKey, bytes]:
    private = X25519PrivateKey.from_private_bytes(rng(32))
    return private, private.public_key().public_bytes_raw()


def x25519_agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The raw X25519 shared secret; refuses malformed and all-zero results (RFC 8731 §3)."""
    if len(peer_public) != 32:
        raise KeyExchangeFailed(f"bad X25519 public value of {len(peer_public)} bytes")
    try:
        secret = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:  # cryptography refuses an all-zero result
        raise KeyExchangeFailed("X25519 shared secret is zero") from None
    if not any(secret):
        raise KeyExchangeFailed("X25519 shared secret is zero")
    return secret


def _encode(secret: bytes) -> bytes:
    # RFC 8731 §3.1: the 32 bytes are read as an unsigned big-endian integer
    # and encoded as an mpint.
    return encode_mpint(int.from_bytes(secret, "big"))


class _Client:
    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._private, self.public = x25519_keypair(rng)

    def finish(self, server_public: bytes) -> bytes:
        return _encode(x25519_agree(self._private, server_public))


def _reply(client_public: bytes, rng: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    private, public = x25519_keypair(rng)
    return public, _encode(x25519_agree(private, client_public))


CURVE25519 = KexMethod("curve25519-sha256", hashes.SHA256, _Client, _reply)
CURVE25519_LIBSSH = KexMethod("curve25519-sha256@libssh.org", hashes.SHA256, _Client, _reply)
