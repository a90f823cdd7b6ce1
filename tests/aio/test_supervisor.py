"""Reconnect: the backoff policy (no clock), and a Supervisor that brings a
client back after the in-process server went away, with -L bound throughout."""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from hashike.aio.client import SSHClient, connect
from hashike.aio.client_auth import AuthSettings, Identity
from hashike.aio.forward import Target
from hashike.aio.link import Link
from hashike.aio.pump import CorePump
from hashike.aio.server import Server, ServerOptions, listen
from hashike.aio.supervisor import Backoff, ReconnectPolicy, RemoteSpec, Supervisor
from hashike.keys.keypair import generate_private_key
from hashike.proto.errors import HostKeyNotVerified
from hashike.proto.hostkey import PrivateKey
from tests.aio.forwarding import CLIENT_KEY
from tests.echo import start_echo_server
from tests.helpers import eventually
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
        states: list[str] = []
        supervisor = Supervisor(_connector(port, key), policy, wait_timeout=10, on_state=states.append)
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
        assert states[0].startswith("reconnecting in ") and states[0].endswith(" s (attempt 1)"), states
        assert states[-1] == "connected to server; 1 forward up", states
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


class _StubCore:
    closed = True


class _StubPump:
    core = _StubCore()


def _stub_link(queue_limit: int, wait_timeout: float | None = None) -> Link:
    link = Link(cast("CorePump[Any]", _StubPump()))  # a connection that is down
    link.queue_limit, link.wait_timeout = queue_limit, wait_timeout
    return link


def _waiter(log: list[str], name: str) -> Callable[..., None]:
    return lambda *_: log.append(name)


async def test_link_queue_is_bounded_and_each_wait_times_out() -> None:
    link = _stub_link(2, 0.05)
    went: list[str] = []
    dropped: list[str] = []
    for name in ("a", "b", "c"):
        link.when_up(_waiter(went, name), _waiter(dropped, name))
    assert dropped == ["c"] and link.waiting == 2  # past the queue limit: closed at once
    await eventually(lambda: dropped == ["c", "a", "b"], what="the waits timing out")
    assert went == [] and link.waiting == 0


async def test_link_switch_sends_what_waited_in_order() -> None:
    link = _stub_link(8)
    went: list[str] = []
    for name in ("a", "b"):
        link.when_up(_waiter(went, name), _waiter(went, "dropped"))
    fresh = cast("CorePump[Any]", _StubPump())
    link.switch(fresh)
    assert went == ["a", "b"] and link.pump is fresh and link.waiting == 0


async def test_a_refused_remote_forward_is_retried_alone(tmp_path: Path) -> None:
    key = host_key()
    server = await _serve(tmp_path, 0, key)
    echo = await start_echo_server()
    echo_host, echo_port = echo.sockets[0].getsockname()[:2]
    holder = socket.create_server(("127.0.0.1", 0))  # the port is taken: the first request fails
    remote_port = holder.getsockname()[1]
    policy = ReconnectPolicy(initial=0.05, cap=0.2)
    supervisor = Supervisor(_connector([server.port], key), policy)
    supervisor.forward_remote(RemoteSpec(None, remote_port, Target(echo_host, echo_port)))
    async with echo, server, asyncio.timeout(30):
        async for _client in supervisor:
            holder.close()

            async def echoed() -> bool:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", remote_port)
                except OSError:
                    return False
                writer.write(b"ping")
                data = await reader.read(4)
                writer.close()
                return data == b"ping"

            restored = False
            for _ in range(600):  # bounded by the timeout above
                restored = await echoed()
                if restored:
                    break
                await asyncio.sleep(0.05)
            assert restored, "the refused -R was not retried"
            break
        assert supervisor.client is not None
        supervisor.client.close()
