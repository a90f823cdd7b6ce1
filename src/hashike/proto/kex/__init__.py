"""Key exchange: negotiation, one module per method, and the shared derivation."""

from __future__ import annotations

from hashike.proto.kex.base import KexMethod
from hashike.proto.kex.curve25519 import CURVE25519, CURVE25519_LIBSSH
from hashike.proto.kex.mlkem768x25519 import MLKEM768X25519
from hashike.proto.kex.nistp256 import NISTP256

__all__ = ["KEX_METHODS"]

KEX_METHODS: dict[str, KexMethod] = {
    m.name: m for m in (MLKEM768X25519, CURVE25519, CURVE25519_LIBSSH, NISTP256)
}
