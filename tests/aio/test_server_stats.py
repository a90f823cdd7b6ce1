"""hashiked's status snapshot (aio/server_stats.py), hashike client against
hashike server in-process: the logged-in user and address, the -R listener
as bound with its open connection, the onward -L connection with bytes."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path
from typing import Any

from hashike.aio.forward import Target
from hashike.aio.server_stats import snapshot
from tests.aio.forwarding import hashike_pair
from tests.echo import start_echo_server
from tests.helpers import eventually

WAIT = 20.0
PAYLOAD = b"x" * 5000


def _one(document: dict[str, Any]) -> dict[str, Any]:
    (connection,) = document["connections"]
    assert isinstance(connection, dict)
    return connection


async def _echo_once(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``port``, send PAYLOAD and read it back; left open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PAYLOAD)
    assert await asyncio.wait_for(reader.readexactly(len(PAYLOAD)), WAIT) == PAYLOAD
    return reader, writer


async def test_snapshot_shows_user_listener_and_onward_bytes(tmp_path: Path) -> None:
    echo = await start_echo_server()
    echo_port = echo.sockets[0].getsockname()[1]
    async with hashike_pair(tmp_path) as (server, client):
        local = await client.forward_local(None, 0, "127.0.0.1", echo_port)
        remote = await client.forward_remote("127.0.0.1", 0, Target("127.0.0.1", echo_port))
        _, via_l = await _echo_once(local.port)
        _, via_r = await _echo_once(remote.port)
        await eventually(lambda: _one(snapshot(server))["listeners"][0]["open"] == 1, WAIT)
        connection = _one(snapshot(server))
        assert connection["user"] == getpass.getuser()
        assert connection["peer"].startswith("127.0.0.1:")
        assert connection["uptime"] >= 0
        (listener,) = connection["listeners"]
        assert listener["listen"] == f"127.0.0.1:{remote.port}"
        assert listener["bytes_out"] >= len(PAYLOAD)  # what the listener's peer sent
        (onward,) = connection["onward"]
        assert onward["target"] == f"127.0.0.1:{echo_port}"
        assert onward["bytes_in"] >= len(PAYLOAD) and onward["bytes_out"] >= len(PAYLOAD)
        via_l.close()
        via_r.close()
        # Closed, an onward connection leaves the list; its bytes stay in the total.
        await eventually(lambda: not _one(snapshot(server))["onward"], WAIT)
        assert _one(snapshot(server))["onward_total"]["bytes_in"] >= len(PAYLOAD)
    echo.close()


async def test_unauthenticated_connections_are_not_shown(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (server, _client):
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await eventually(lambda: len(server.connections) == 2, WAIT)
        assert len(snapshot(server)["connections"]) == 1
        writer.close()
