"""What hashiked's server grants, as plain data decided from sshd_config and
the key that logged in; the runtime (:mod:`hashike.aio`) asks and enforces.

:class:`ForwardingPolicy`: which forwarding requests are granted, from
sshd_config's AllowTcpForwarding, PermitOpen and DisableForwarding combined
with the authorized_keys options of the key that logged in (``restrict``,
``no-port-forwarding``, ``permitopen``), as sshd(8) and sshd_config(5)
describe them. Every refusal is logged by the caller.

:class:`SessionPolicy`: sshd_config's session keywords (MaxSessions,
PermitTTY, AcceptEnv).
"""

from __future__ import annotations

from dataclasses import dataclass

from hashike.keys.authorized_keys import ForwardPermission, KeyOptions, parse_forward_permission
from hashike.keys.patterns import match_pattern

__all__ = ["ForwardingPolicy", "SessionPolicy", "parse_permit_open"]


def parse_permit_open(values: list[str]) -> tuple[ForwardPermission, ...] | None:
    """sshd_config PermitOpen: ``any`` (None: no restriction), ``none`` (an
    empty tuple: nothing), or ``host:port`` entries where either may be ``*``.
    Raises ValueError for a malformed entry."""
    if values in (["any"], []):
        return None
    if values == ["none"]:
        return ()
    permissions = []
    for value in values:
        if value == "*:*":
            permissions.append(ForwardPermission("*", None))
            continue
        try:
            permissions.append(parse_forward_permission(value, listen=False))
        except ValueError as exc:
            raise ValueError(f"invalid permit open specification '{value}': {exc}") from None
    return tuple(permissions)


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardingPolicy:
    allow_tcp_forwarding: str = "yes"  # yes | all | no | local | remote
    permit_open: tuple[ForwardPermission, ...] | None = None  # None: any
    disable_forwarding: bool = False

    def allows_local(self, key_options: KeyOptions | None, host: str, port: int) -> bool:
        """May a direct-tcpip channel (the client's -L) reach ``host``:``port``?"""
        if self.disable_forwarding or self.allow_tcp_forwarding not in ("yes", "all", "local"):
            return False
        if self.permit_open is not None and not any(
            p.permits(host, port, wildcards=False) for p in self.permit_open
        ):
            return False
        return key_options is None or key_options.permits_open(host, port)

    def allows_streamlocal(self, key_options: KeyOptions | None) -> bool:
        """May a direct-streamlocal channel reach a Unix socket? (AllowStreamLocalForwarding
        follows AllowTcpForwarding here; permitopen does not apply to paths.)"""
        if self.disable_forwarding or self.allow_tcp_forwarding not in ("yes", "all", "local"):
            return False
        return key_options is None or key_options.allows_port_forwarding()


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPolicy:
    """sshd_config's session keywords. ``max_sessions``: sessions open at
    once on one connection (0 refuses them all: a forwarding-only account);
    ``permit_tty``: whether pty-req may succeed; ``accept_env``: patterns
    (``*`` and ``?``) of the variable names "env" requests may set."""

    max_sessions: int = 10
    permit_tty: bool = True
    accept_env: tuple[str, ...] = ()

    def accepts_env(self, name: str) -> bool:
        return any(match_pattern(name, pattern) for pattern in self.accept_env)
