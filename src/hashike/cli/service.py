"""The ``hashike`` command as a systemd service (``Type=notify``), and its keepalives.

``READY=1`` goes once every forward is up, with a ``STATUS=`` line saying
so; each state change after that is a ``STATUS=``; ``WATCHDOG=1`` follows
each keepalive reply, so the manager restarts a tunnel whose server stopped
answering even before ServerAliveCountMax runs out. Outside a service every
call here is a no-op (see :class:`hashike.aio.service.Notifier`).
"""

from __future__ import annotations

import functools
from collections.abc import Sized

from hashike.aio.client import SSHClient
from hashike.aio.keepalive import KeepaliveOptions
from hashike.aio.service import Notifier
from hashike.config.ssh_config import ClientSettings

__all__ = ["announce_ready", "announce_end", "keepalive_options", "notifier", "timeout_line"]


@functools.cache
def notifier() -> Notifier:
    """This process's notifier, from the environment systemd gave it."""
    return Notifier.from_environment()


def keepalive_options(settings: ClientSettings) -> KeepaliveOptions:
    """ServerAliveInterval, ServerAliveCountMax, TCPKeepAlive. Under a
    watchdog the server is probed at least twice per watchdog period: the
    replies are what feeds the watchdog."""
    interval: float = settings.server_alive_interval
    watchdog = notifier().watchdog
    if watchdog is not None:
        interval = min(interval or watchdog, watchdog / 2)
    return KeepaliveOptions(interval, settings.server_alive_count_max, settings.tcp_keep_alive)


def announce_ready(client: SSHClient, settings: ClientSettings, forwards: Sized) -> None:
    """Every forward is up: READY=1, and from now on WATCHDOG=1 per keepalive reply."""
    notify = notifier()
    count = len(forwards)
    notify.ready(f"connected to {settings.hostname}; {count} forward{'' if count == 1 else 's'} up")
    client.keepalive.on_reply.append(lambda _rtt: notify.alive())


def announce_end(client: SSHClient, settings: ClientSettings) -> None:
    if client.keepalive.timed_out:
        notifier().stopping(f"server {settings.hostname} not responding")
    else:
        notifier().stopping(f"connection to {settings.hostname} closed")


def timeout_line(client: SSHClient, settings: ClientSettings) -> str | None:
    """ssh's line when ServerAliveCountMax ran out, if it did."""
    if client.keepalive.timed_out:
        return f"Timeout, server {settings.hostname} not responding."
    return None
