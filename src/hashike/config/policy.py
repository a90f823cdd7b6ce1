"""What hashiked's server grants, as plain data decided from sshd_config and
the key that logged in; the runtime (:mod:`hashike.aio`) asks and enforces.

:class:`ForwardingPolicy`: which forwarding requests are granted, from
sshd_config's AllowTcpForwarding, PermitOpen and DisableForwarding combined
with the authorized_keys options of the key that logged in (``restrict``,
``no-port-forwarding``, ``permitopen``), as sshd(8) and sshd_config(5)
describe them; for ``-R`` also GatewayPorts (where a listener binds),
PermitListen and ``permitlisten``; for Unix sockets AllowStreamLocalForwarding,
StreamLocalBindMask and StreamLocalBindUnlink. Every refusal is logged by
the caller.

:class:`SessionPolicy`: sshd_config's session keywords (MaxSessions,
PermitTTY, AcceptEnv).
"""

from __future__ import annotations

from dataclasses import dataclass

from hashike.keys.authorized_keys import ForwardPermission, KeyOptions, parse_forward_permission
from hashike.keys.patterns import match_pattern

__all__ = [
    "EVERY_ADDRESS",
    "LOOPBACK",
    "ForwardingPolicy",
    "SessionPolicy",
    "parse_permit_listen",
    "parse_permit_open",
]

# Where a listener binds when it is loopback only: both families, as sshd
# binds a NULL host without AI_PASSIVE.
LOOPBACK: tuple[str, ...] = ("127.0.0.1", "::1")
# Every address, both families, named one by one: asyncio given no host
# would bind each family to a different port when port 0 is asked for.
EVERY_ADDRESS: tuple[str, ...] = ("0.0.0.0", "::")

# Ports below this need root (Linux's default net.ipv4.ip_unprivileged_port_start).
_FIRST_UNPRIVILEGED_PORT = 1024


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


def parse_permit_listen(values: list[str]) -> tuple[ForwardPermission, ...] | None:
    """sshd_config PermitListen: ``any`` (None), ``none`` (an empty tuple) or
    ``[host:]port`` entries; a bare port means any host, ``*`` any port, and
    the host is a pattern. Raises ValueError for a malformed entry."""
    if values in (["any"], []):
        return None
    if values == ["none"]:
        return ()
    permissions = []
    for value in values:
        try:
            permissions.append(parse_forward_permission(value, listen=True))
        except ValueError as exc:
            raise ValueError(f"invalid permit listen specification '{value}': {exc}") from None
    return tuple(permissions)


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardingPolicy:
    allow_tcp_forwarding: str = "yes"  # yes | all | no | local | remote
    permit_open: tuple[ForwardPermission, ...] | None = None  # None: any
    disable_forwarding: bool = False
    gateway_ports: str = "no"  # no | yes | clientspecified
    permit_listen: tuple[ForwardPermission, ...] | None = None  # None: any
    allow_streamlocal_forwarding: str = "yes"  # yes | all | no | local | remote
    streamlocal_bind_mask: int = 0o177  # the umask a remote-forward socket is created with
    streamlocal_bind_unlink: bool = False  # remove an existing socket file first
    remote_forward_takeover: bool = False  # hashike's RemoteForwardTakeover

    def allows_local(self, key_options: KeyOptions | None, host: str, port: int) -> bool:
        """May a direct-tcpip channel (the client's -L) reach ``host``:``port``?"""
        if self.disable_forwarding or self.allow_tcp_forwarding not in ("yes", "all", "local"):
            return False
        if self.permit_open is not None and not any(
            p.permits(host, port, wildcards=False) for p in self.permit_open
        ):
            return False
        return key_options is None or key_options.permits_open(host, port)

    def allows_streamlocal(self, key_options: KeyOptions | None, direction: str = "local") -> bool:
        """May a direct-streamlocal channel reach a Unix socket (``local``,
        the client's -L), or a streamlocal-forward listen on one (``remote``,
        its -R)? AllowStreamLocalForwarding decides, as in sshd, whatever
        AllowTcpForwarding says; ``no-port-forwarding`` covers sockets too,
        and permitopen/PermitListen do not apply to paths."""
        if self.disable_forwarding or self.allow_streamlocal_forwarding not in ("yes", "all", direction):
            return False
        return key_options is None or key_options.allows_port_forwarding()

    def allows_remote(self, key_options: KeyOptions | None, port: int, uid: int) -> bool:
        """Is remote forwarding (tcpip-forward, the client's -R) on at all for
        this login, and may user ``uid`` listen on ``port``? sshd's first
        check ("Server has disabled port forwarding."): a port below 1024
        needs root; 0 (the server picks) is never privileged."""
        if self.disable_forwarding or self.allow_tcp_forwarding not in ("yes", "all", "remote"):
            return False
        if key_options is not None and not key_options.allows_port_forwarding():
            return False
        return not (0 < port < _FIRST_UNPRIVILEGED_PORT and uid != 0)

    def permits_listen(self, key_options: KeyOptions | None, address: str, port: int) -> bool:
        """sshd's second check: PermitListen and the key's ``permitlisten``
        must both cover the address as the client sent it (``localhost``
        when ssh was given none) and the port as asked."""
        if self.permit_listen is not None and not any(
            p.permits(address, port, wildcards=True) for p in self.permit_listen
        ):
            return False
        return key_options is None or key_options.permits_listen(address, port)

    def remote_bind_hosts(self, address: str) -> tuple[str, ...]:
        """Where a tcpip-forward listener for ``address`` binds, as sshd
        decides it: with GatewayPorts no, loopback whatever was asked
        (127.0.0.1 or ::1 alone when that is what was asked); with yes,
        every address; with clientspecified, what the client asked
        (``""``/``*`` every address, ``localhost`` loopback)."""
        if self.gateway_ports == "yes":
            return EVERY_ADDRESS
        if self.gateway_ports == "clientspecified":
            if address in ("", "*"):
                return EVERY_ADDRESS
            return LOOPBACK if address == "localhost" else (address,)
        return (address,) if address in LOOPBACK else LOOPBACK


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
