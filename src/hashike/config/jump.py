"""How the client reaches its server when not straight away: ``ProxyJump``
(``-J``) hops and ``ProxyCommand``'s tokens, as ssh_config(5) has them.

A ProxyJump value is a comma-separated list of ``[user@]host[:port]`` or
``ssh://[user@]host[:port]`` hops, first hop first; ``host`` may be an IPv6
address in brackets. ssh connects to the *last* hop through the ones before
it, then to the destination through that last hop, each hop with its own
Host block. ProxyCommand takes ssh's ``%h %p %r %n`` tokens (and ``%%``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hashike.config.forward import expand_variables, parse_port

__all__ = ["JumpHop", "expand_proxy_command", "parse_jump"]


@dataclass(frozen=True, slots=True)
class JumpHop:
    """One ProxyJump hop: None where the hop's own config decides."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"{user}{host}:{self.port}" if self.port else f"{user}{host}"


def _hop(text: str) -> JumpHop:
    """``[user@]host[:port]`` or its ssh:// URI form; ValueError if malformed."""
    if text.lower().startswith("ssh://"):
        text = text[len("ssh://") :].rstrip("/")
    user, at, rest = text.rpartition("@")
    if at and not user:
        raise ValueError(text)
    port_text = None
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(text)
        port_text = tail[1:] if tail else None
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host = rest
    port = None
    if port_text is not None:
        port = parse_port(port_text)
        if not port:  # ssh's a2port: 1..65535, or a service name
            raise ValueError(text)
    if not host or any(c in host for c in " \t,@/"):
        raise ValueError(text)
    return JumpHop(host, user or None, port)


def parse_jump(text: str) -> tuple[JumpHop, ...]:
    """The hops of a ProxyJump value, first hop first (``none`` is ()).
    Raises ValueError on a malformed hop."""
    if text.lower() == "none":
        return ()
    return tuple(_hop(part) for part in text.split(","))


def expand_proxy_command(command: str, tokens: Mapping[str, str]) -> str:
    """ProxyCommand with ``%h %p %r %n`` (and ``%%``) replaced from ``tokens``;
    ValueError naming any other token, as ssh refuses it."""
    allowed = {key: tokens[key] for key in ("h", "p", "r", "n")}
    return expand_variables(command, allowed, expand_env=False)
