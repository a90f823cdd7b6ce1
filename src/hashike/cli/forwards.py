"""``-L`` and ``-D`` (``LocalForward``, ``DynamicForward``) on the
command line: where a listener binds, how it is started (each of them at
login, with ssh's messages for a failure), how it is named in ssh's
messages, and the warning for a proxy open to other hosts."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from hashike.aio.client import SSHClient
from hashike.aio.forward import ForwardListener, Target
from hashike.config.forward import Forward
from hashike.config.ssh_config import ClientSettings

from .remote import ForwardFailure

__all__ = [
    "bind_host",
    "example",
    "remote_label",
    "start_listener",
    "start_local_forwards",
    "warn_open_proxies",
]

log = logging.getLogger("hashike.client")


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


def bind_label(host: str | None, port: int | None, path: str | None) -> str:
    if path is not None:
        return path
    return f"[{'127.0.0.1' if host is None else host or '0.0.0.0'}]:{port}"


async def start_local_forwards(
    client: SSHClient, settings: ClientSettings
) -> list[tuple[Forward, ForwardListener]]:
    """Set up every -L and -D, each with its listener; a failure is reported
    as ssh reports it and is fatal only under ExitOnForwardFailure."""
    listeners = []
    warn_open_proxies(settings.dynamic_forwards, settings.gateway_ports)
    for fwd in (*settings.local_forwards, *settings.dynamic_forwards):
        host = bind_host(fwd.listen_host, settings.gateway_ports)
        target = remote_label(fwd)
        try:
            listener = await start_listener(client, fwd, host)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            label = bind_label(host, fwd.listen_port, fwd.listen_socket)
            port = fwd.listen_port or 0
            if exc.errno == errno.EACCES and 0 < port < 1024:
                print(
                    f"bind {label}: Permission denied. Privileged ports can only be forwarded by root; "
                    f"use a port of 1024 or more, e.g. {example(fwd, port)}.",
                    file=sys.stderr,
                )
            else:
                print(f"bind {label}: {reason}", file=sys.stderr)
                print(f"channel_setup_fwd_listener_tcpip: cannot listen to port: {port}", file=sys.stderr)
            if settings.exit_on_forward_failure:
                raise ForwardFailure("Could not request local forwarding.") from None
            print("Could not request local forwarding.", file=sys.stderr)
            continue
        bound = bind_label(host, listener.port, fwd.listen_socket)
        log.debug("Local connections to %s forwarded to remote address %s", bound, target)
        listeners.append((fwd, listener))
    return listeners
