"""Reconnect: the backoff policy (no clock), and a Supervisor that brings a
client back after the in-process server went away, with -L bound throughout."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hashike.aio.client import SSHClient, connect
from hashike.aio.client_auth import AuthSettings, Identity
from hashike.aio.server import Server, ServerOptions, listen
from hashike.aio.supervisor import Backoff, ReconnectPolicy, Supervisor
from hashike.keys.keypair import generate_private_key
from hashike.proto.errors import HostKeyNotVerified
from hashike.proto.hostkey import PrivateKey
from tests.aio.forwarding import CLIENT_KEY
from tests.echo import start_echo_server
from tests.proto.pair import host_key


def test_backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() -> None:
    top = Backoff(ReconnectPolicy(cap=10.0), random=lambda: 0.999999)
    assert [round(top.next_delay() or 0, 3) for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    low = Backoff(ReconnectPolicy(cap=10.0), random=lambda: 0.0)
    assert [low.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 5.0]


def test_backoff_counts_attempts_and_gives_up() -> None:
    backoff = Backoff(ReconnectPolicy(attempts=2), random=lambda: 0.5)
    assert backoff.next_delay() is not None and backoff.attempt == 1
    assert backoff.next_delay() is not None
    assert backoff.next_delay() is None


def test_backoff_resets_only_after_a_long_connection() -> None:
    backoff = Backoff(ReconnectPolicy(reset_after=30.0), random=lambda: 0.999999)
    for _ in range(3):
        backoff.next_delay()
    backoff.connected_for(29.0)
    assert round(backoff.next_delay() or 0) == 8
    backoff.connected_for(30.0)
    assert round(backoff.next_delay() or 0) == 1


async def _serve(tmp_path: Path, port: int, key: PrivateKey) -> Server:
    keys = tmp_path / "authorized_keys"
    keys.write_text(CLIENT_KEY.public_key.openssh_line() + "\n")
    opts = ServerOptions(authorized_keys_files=(str(keys),), allow_users=(getpass.getuser(),))
    return await listen("127.0.0.1", port, host_keys=[key], options=opts)


async def _loader() -> PrivateKey:
    return CLIENT_KEY


def _connector(port_box: list[int], known: PrivateKey) -> Callable[[], Awaitable[SSHClient]]:
    async def connect_once() -> SSHClient:
        identity = Identity(CLIENT_KEY.public_key, "t", _loader)
        auth = AuthSettings(username=getpass.getuser(), identities=[identity])
        return await connect(
            "127.0.0.1", port_box[0], check_host_key=lambda k: k == known.public_key, auth=auth, timeout=5
        )

    return connect_once


async def test_listener_stays_bound_and_a_connection_made_while_down_goes_through(tmp_path: Path) -> None:
    key = host_key()
    server = await _serve(tmp_path, 0, key)
    port = [server.port]
    echo = await start_echo_server()
    echo_host, echo_port = echo.sockets[0].getsockname()[:2]
    async with echo:
        policy = ReconnectPolicy(initial=0.05, cap=0.2)
        supervisor = Supervisor(_connector(port, key), policy, wait_timeout=10)
        clients = []
        async with asyncio.timeout(30):
            async for client in supervisor:
                clients.append(client)
                if len(clients) == 1:
                    listener = await client.forward_local(None, 0, echo_host, echo_port)
                    server.close()
                    await server.wait_closed()
                    # Connect while the link is down: it waits for the next server.
                    pending = asyncio.ensure_future(asyncio.open_connection("127.0.0.1", listener.port))
                    server = await _serve(tmp_path, port[0], key)
                    continue
                reader, writer = await pending
                writer.write(b"through the outage")
                await writer.drain()
                assert await reader.readexactly(18) == b"through the outage"
                writer.close()
                break
        assert clients[0] is not clients[1] and clients[1].link is clients[0].link
        clients[1].close()
        server.close()


async def test_a_changed_host_key_is_never_retried(tmp_path: Path) -> None:
    key = host_key()
    server = await _serve(tmp_path, 0, key)
    port = [server.port]
    supervisor = Supervisor(_connector(port, key), ReconnectPolicy(initial=0.05))
    seen = 0
    with pytest.raises(HostKeyNotVerified):
        async with asyncio.timeout(30):
            async for _client in supervisor:
                seen += 1
                server.close()
                await server.wait_closed()
                server = await _serve(tmp_path, port[0], generate_private_key())  # another key
    assert seen == 1
    server.close()
