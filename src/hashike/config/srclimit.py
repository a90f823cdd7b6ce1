"""Per-source limits of unauthenticated connections, sshd_config(5) of OpenSSH 9.8:
``PerSourceMaxStartups``, ``PerSourceNetBlockSize``, ``PerSourcePenalties`` and
``PerSourcePenaltyExemptList`` (the DHEat class, CVE-2002-20001).

A penalty is time charged to the client's network (its address masked by
PerSourceNetBlockSize) when a connection ends in a way that may be an attack:
``authfail`` (it failed to authenticate at least once), ``noauth`` (it never
tried), ``grace-exceeded`` (LoginGraceTime ran out) or ``crash`` (the server
failed handling it). Penalties from one network add up, to at most ``max``;
once at least ``min`` is charged, new connections from that network are
refused until the time runs out. ``max-sources4``/``max-sources6`` bound how
many networks are remembered; when the table is full, ``overflow`` (and
``overflow6``) ``permissive`` stops recording and ``deny-all`` refuses every
connection from a network not in it.

hashiked's default is no penalties (sshd 9.8 turns them on): a test or a
monitoring probe that connects and hangs up would otherwise lock itself out.
``PerSourcePenalties yes`` gives sshd's defaults.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any

from hashike.config.keywords import ValueProblem
from hashike.config.syntax import parse_time

__all__ = [
    "PENALTY_KINDS",
    "PenaltyPolicy",
    "parse_exempt_list",
    "parse_net_block_size",
    "parse_penalties",
    "parse_per_source_max_startups",
]

# What each kind of penalty says in the log, as sshd words it.
PENALTY_KINDS: dict[str, str] = {
    "crash": "penalty: caused crash",
    "authfail": "penalty: failed authentication",
    "noauth": "penalty: connections without attempting authentication",
    "grace-exceeded": "penalty: exceeded LoginGraceTime",
}


@dataclass(frozen=True, slots=True)
class PenaltyPolicy:
    """Seconds charged per kind of penalty (0: none), and sshd's bounds."""

    crash: int = 90
    authfail: int = 5
    noauth: int = 1
    grace_exceeded: int = 10
    max: int = 600
    min: int = 15
    max_sources4: int = 65536
    max_sources6: int = 65536
    overflow4_deny_all: bool = False
    overflow6_deny_all: bool = False

    def seconds(self, kind: str) -> int:
        value: int = getattr(self, kind.replace("-", "_"))
        return value


_DURATIONS = ("crash", "authfail", "noauth", "grace-exceeded", "max", "min")
_COUNTS = ("max-sources4", "max-sources6")
_MODES = {"overflow": "overflow4_deny_all", "overflow6": "overflow6_deny_all"}
# Later OpenSSH keywords hashiked parses but does not enforce: refused, never ignored.
_UNSUPPORTED = ("refuseconnection",)


def parse_penalties(args: list[str]) -> PenaltyPolicy | None:
    """``yes``, ``no`` or ``keyword:value ...`` over sshd's defaults; None is off."""
    if len(args) == 1 and args[0].lower() in ("yes", "no"):
        return PenaltyPolicy() if args[0].lower() == "yes" else None
    changes: dict[str, Any] = {}
    for arg in args:
        word, sep, value = arg.partition(":")
        if word in _UNSUPPORTED:
            raise ValueProblem(f"PerSourcePenalties {word} is not supported by hashiked.")
        if not sep or not value:
            raise ValueProblem(f"Invalid PerSourcePenalties keyword '{arg}'.")
        changes[_field(word, arg)] = _penalty_value(word, value, arg)
    return replace(PenaltyPolicy(), **changes)


def _field(word: str, arg: str) -> str:
    if word in _DURATIONS or word in _COUNTS:
        return word.replace("-", "_")
    if word in _MODES:
        return _MODES[word]
    raise ValueProblem(f"Invalid PerSourcePenalties keyword '{arg}'.")


def _penalty_value(word: str, value: str, arg: str) -> int | bool:
    if word in _MODES:
        if value not in ("permissive", "deny-all"):
            raise ValueProblem(f"Invalid {word} mode '{value}' in PerSourcePenalties.")
        return value == "deny-all"
    try:
        number = int(value) if word in _COUNTS else parse_time(value)
    except ValueError:
        raise ValueProblem(f"Invalid PerSourcePenalties value '{arg}'.") from None
    if number < 0 or (word in _COUNTS and number < 1):
        raise ValueProblem(f"Invalid PerSourcePenalties value '{arg}'.")
    return number


def parse_per_source_max_startups(args: list[str]) -> int | None:
    """A positive number, or ``none`` for no limit (None)."""
    arg = args[0]
    if arg.lower() == "none":
        return None
    if not arg.isascii() or not arg.isdigit() or int(arg) < 1:
        raise ValueProblem(f"Invalid PerSourceMaxStartups '{arg}'.")
    return int(arg)


def parse_net_block_size(args: list[str]) -> tuple[int, int]:
    """``v4[:v6]`` prefix lengths (default 32:128)."""
    arg = args[0]
    v4, _, v6 = arg.partition(":")
    try:
        bits = int(v4), int(v6) if v6 else 128
    except ValueError:
        raise ValueProblem(f"Invalid PerSourceNetBlockSize '{arg}'.") from None
    if not (0 <= bits[0] <= 32 and 0 <= bits[1] <= 128):
        raise ValueProblem(f"Invalid PerSourceNetBlockSize '{arg}'.")
    return bits


def parse_exempt_list(args: list[str]) -> tuple[str, ...]:
    """Comma-separated addresses or CIDR blocks, or ``none``."""
    if [a.lower() for a in args] == ["none"]:
        return ()
    blocks = tuple(b for arg in args for b in arg.split(",") if b)
    for block in blocks:
        try:
            ipaddress.ip_network(block, strict=False)
        except ValueError:
            raise ValueProblem(f"Invalid PerSourcePenaltyExemptList entry '{block}'.") from None
    return blocks
