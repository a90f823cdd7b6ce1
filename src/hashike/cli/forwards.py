"""What ``-L`` and ``-D`` (``LocalForward``, ``DynamicForward``) share on the
command line: where a listener binds, how it is started, how it is named in
ssh's messages, and the warning for a proxy open to other hosts."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import replace

from hashike.aio.client import SSHClient
from hashike.aio.forward import ForwardListener, Target
from hashike.config.forward import Forward

__all__ = ["bind_host", "example", "remote_label", "start_listener", "warn_open_proxies"]


def bind_host(listen_host: str | None, gateway_ports: bool) -> str | None:
    """Where a local listener binds, as ssh's client decides it
    (ssh(1) -L/-D): with no bind address, loopback unless GatewayPorts
    (``-g``), then every address; ``""`` or ``"*"`` is every address and
    ``localhost`` loopback whatever GatewayPorts says; anything else as given."""
    if listen_host is None:
        return "" if gateway_ports else None
    return listen_host


async def start_listener(client: SSHClient, fwd: Forward, host: str | None) -> ForwardListener:
    """Listen for one -L or -D. Raises OSError as the OS reports it."""
    if fwd.kind == "dynamic":
        return await client.forward_socks(host, fwd.listen_port, listen_socket=fwd.listen_socket)
    target = Target(fwd.connect_host, fwd.connect_port, fwd.connect_socket)
    return await client.forward_local_to(host, fwd.listen_port, target, listen_socket=fwd.listen_socket)


def remote_label(fwd: Forward) -> str:
    """The far end in ssh's debug line: ``host:port``, a socket path, or
    ``socks:0`` for a dynamic forward (as ssh names it)."""
    if fwd.kind == "dynamic":
        return "socks:0"
    return str(Target(fwd.connect_host, fwd.connect_port, fwd.connect_socket))


def example(fwd: Forward, port: int) -> str:
    """The same forward on an unprivileged port, for the hint after EACCES."""
    return replace(fwd, listen_host=None, listen_port=40000 + port).describe()


def _open_to_others(host: str | None) -> bool:
    if host is None or host == "localhost":
        return False
    if host in ("", "*"):
        return True
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: whatever it resolves to


def warn_open_proxies(forwards: Sequence[Forward], gateway_ports: bool) -> None:
    """Once, however many there are: a SOCKS proxy bound beyond loopback
    takes anyone who can reach the port wherever the SSH server can reach."""
    for fwd in forwards:
        if (
            fwd.kind == "dynamic"
            and fwd.listen_socket is None
            and _open_to_others(bind_host(fwd.listen_host, gateway_ports))
        ):
            print(
                f"Warning: dynamic forward {fwd.describe()} listens beyond loopback: anyone who can "
                "reach the port can use the proxy.",
                file=sys.stderr,
            )
            return
