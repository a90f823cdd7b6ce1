"""Counters a running client keeps for ``hashike status`` (issue 11).

Cheap on the data path: the bridges already add ``len(data)`` to their own
``bytes_in`` / ``bytes_out`` per chunk (aio/bridge.py); a forward only keeps
the set of its open bridges and folds a bridge's totals into its own when the
connection ends, so a snapshot costs a sum over the open connections and
nothing is done per byte. The registry is per process: one hashike client
process is one connection, and its master answers for all of it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["SCHEMA", "ForwardStats", "Counted", "register", "snapshot", "unregister"]

SCHEMA = 1


class Counted(Protocol):
    """One forwarded connection: a SocketBridge (its byte counters)."""

    bytes_in: int  # from the channel, written to the local socket
    bytes_out: int  # read from the local socket, sent on the channel


@dataclass(eq=False, slots=True)
class _Open:
    peer: str
    target: str
    started: float


@dataclass(eq=False, slots=True)
class ForwardStats:
    """One forward: ``kind`` is local / remote / dynamic, ``listen`` and
    ``target`` as ssh writes them (``target`` is "socks" for -D)."""

    kind: str
    listen: str
    target: str
    connections: int = 0  # so far
    _open: dict[Counted, _Open] = field(default_factory=dict)
    _closed_in: int = 0
    _closed_out: int = 0

    def opened(self, conn: Counted, peer: str, target: str | None = None) -> None:
        """``target``: this connection's own, where the forward has none
        (the server's onward connections: each direct-tcpip names its own)."""
        self.connections += 1
        self._open[conn] = _Open(peer, target or self.target, time.time())

    def finished(self, conn: Counted) -> None:
        """Idempotent: a bridge may report its end more than once."""
        if self._open.pop(conn, None) is not None:
            self._closed_in += conn.bytes_in
            self._closed_out += conn.bytes_out

    def as_json(self) -> dict[str, Any]:
        live = list(self._open.items())
        return {
            "kind": self.kind,
            "listen": self.listen,
            "target": self.target,
            "open": len(live),
            "connections": self.connections,
            "bytes_in": self._closed_in + sum(c.bytes_in for c, _ in live),
            "bytes_out": self._closed_out + sum(c.bytes_out for c, _ in live),
            "open_connections": [
                {
                    "peer": o.peer,
                    "target": o.target,
                    "bytes_in": c.bytes_in,
                    "bytes_out": c.bytes_out,
                    "started": o.started,
                }
                for c, o in live
            ],
        }


_FORWARDS: list[ForwardStats] = []


def register(stats: ForwardStats) -> ForwardStats:
    _FORWARDS.append(stats)
    return stats


def unregister(stats: ForwardStats) -> None:
    if stats in _FORWARDS:
        _FORWARDS.remove(stats)


def snapshot(connection: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document ``hashike status --json`` prints for this process
    (schema in the README, "hashike status")."""
    return {
        "schema": SCHEMA,
        "pid": os.getpid(),
        "connection": connection or {},
        "forwards": [f.as_json() for f in _FORWARDS],
    }
