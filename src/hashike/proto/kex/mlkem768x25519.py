"""mlkem768x25519-sha256: ML-KEM-768 (FIPS 203) combined with X25519
(draft-ietf-sshm-mlkem-hybrid-kex, as OpenSSH 9.9+ implements it).

The client sends its ML-KEM encapsulation key followed by its X25519 value;
the server answers with the ML-KEM ciphertext followed by its X25519 value.
The shared secret is SHA-256(K_mlkem || K_x25519), encoded as a *string*.

The ML-KEM encapsulation draws its randomness inside `cryptography`, which
offers no way to inject it; all our other randomness comes from ``rng``.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey

from hashike.proto.errors import KeyExchangeFailed
from hashike.proto.kex.base import KexMethod
from hashike.proto.kex.curve25519 import x25519_agree, x25519_keypair
from hashike.proto.wire import encode_string

__all__ = ["MLKEM768X25519"]

_EK = 1184  # ML-KEM-768 encapsulation key
_CT = 1088  # ML-KEM-768 ciphertext


def _combine(k_pq: bytes, k_cl: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(k_pq)
    h.update(k_cl)
    return encode_string(h.finalize())


class _Client:
    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._kem = MLKEM768PrivateKey.from_seed_bytes(rng(64))
        self._x25519, x_pub = x25519_keypair(rng)
        self.public = self._kem.public_key().public_bytes_raw() + x_pub

    def finish(self, server_public: bytes) -> bytes:
        if len(server_public) != _CT + 32:
            raise KeyExchangeFailed(f"bad ML-KEM reply of {len(server_public)} bytes")
        try:
            k_pq = self._kem.decapsulate(server_public[:_CT])
        except ValueError:
            raise KeyExchangeFailed("bad ML-KEM ciphertext") from None
        return _combine(k_pq, x25519_agree(self._x25519, server_public[_CT:]))


def _reply(client_public: bytes, rng: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    if len(client_public) != _EK + 32:
        raise KeyExchangeFailed(f"bad ML-KEM init of {len(client_public)} bytes")
    try:
        k_pq, ciphertext = MLKEM768PublicKey.from_public_bytes(client_public[:_EK]).encapsulate()
    except ValueError:
        raise KeyExchangeFailed("bad ML-KEM encapsulation key") from None
    private, x_pub = x25519_keypair(rng)
    return ciphertext + x_pub, _combine(k_pq, x25519_agree(private, client_public[_EK:]))


MLKEM768X25519 = KexMethod("mlkem768x25519-sha256", hashes.SHA256, _Client, _reply)
