"""What one key exchange accumulates between KEXINIT and NEWKEYS (RFC 4253 §7).

The transport keeps one of these per exchange in progress; it holds no logic.
"""

from __future__ import annotations

from hashike.proto.kex.base import ClientKex
from hashike.proto.kex.negotiate import Negotiated

__all__ = ["Exchange"]


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
        self.derived: tuple[tuple[bytes, bytes, bytes], tuple[bytes, bytes, bytes]] | None = None
        self.chatter = 0
