"""hashiked's status snapshot (issue 11): who is logged in, from where, and
what each connection holds: its ``-R`` listeners and its onward ``-L``
(direct-tcpip) connections, with bytes each way.

Nothing is counted here: the bridges add to their own ``bytes_in`` /
``bytes_out`` per chunk (aio/bridge.py) and the listeners' and onward
connections' ForwardStats (aio/stats.py) keep the set of open ones; a
snapshot only sums them. ``bytes_in`` is what came on the channel, from the
client (written to the target or to the -R listener's peer), ``bytes_out``
what went back to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .forward import address_text
from .server import Server
from .stats import SCHEMA

__all__ = ["snapshot", "snapshot_of"]


def snapshot(server: Server) -> dict[str, Any]:
    """The document ``hashike status --server`` shows (schema in the README)."""
    now = time.time()
    connections = []
    for pump in server.connections:
        if not pump.core.authenticated:
            continue  # not logged in yet: nobody to show
        onward = pump.onward.as_json()
        connections.append(
            {
                "pid": os.getpid(),
                "user": pump.core.auth_username or "",
                "peer": address_text(pump.peername or ("?", 0)),
                "started": pump.started,
                "uptime": now - pump.started,
                "listeners": [_listener(stats.as_json()) for stats in pump.remote_forwards.stats()],
                "onward": onward["open_connections"],
                "onward_total": {key: onward[key] for key in ("connections", "bytes_in", "bytes_out")},
            }
        )
    connections.sort(key=lambda c: c["started"])
    return {"schema": SCHEMA, "pid": os.getpid(), "connections": connections}


def snapshot_of(server: Server) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``snapshot`` as the status socket asks for it (aio/server_status.py)."""

    async def take() -> dict[str, Any]:
        document = snapshot(server)
        if server.children is not None:  # PrivilegeSeparation: each child has its connection
            document["connections"] += await server.children.connections()
            document["connections"].sort(key=lambda c: c.get("started", 0))
        return document

    return take


def _listener(stats: dict[str, Any]) -> dict[str, Any]:
    keep = ("listen", "open", "connections", "bytes_in", "bytes_out", "open_connections")
    return {key: stats[key] for key in keep}
