"""``hashike status``: every running hashike connection of this user, with
its forwards and their counters (issue 11).

Masters are found through the symlinks they leave in the per-user runtime
directory (config/runtime_dir.py), or named with ``-S PATH``. Each is asked
with hashike's MUX_C_HASHIKE_STATUS (proto/mux.py); an OpenSSH master answers
that "unsupported request" and is shown as "OpenSSH master (no status)". A
discovered entry whose socket is gone or refuses connections is stale and is
removed, as ssh removes a dead ControlPath. ``rich`` is imported here only,
so the client's start-up does not pay for it.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hashike.aio import stats
from hashike.aio.mux import MuxClient, MuxError
from hashike.config.runtime_dir import RuntimeDirError, runtime_dir
from hashike.proto import mux
from hashike.proto.text import escape_text

__all__ = ["main"]

NO_STATUS = "OpenSSH master (no status)"
_STALE = (errno.ECONNREFUSED, errno.ENOENT)
WATCH_INTERVAL = 1.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hashike status", description="show running hashike connections")
    p.add_argument(
        "-S", dest="control_path", metavar="PATH", help="ask only the master on this control socket"
    )
    p.add_argument("--server", metavar="SOCKET", help="ask the hashiked listening on this StatusSocket")
    p.add_argument("--json", action="store_true", help="print the documented JSON schema (README)")
    p.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    return p


async def query(path: str) -> dict[str, Any]:
    """One master's answer: its snapshot, or ``{"error": ...}``; MuxError
    (with ``errno``) when its socket cannot be reached."""
    async with MuxClient.connect(path) as client:
        reply = await client.request(mux.StatusRequest(request_id=client.request_id()))
    if isinstance(reply, mux.StatusReply):
        document = json.loads(reply.document)
        if isinstance(document, dict):
            return document
    if isinstance(reply, mux.Failure | mux.PermissionDenied):
        return {"error": NO_STATUS}
    return {"error": "master gave no status"}


def _entries(explicit: str | None) -> list[tuple[str, Path | None]]:
    """(socket path, its runtime-directory entry): entries may be cleaned up."""
    if explicit is not None:
        return [(explicit, None)]
    found: dict[str, Path] = {}
    for entry in sorted(runtime_dir().glob("*.sock")):
        # A profile's socket is in the directory and its symlink too: once.
        found.setdefault(os.path.realpath(entry), entry)
    return list(found.items())


async def collect(explicit: str | None) -> dict[str, Any]:
    connections = []
    for path, entry in _entries(explicit):
        try:
            document = await query(path)
        except MuxError as exc:
            if entry is not None and (exc.errno in _STALE or not os.path.exists(path)):
                entry.unlink(missing_ok=True)  # a dead master's
                continue
            document = {"error": str(exc)}
        connections.append({"control_path": path, **document})
    return {"schema": stats.SCHEMA, "connections": connections}


def _size(n: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = min(int(math.log(n, 1024)) if n > 0 else 0, len(units) - 1)
    return f"{n} B" if i == 0 else f"{n / 1024**i:.1f} {units[i]}"


Rates = dict[tuple[str, str, str], str]


def render(document: dict[str, Any], rates: Rates | None = None) -> Any:
    """The view: one table, a row per forward under its connection's row and
    a row per open forwarded connection under its forward's; ``rates`` (the
    live view's, between two refreshes) by forward."""
    from rich.table import Table

    table = Table(title="hashike status")
    for name in ("connection", "kind", "listen → target", "open", "total", "in", "out", "rate in/out"):
        table.add_column(name, no_wrap=True)  # a row per forward: an address cut in two misleads
    for conn in document["connections"]:
        info = conn.get("connection") or {}
        who = f"{info.get('user', '?')}@{info.get('host', '?')}" if info else conn["control_path"]
        table.add_row(escape_text(who), escape_text(conn.get("error") or _state(info)))
        for f in conn.get("forwards", []):
            route = escape_text(f"{f['listen']} → {f['target']}")
            counts = (str(f["open"]), str(f["connections"]), _size(f["bytes_in"]), _size(f["bytes_out"]))
            rate = (rates or {}).get(_key(conn, f), "")
            table.add_row("", f["kind"], route, *counts, rate)
            for c in f.get("open_connections", []):
                peer = escape_text(f"  from {c['peer']}")
                table.add_row("", "", peer, "", "", _size(c["bytes_in"]), _size(c["bytes_out"]))
    return table


def _key(conn: dict[str, Any], forward: dict[str, Any]) -> tuple[str, str, str]:
    return (conn["control_path"], forward["kind"], forward["listen"])


def rates(before: dict[str, Any], after: dict[str, Any], seconds: float) -> Rates:
    """Each forward's bytes per second each way between two snapshots."""
    earlier = {_key(c, f): f for c in before["connections"] for f in c.get("forwards", [])}
    found: Rates = {}
    for conn in after["connections"]:
        for f in conn.get("forwards", []):
            if (old := earlier.get(_key(conn, f))) is not None and seconds > 0:
                speed_in = max(0, f["bytes_in"] - old["bytes_in"]) / seconds
                speed_out = max(0, f["bytes_out"] - old["bytes_out"]) / seconds
                found[_key(conn, f)] = f"{_size(int(speed_in))}/s / {_size(int(speed_out))}/s"
    return found


def _state(info: dict[str, Any]) -> str:
    """ "connected, up 12 s, 1 reconnect, rtt 3 ms"."""
    words = [str(info.get("state", "?")), f"up {int(info.get('uptime', 0))} s"]
    if reconnects := info.get("reconnects"):
        words.append(f"{reconnects} reconnect{'' if reconnects == 1 else 's'}")
    if (rtt := info.get("rtt")) is not None:
        words.append(f"rtt {rtt * 1000:.0f} ms")
    return ", ".join(words)


def show(document: dict[str, Any], as_json: bool, view: Callable[[dict[str, Any]], Any] = render) -> None:
    """``document`` as JSON, or as ``view`` draws it (hashiked's status has its own)."""
    if as_json:
        print(json.dumps(document, indent=2))
        return
    from rich.console import Console

    # Without a terminal: one plain snapshot, wide enough not to wrap rows.
    console = Console() if sys.stdout.isatty() else Console(width=200, color_system=None)
    console.print(view(document))


async def watch(explicit: str | None) -> None:
    """The live view: the table redrawn in place every second."""
    from rich.live import Live

    loop = asyncio.get_running_loop()
    before, when = await collect(explicit), loop.time()
    with Live(render(before), auto_refresh=False) as live:
        while True:  # until Ctrl-C
            await asyncio.sleep(WATCH_INTERVAL)
            after, now = await collect(explicit), loop.time()
            live.update(render(after, rates(before, after, now - when)), refresh=True)
            before, when = after, now


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.server is not None:
        from .server_status import show_server

        return show_server(args.server, as_json=args.json, watch=args.watch, prog="hashike status")
    try:
        if args.watch:
            asyncio.run(watch(args.control_path))
        else:
            show(asyncio.run(collect(args.control_path)), args.json)
    except RuntimeDirError as exc:
        print(f"hashike status: {exc}", file=sys.stderr)
        return 255
    except KeyboardInterrupt:
        return 0  # how --watch ends
    return 0
