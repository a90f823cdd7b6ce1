"""``Reconnect`` for ``hashike -N`` (a hashike extension; ssh reads it under
``IgnoreUnknown Reconnect,ReconnectMaxDelay``).

Once the first login has succeeded and every forward was set up, a lost
connection is made again by :class:`hashike.aio.supervisor.Supervisor`, the
library's own, with ssh-style lines (``Connection to HOST port P lost: ...;
reconnecting in 4 s (attempt 3)``, ``Reconnected to HOST; 3 forwards
restored``) and a systemd STATUS for each. ``-L``/``-D`` stay bound; ``-R``
is requested again, its allocated port printed again for port 0. A host key
that no longer verifies (known_hosts printed ssh's warning) or a refused
login ends the command with 255, as does running out of attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

from hashike.aio.client import SSHClient
from hashike.aio.remote import RemoteListener
from hashike.aio.supervisor import ReconnectPolicy, RemoteSpec, Supervisor
from hashike.config.ssh_config import ClientSettings
from hashike.proto.errors import AuthenticationFailed, HostKeyNotVerified

from .remote import remote_spec
from .runtime_forwards import ForwardTable
from .service import notifier

__all__ = ["stay_connected"]

EXIT_FAILURE = 255
Login = Callable[[], Awaitable[tuple[SSHClient, ClientSettings]]]
Follow = Callable[[SSHClient], None]


def _allocated(spec: RemoteSpec, listener: RemoteListener) -> None:
    if spec.listen_socket is None and spec.listen_port == 0:
        print(
            f"Allocated port {listener.port} for remote forward to {listener.describe_target()}",
            file=sys.stderr,
        )


def _supervisor(client: SSHClient, settings: ClientSettings, login: Login, table: ForwardTable) -> Supervisor:
    async def again() -> SSHClient:
        return (await login())[0]

    def established(spec: RemoteSpec, listener: RemoteListener) -> None:
        _allocated(spec, listener)
        table.reestablished(spec, listener)

    policy = ReconnectPolicy(attempts=settings.reconnect, cap=float(settings.reconnect_max_delay))
    supervisor = Supervisor(
        again,
        policy,
        label=(settings.hostname, settings.port),
        first=client,
        wait_timeout=settings.connect_timeout,
        on_state=notifier().status,
        on_remote=established,
    )
    for fwd in settings.remote_forwards:
        supervisor.forward_remote(remote_spec(fwd))
    # Those added later (-O forward, ~C) from now on too.
    table.supervisor = supervisor
    for fwd in table.forwards:
        if fwd.kind == "remote" and fwd not in settings.remote_forwards:
            supervisor.forward_remote(remote_spec(fwd))
    return supervisor


async def _follow(supervisor: Supervisor, first: SSHClient, follow: Follow) -> int:
    notify = notifier()
    try:
        async for client in supervisor:
            follow(client)
            if client is not first:  # the first one feeds the watchdog already (announce_ready)
                client.keepalive.on_reply.append(lambda _rtt: notify.alive())
            await client.wait_closed()
    except HostKeyNotVerified:
        return EXIT_FAILURE  # known_hosts said why, with ssh's warning block
    except AuthenticationFailed as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_FAILURE  # the attempts ran out


async def stay_connected(
    client: SSHClient,
    settings: ClientSettings,
    stop: asyncio.Event,
    login: Login,
    table: ForwardTable,
    follow: Follow,
) -> int:
    """-N with Reconnect: until a signal (0), or a fatal end (255). ``table``
    holds every forward; ``follow`` hears of each connection made (a
    master's, to use it)."""
    supervisor = _supervisor(client, settings, login, table)
    following = asyncio.ensure_future(_follow(supervisor, client, follow))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following  # the supervisor's own cleanup runs
    current = supervisor.client
    if current is not None and current is not client:
        current.close()
        await current.wait_closed()
    if following.done() and not following.cancelled():
        return following.result()
    return 0
