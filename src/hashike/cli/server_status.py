"""``hashike status --server SOCKET`` and ``hashiked -O status``: the
connections logged in to a running hashiked, asked on its StatusSocket
(aio/server_status.py), as one table (plain without a terminal) or the JSON
document (README, "hashike status"). Every string in it came from a peer
(user names, addresses) and is escaped before it reaches the terminal.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from hashike.aio.server_status import StatusError, query
from hashike.proto.text import escape_text

from .status import WATCH_INTERVAL, _size, show

__all__ = ["render", "show_server"]

EXIT_FAILURE = 255


def _connection_row(conn: dict[str, Any]) -> list[str]:
    who = escape_text(f"{conn.get('user', '?')}@{conn.get('peer', '?')}")
    state = f"pid {conn.get('pid', '?')}, up {int(conn.get('uptime', 0))} s"
    return [who, state, "", "", "", "", ""]


def _rows(conn: dict[str, Any]) -> list[list[str]]:
    rows = [_connection_row(conn)]
    for listener in conn.get("listeners", []):
        counts = [str(listener["open"]), str(listener["connections"])]
        sizes = [_size(listener["bytes_in"]), _size(listener["bytes_out"])]
        rows.append(["", "remote", escape_text(f"{listener['listen']} → client"), *counts, *sizes])
    for onward in conn.get("onward", []):
        route = escape_text(f"{onward['peer']} → {onward['target']}")
        rows.append(["", "local", route, "1", "", _size(onward["bytes_in"]), _size(onward["bytes_out"])])
    return rows


def render(document: dict[str, Any]) -> Any:
    """One table: a row per connection, then one per -R listener and per
    onward -L connection it holds."""
    from rich.table import Table

    table = Table(title="hashiked status")
    for name in ("connection", "kind", "listen → target", "open", "total", "in", "out"):
        table.add_column(name, no_wrap=True)
    for conn in document.get("connections", []):
        for row in _rows(conn):
            table.add_row(*row)
    for failed in document.get("errors", []):
        table.add_row(f"worker {failed.get('pid', '?')}", escape_text(str(failed.get("error", ""))))
    return table


async def _watch(path: str) -> None:
    from rich.live import Live

    with Live(render(await query(path)), auto_refresh=False) as live:
        while True:  # until Ctrl-C
            await asyncio.sleep(WATCH_INTERVAL)
            live.update(render(await query(path)), refresh=True)


def show_server(path: str, *, as_json: bool, watch: bool, prog: str) -> int:
    """Ask the hashiked on ``path`` and show its answer; one line and 255 if it cannot be asked."""
    try:
        if watch:
            asyncio.run(_watch(path))
        else:
            show(asyncio.run(query(path)), as_json, render)
    except StatusError as exc:
        print(f"{prog}: {escape_text(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 0  # how --watch ends
    return 0
