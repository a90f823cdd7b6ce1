"""``-R`` and ``RemoteForward`` for the ``hashike`` command, with ssh's messages.

Every remote forward is requested at once and the replies awaited together
(the server answers in request order, RFC 4254 §4). A refusal is ssh's
``Warning: remote port forwarding failed for listen port N`` (``listen path
P`` for a socket on the server), or, under ExitOnForwardFailure,
``Error: ...`` and exit 255; for port 0 the port the server chose is printed
as ssh prints it. ``-R [bind_address:]port`` alone is reverse dynamic
forwarding, whose target ssh names ``socks:0``.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from hashike.aio.client import SSHClient
from hashike.aio.forward import Target
from hashike.aio.remote import RemoteForwardFailed, RemoteListener
from hashike.aio.supervisor import RemoteSpec
from hashike.config.forward import Forward
from hashike.config.ssh_config import ClientSettings

__all__ = ["ForwardFailure", "remote_spec", "remote_target", "start_remote_forwards"]

log = logging.getLogger("hashike.client")


class ForwardFailure(Exception):
    """A forward that must end the command: one line for the user, exit 255."""


def remote_target(fwd: Forward) -> Target | None:
    """Where a -R's connections go from here; None serves SOCKS (reverse dynamic)."""
    return None if fwd.is_dynamic else Target(fwd.connect_host, fwd.connect_port, fwd.connect_socket)


def remote_spec(fwd: Forward) -> RemoteSpec:
    """The -R as Reconnect requests it again on each connection."""
    return RemoteSpec(fwd.listen_host, fwd.listen_port or 0, remote_target(fwd), fwd.listen_socket)


def _request(client: SSHClient, fwd: Forward) -> asyncio.Future[RemoteListener]:
    return asyncio.ensure_future(
        client.forward_remote(
            fwd.listen_host, fwd.listen_port or 0, remote_target(fwd), listen_socket=fwd.listen_socket
        )
    )


async def start_remote_forwards(
    client: SSHClient, settings: ClientSettings
) -> list[tuple[Forward, RemoteListener]]:
    """Request every -R, each with its listener; raises ForwardFailure for
    what must end the command."""
    forwards = settings.remote_forwards
    results = await asyncio.gather(*(_request(client, fwd) for fwd in forwards), return_exceptions=True)
    listeners = []
    for fwd, result in zip(forwards, results, strict=True):
        if isinstance(result, RemoteForwardFailed):
            if settings.exit_on_forward_failure:
                raise ForwardFailure(f"Error: {result}")
            print(f"Warning: {result}", file=sys.stderr)
        elif isinstance(result, BaseException):
            raise result
        else:
            if fwd.listen_socket is None and fwd.listen_port == 0:
                print(
                    f"Allocated port {result.port} for remote forward to {result.describe_target()}",
                    file=sys.stderr,
                )
            listeners.append((fwd, result))
    return listeners
