"""Who may start a connection: decided on the bare socket, before any of the
connection is built (the DHEat class, CVE-2002-20001).

sshd's order (OpenSSH 9.8): a network with an active penalty is refused; then
MaxStartups' random early drop (``start:rate:full``) of unauthenticated
connections; then PerSourceMaxStartups. Penalties are charged when an
unauthenticated connection ends (see :mod:`hashike.config.srclimit`); every
time is the event loop's clock.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from dataclasses import dataclass

from hashike.config.srclimit import PENALTY_KINDS, PenaltyPolicy

__all__ = ["Admission", "Refusal", "drop"]

log = logging.getLogger("hashike.server")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # the end of sshd's "drop connection" line
    notice: bytes  # the line the client is sent, best effort, as sshd does


def drop(transport: asyncio.Transport, refusal: Refusal, startups: int) -> None:
    """Refuse a connection: sshd's log line, then the client's one line."""
    peer = transport.get_extra_info("peername")
    local = transport.get_extra_info("sockname")
    log.info(
        "drop connection #%d from [%s]:%d on [%s]:%d %s",
        startups,
        peer[0],
        peer[1],
        local[0],
        local[1],
        refusal.reason,
    )
    transport.write(refusal.notice)
    transport.close()


_STARTUPS = Refusal("past MaxStartups", b"Exceeded MaxStartups\r\n")


class _Penalty:
    __slots__ = ("active", "expires", "reason")

    def __init__(self, expires: float, reason: str) -> None:
        self.expires = expires
        self.reason = reason
        self.active = False


class Admission:
    """MaxStartups, PerSourceMaxStartups and PerSourcePenalties for one server."""

    def __init__(
        self,
        max_startups: tuple[int, int, int],
        per_source: int | None,
        block_size: tuple[int, int],
        penalties: PenaltyPolicy | None,
        exempt: tuple[str, ...],
    ) -> None:
        self._max_startups = max_startups
        self._per_source = per_source
        self._block_size = block_size
        self._policy = penalties
        self._exempt = tuple(ipaddress.ip_network(b, strict=False) for b in exempt)
        self._startups: dict[Network, int] = {}  # unauthenticated connections per network
        self._penalties: dict[int, dict[Network, _Penalty]] = {4: {}, 6: {}}  # by IP version
        self._purged_at = -1.0

    def network(self, host: str) -> Network:
        """``host`` masked by PerSourceNetBlockSize."""
        address = ipaddress.ip_address(host.partition("%")[0])
        bits = self._block_size[0] if address.version == 4 else self._block_size[1]
        return ipaddress.ip_network(f"{address}/{bits}", strict=False)

    def refusal(self, host: str, startups: int, now: float) -> Refusal | None:
        """Why a new connection from ``host`` is refused, or None to admit it;
        ``startups`` is how many unauthenticated connections there are."""
        net = self.network(host)
        penalty = self._penalty_for(net, now)
        if penalty is not None:
            return penalty
        start, rate, full = self._max_startups
        if startups >= full:
            return _STARTUPS
        if startups >= start and full > start:
            drop = rate + (100 - rate) * (startups - start) / (full - start)
            if random.random() * 100 < drop:
                return _STARTUPS
        if self._per_source is not None and self._startups.get(net, 0) >= self._per_source:
            return _STARTUPS
        return None

    def started(self, host: str) -> None:
        net = self.network(host)
        self._startups[net] = self._startups.get(net, 0) + 1

    def ended(self, host: str) -> None:
        """An unauthenticated connection authenticated or went away."""
        net = self.network(host)
        left = self._startups.get(net, 0) - 1
        if left > 0:
            self._startups[net] = left
        else:
            self._startups.pop(net, None)

    def startups_from(self, host: str) -> int:
        return self._startups.get(self.network(host), 0)

    # PerSourcePenalties ---------------------------------------------------

    def _penalty_for(self, net: Network, now: float) -> Refusal | None:
        policy = self._policy
        if policy is None:
            return None
        table = self._penalties[net.version]
        penalty = table.get(net)
        if penalty is not None and penalty.expires <= now:
            del table[net]
            penalty = None
        if penalty is not None:
            return Refusal(penalty.reason, b"Not allowed at this time\r\n") if penalty.active else None
        if self._full(net, now) and self._deny_all(net, policy):
            return Refusal("penalty: too many sources", b"Not allowed at this time\r\n")
        return None

    def penalise(self, host: str, kind: str, now: float) -> None:
        """Charge ``kind`` (a key of PENALTY_KINDS) to ``host``'s network."""
        policy = self._policy
        if policy is None or not policy.seconds(kind):
            return
        address = ipaddress.ip_address(host.partition("%")[0])
        if any(address in block for block in self._exempt):
            return
        net = self.network(host)
        reason = PENALTY_KINDS[kind]
        seconds = policy.seconds(kind)
        table = self._penalties[net.version]
        penalty = table.get(net)
        if penalty is None or penalty.expires <= now:
            if self._full(net, now):
                return  # overflow: permissive records nothing; deny-all refuses at admission
            penalty = table[net] = _Penalty(now + min(seconds, policy.max), reason)
            what = "new"
        else:
            # Penalties add up, to at most ``max`` from now.
            penalty.expires = min(penalty.expires + seconds, now + policy.max)
            penalty.reason = reason
            what = "extended"
        penalty.active = penalty.expires - now >= policy.min
        state = "active" if penalty.active else "deferred"
        level = logging.INFO if penalty.active else logging.DEBUG
        family = f"ipv{net.version}"
        log.log(level, "%s: %s %s %s penalty of %d seconds for %s", family, what, net, state, seconds, reason)

    def _full(self, net: Network, now: float) -> bool:
        """Whether the table of ``net``'s family is full, once expired entries
        are gone (looked for at most once a second: a full table is a flood)."""
        assert self._policy is not None
        limit = self._policy.max_sources4 if net.version == 4 else self._policy.max_sources6
        table = self._penalties[net.version]
        if len(table) >= limit and now - self._purged_at >= 1.0:
            self._purged_at = now
            for key in [k for k, p in table.items() if p.expires <= now]:
                del table[key]
        return len(table) >= limit

    @staticmethod
    def _deny_all(net: Network, policy: PenaltyPolicy) -> bool:
        return policy.overflow4_deny_all if net.version == 4 else policy.overflow6_deny_all
