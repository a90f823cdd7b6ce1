"""The transport's states (RFC 4253 §7, §11) and the phases of its key
exchanges (§7.1), for :mod:`hashike.proto.transport` and its owners."""

from __future__ import annotations

import enum

__all__ = ["ENDED", "Phase", "State"]


class State(enum.Enum):
    VERSION = "version"
    KEXINIT_SENT = "kexinit-sent"
    AWAIT_ECDH = "await-ecdh"
    AWAIT_NEWKEYS = "await-newkeys"
    OPEN = "open"
    CLOSED = "closed"  # a DISCONNECT was sent or received, or the peer hung up
    ERROR = "error"  # a protocol error ended it (we sent DISCONNECT with the error's reason)

    # Members are singletons: identity is their equality, so the identity
    # hash serves, and in C. Enum's own __hash__ is Python code, run several
    # times per packet by the dispatch table's lookups.
    __hash__ = object.__hash__


# The states in which nothing more is read or sent (the connection's lifecycle
# ends in one of them, as h11's does in CLOSED or ERROR).
ENDED = frozenset((State.CLOSED, State.ERROR))


class Phase(enum.Enum):
    """Which messages may come beside an exchange's own (RFC 4253 §7.1)."""

    INITIAL = "initial"  # before the first NEWKEYS: IGNORE, DEBUG, UNIMPLEMENTED
    STRICT = "strict"  # the same under strict kex: none of them (PROTOCOL §1.10)
    ESTABLISHED = "established"  # after the first NEWKEYS
