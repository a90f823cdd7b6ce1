"""What one key exchange accumulates between KEXINIT and NEWKEYS (RFC 4253 §7).

The transport keeps one of these per exchange in progress; its one piece of
logic is the key derivation of RFC 4253 §7.2.
"""

from __future__ import annotations

from hashike.proto.ciphers import CIPHERS, MACS
from hashike.proto.kex import KEX_METHODS
from hashike.proto.kex.base import ClientKex, derive_key
from hashike.proto.kex.negotiate import Negotiated

__all__ = ["Exchange", "Keys"]

Keys = tuple[bytes, bytes, bytes]  # (iv, key, mac key) of one direction


class Exchange:
    """Everything one exchange accumulates before NEWKEYS."""

    __slots__ = (
        "chatter",
        "client",
        "derived",
        "kexinit_seq",
        "keys",
        "negotiated",
        "ours",
        "peer",
        "skip_guess",
    )

    def __init__(self, ours: bytes, kexinit_seq: int) -> None:
        self.ours = ours  # our KEXINIT payload (I_C or I_S)
        self.kexinit_seq = kexinit_seq
        self.peer: bytes | None = None
        self.negotiated: Negotiated | None = None
        self.client: ClientKex | None = None
        self.skip_guess = False
        self.keys: tuple[bytes, bytes] | None = None  # (K encoded, H)
        self.derived: tuple[Keys, Keys] | None = None
        self.chatter = 0

    def derive(self, session_id: bytes) -> tuple[Keys, Keys]:
        """RFC 4253 §7.2: (iv, key, mac key) for client->server (letters A, C,
        E) and server->client (B, D, F), computed once."""
        assert self.negotiated is not None and self.keys is not None
        if self.derived is not None:
            return self.derived
        n = self.negotiated
        k, h = self.keys
        algorithm = KEX_METHODS[n.kex].hash

        def derive(letter: bytes, size: int) -> bytes:
            return derive_key(algorithm, k, h, letter, session_id, size) if size else b""

        def direction(cipher: str, mac: str | None, letters: bytes) -> Keys:
            spec = CIPHERS[cipher]
            mac_size = MACS[mac].key_size if mac else 0
            iv, key = derive(letters[0:1], spec.iv_size), derive(letters[1:2], spec.key_size)
            return iv, key, derive(letters[2:3], mac_size)

        self.derived = direction(n.cipher_c2s, n.mac_c2s, b"ACE"), direction(n.cipher_s2c, n.mac_s2c, b"BDF")
        return self.derived
