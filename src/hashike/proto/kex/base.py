"""What every key exchange method shares: the exchange hash input and RFC 4253
§7.2 key derivation, plus the registry of methods.

Each method is one module exposing a ``KexMethod``: the client makes an
initial value, the server answers with its own value and the shared secret,
and the client derives the same secret from the server's value. The shared
secret is returned already encoded (mpint for ECDH per RFC 5656 §4 and RFC
8731 §3.1; string for the ML-KEM hybrid), because that encoding is what goes
into both the exchange hash and the key derivation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes

from hashike.proto.wire import encode_string

__all__ = ["ClientKex", "KexMethod", "derive_key", "exchange_hash_input"]


class ClientKex(Protocol):
    """The client's half of one exchange, between its init and the reply."""

    @property
    def public(self) -> bytes: ...

    def finish(self, server_public: bytes) -> bytes:
        """The encoded shared secret. Raises KeyExchangeFailed on a bad value."""


@dataclass(frozen=True, slots=True)
class KexMethod:
    name: str
    hash: type[hashes.HashAlgorithm]
    start: Callable[[Callable[[int], bytes]], ClientKex]
    # (client public value, rng) -> (server public value, encoded shared secret)
    reply: Callable[[bytes, Callable[[int], bytes]], tuple[bytes, bytes]]


def _digest(algorithm: type[hashes.HashAlgorithm], *parts: bytes) -> bytes:
    h = hashes.Hash(algorithm())
    for part in parts:
        h.update(part)
    return h.finalize()


def exchange_hash_input(
    v_c: bytes, v_s: bytes, i_c: bytes, i_s: bytes, k_s: bytes, q_c: bytes, q_s: bytes, k: bytes
) -> bytes:
    """RFC 5656 §4 / RFC 8731 §3: the same layout serves every method we speak."""
    return b"".join(encode_string(x) for x in (v_c, v_s, i_c, i_s, k_s, q_c, q_s)) + k


def exchange_hash(method: KexMethod, data: bytes) -> bytes:
    return _digest(method.hash, data)


def derive_key(
    algorithm: type[hashes.HashAlgorithm], k: bytes, h: bytes, letter: bytes, session_id: bytes, size: int
) -> bytes:
    """RFC 4253 §7.2: HASH(K || H || X || session_id), extended by
    HASH(K || H || K1 || K2 ...) until ``size`` bytes are available."""
    out = _digest(algorithm, k, h, letter, session_id)
    while len(out) < size:
        out += _digest(algorithm, k, h, out)
    return out[:size]
