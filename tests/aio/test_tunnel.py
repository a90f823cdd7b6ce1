"""``connect(tunnel=...)``: a connection carried in a channel of another, in
process (how ``-J`` is built), and ``connect(proxy_command=...)``."""

from __future__ import annotations

import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from hashike.aio.client import SSHClient, connect
from hashike.aio.client_auth import AuthSettings, Identity
from hashike.aio.server import Server
from hashike.aio.tunnel import ChannelTransport
from hashike.proto.constants import OpenFailureReason
from hashike.proto.errors import ChannelOpenFailed, ConnectionClosed
from tests.aio.forwarding import CLIENT_KEY, _loader, hashike_pair
from tests.echo import round_trip, start_echo_server
from tests.helpers import eventually

TUNNEL_SIZE = 16 << 20  # several windows' worth, both ways, through both layers


async def through(
    outer: SSHClient | None, server: Server, *, host: str = "127.0.0.1", proxy: str | None = None
) -> SSHClient:
    """A second login to ``server``, carried by ``outer`` (or ``proxy``)."""
    auth = AuthSettings(
        username=getpass.getuser(), identities=[Identity(CLIENT_KEY.public_key, "t", _loader)]
    )
    key = server.host_keys[0].public_key
    return await connect(
        host, server.port, check_host_key=lambda k: k == key, auth=auth, tunnel=outer, proxy_command=proxy
    )


def channels(client: SSHClient) -> int:
    return len(client._pump.bridges)


async def test_inner_connection_carries_data_both_ways_with_flow_control(tmp_path: Path) -> None:
    echo = await start_echo_server()
    async with hashike_pair(tmp_path) as (server, outer):
        inner = await through(outer, server)
        assert inner.remote_address == ("127.0.0.1", server.port)
        assert channels(outer) == 1
        reader, writer = await inner.open_connection("127.0.0.1", echo.sockets[0].getsockname()[1])
        received, got, sent = await round_trip(reader, writer, TUNNEL_SIZE, timeout=120)
        assert (received, got) == (TUNNEL_SIZE, sent)
        assert (await inner.run("echo inner")).stdout == b"inner\n"
        inner.close()
        await asyncio.wait_for(inner.wait_closed(), 10)
        # Closing the inner connection closed its channel; the outer goes on.
        await eventually(lambda: channels(outer) == 0, what=lambda: f"{channels(outer)} channels")
        assert (await outer.run("echo outer")).stdout == b"outer\n"
    echo.close()


async def test_two_tunnels_deep(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (server, outer):
        middle = await through(outer, server)
        inner = await through(middle, server)
        assert (await inner.run("echo deep")).stdout == b"deep\n"
        outer.close()
        # The outer connection's end ends every connection it carries.
        await asyncio.wait_for(middle.wait_closed(), 10)
        await asyncio.wait_for(inner.wait_closed(), 10)


async def test_refused_tunnel_is_a_failed_open(tmp_path: Path) -> None:
    echo = await start_echo_server()
    port = echo.sockets[0].getsockname()[1]
    echo.close()
    await echo.wait_closed()
    async with hashike_pair(tmp_path) as (server, outer):
        with pytest.raises(ChannelOpenFailed) as info:
            await connect("127.0.0.1", port, check_host_key=lambda k: False, tunnel=outer)
        assert info.value.reason == OpenFailureReason.CONNECT_FAILED
        assert (await outer.run("echo still")).stdout == b"still\n"
        del server


async def test_outer_loss_during_the_handshake_says_so(tmp_path: Path) -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # says nothing, as a server that hangs would
        writer.close()

    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with hashike_pair(tmp_path) as (server, outer):
        pending = asyncio.ensure_future(
            connect(
                "127.0.0.1", mute.sockets[0].getsockname()[1], check_host_key=lambda k: True, tunnel=outer
            )
        )
        await asyncio.wait_for(accepted.wait(), 10)
        outer.close()
        with pytest.raises(ConnectionClosed, match="lost with its jump host"):
            await asyncio.wait_for(pending, 10)
        del server
    mute.close()


class _Inner:
    """Stands for the inner connection's pump: records how its transport ended."""

    def __init__(self) -> None:
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: object) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def test_a_channel_closed_before_its_protocol_starts_still_ends_it(tmp_path: Path) -> None:
    # open_tunnel awaits the open; the outer connection may end before the
    # inner protocol is started on the channel. Starting it then must report
    # the loss, not leave the inner handshake waiting for ever.
    async with hashike_pair(tmp_path) as (_server, outer):
        transport = ChannelTransport(outer._pump, "127.0.0.1", 9)
        outer.close()
        await outer.wait_closed()
        transport.channel_closed()
        inner = _Inner()
        transport.start(cast(Any, inner))
        exc = await asyncio.wait_for(inner.lost, 10)
        assert isinstance(exc, ConnectionClosed) and "lost with its jump host" in str(exc)


async def test_a_closed_tunnel_is_refused_at_once(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (server, outer):
        outer.close()
        await outer.wait_closed()
        with pytest.raises(ConnectionClosed):
            await through(outer, server)


async def test_proxy_command_is_the_transport(tmp_path: Path) -> None:
    relay = Path(__file__).parent.parent / "relay.py"
    async with hashike_pair(tmp_path) as (server, _outer):
        inner = await through(None, server, proxy=f"{sys.executable} {relay} 127.0.0.1 {server.port}")
        assert (await inner.run("echo proxied")).stdout == b"proxied\n"
        inner.close()
        # Closed only once the command is reaped.
        await asyncio.wait_for(inner.wait_closed(), 10)
