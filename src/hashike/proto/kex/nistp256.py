"""RFC 5656 §4: ecdh-sha2-nistp256. Accepted, but not offered by default."""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hashike.proto.errors import KeyExchangeFailed
from hashike.proto.kex.base import KexMethod
from hashike.proto.wire import encode_mpint

__all__ = ["NISTP256"]

# Order of the P-256 group (FIPS 186-4 D.1.2.3).
_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _keypair(rng: Callable[[int], bytes]) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    # 64 random bytes reduced mod (n - 1), plus 1: a scalar in [1, n-1] with
    # negligible bias (FIPS 186-4 B.4.1).
    scalar = int.from_bytes(rng(64), "big") % (_ORDER - 1) + 1
    private = ec.derive_private_key(scalar, ec.SECP256R1())
    return private, private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _agree(private: ec.EllipticCurvePrivateKey, peer_public: bytes) -> bytes:
    # RFC 5656 §4: the peer's point must be validated; from_encoded_point does.
    if len(peer_public) != 65 or peer_public[0] != 4:
        raise KeyExchangeFailed("bad ECDH public value")
    try:
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer_public)
        secret = private.exchange(ec.ECDH(), point)
    except ValueError:
        raise KeyExchangeFailed("bad ECDH public value") from None
    return encode_mpint(int.from_bytes(secret, "big"))


class _Client:
    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._private, self.public = _keypair(rng)

    def finish(self, server_public: bytes) -> bytes:
        return _agree(self._private, server_public)


def _reply(client_public: bytes, rng: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    private, public = _keypair(rng)
    return public, _agree(private, client_public)


NISTP256 = KexMethod("ecdh-sha2-nistp256", hashes.SHA256, _Client, _reply)
