"""``-R`` and ``RemoteForward`` for the ``hashike`` command, with ssh's messages.

Every remote forward is requested at once and the replies awaited together
(the server answers in request order, RFC 4254 §4). A refusal is ssh's
``Warning: remote port forwarding failed for listen port N``, or, under
ExitOnForwardFailure, ``Error: ...`` and exit 255; for port 0 the port the
server chose is printed as ssh prints it. Not yet supported, and refused
with one line: reverse dynamic forwarding (``-R [bind:]port`` alone) and a
listening socket on the server (``-R /path:...``).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from hashike.aio.client import SSHClient
from hashike.aio.forward import Target
from hashike.aio.remote import RemoteForwardFailed, RemoteListener
from hashike.config.forward import Forward
from hashike.config.ssh_config import ClientSettings

__all__ = ["ForwardFailure", "check_remote_forwards", "start_remote_forwards"]

log = logging.getLogger("hashike.client")


class ForwardFailure(Exception):
    """A forward that must end the command: one line for the user, exit 255."""


def check_remote_forwards(settings: ClientSettings) -> None:
    """Before connecting: raises ForwardFailure for a -R not supported yet."""
    for fwd in settings.remote_forwards:
        _check_supported(fwd)


def _check_supported(fwd: Forward) -> None:
    if fwd.is_dynamic:
        raise ForwardFailure(f"hashike: reverse dynamic forwarding ({fwd.describe()}) is not supported yet")
    if fwd.listen_socket is not None:
        raise ForwardFailure(f"hashike: remote socket forwarding ({fwd.describe()}) is not supported yet")


async def start_remote_forwards(client: SSHClient, settings: ClientSettings) -> list[RemoteListener]:
    """Request every -R; raises ForwardFailure for what must end the command."""
    forwards = settings.remote_forwards
    check_remote_forwards(settings)
    requests = []
    for fwd in forwards:
        assert fwd.listen_port is not None
        target = Target(fwd.connect_host, fwd.connect_port, fwd.connect_socket)
        requests.append(client.forward_remote(fwd.listen_host, fwd.listen_port, target))
    results = await asyncio.gather(*requests, return_exceptions=True)
    listeners = []
    for fwd, result in zip(forwards, results, strict=True):
        if isinstance(result, RemoteForwardFailed):
            if settings.exit_on_forward_failure:
                raise ForwardFailure(f"Error: {result}")
            print(f"Warning: {result}", file=sys.stderr)
        elif isinstance(result, BaseException):
            raise result
        else:
            if fwd.listen_port == 0:
                print(f"Allocated port {result.port} for remote forward to {result.target}", file=sys.stderr)
            listeners.append(result)
    return listeners
