"""RemoteForwardTakeover (hashiked, a hashike extension): a -R for a port
that an earlier connection of the same user and key still holds moves to
the new connection; without the option, or with another key, it is refused
as sshd refuses a port in use."""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hashike.aio import remote_server
from hashike.aio.client import SSHClient, connect
from hashike.aio.client_auth import AuthSettings, Identity
from hashike.aio.forward import Target
from hashike.aio.listen import BindError, bind_all
from hashike.aio.remote import RemoteForwardFailed
from hashike.aio.server import Server, ServerOptions, listen
from hashike.config.policy import ForwardingPolicy
from hashike.keys.keypair import generate_private_key
from hashike.proto.hostkey import PrivateKey
from tests.proto.pair import host_key

KEYS = (generate_private_key(), generate_private_key())


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def _server(tmp_path: Path, takeover: bool) -> AsyncIterator[Server]:
    keys = tmp_path / "authorized_keys"
    keys.write_text("".join(k.public_key.openssh_line() + "\n" for k in KEYS))
    opts = ServerOptions(
        authorized_keys_files=(str(keys),),
        allow_users=(getpass.getuser(),),
        forwarding=replace(ForwardingPolicy(), remote_forward_takeover=takeover),
    )
    async with await listen("127.0.0.1", 0, host_keys=[host_key()], options=opts) as server:
        yield server


async def _client(server: Server, key: PrivateKey) -> SSHClient:
    async def loader() -> PrivateKey:
        return key

    auth = AuthSettings(username=getpass.getuser(), identities=[Identity(key.public_key, "k", loader)])
    return await connect(
        "127.0.0.1", server.port, check_host_key=lambda k: k == host_key().public_key, auth=auth
    )


@asynccontextmanager
async def _tag_server(tag: bytes) -> AsyncIterator[Target]:
    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(tag)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield Target("127.0.0.1", server.sockets[0].getsockname()[1])


async def _who_answers(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_the_port_moves_to_the_newer_connection_of_the_same_key(tmp_path: Path) -> None:
    port = free_port()
    async with _server(tmp_path, True) as server, _tag_server(b"old") as old, _tag_server(b"new") as new:
        first = await _client(server, KEYS[0])
        await first.forward_remote(None, port, old)
        assert await _who_answers(port) == b"old"
        second = await _client(server, KEYS[0])
        await second.forward_remote(None, port, new)
        assert await _who_answers(port) == b"new"
        for client in (first, second):
            client.close()
            await client.wait_closed()


@pytest.mark.parametrize(("takeover", "second_key"), [(False, 0), (True, 1)])
async def test_without_takeover_or_with_another_key_the_port_stays(
    tmp_path: Path, takeover: bool, second_key: int
) -> None:
    port = free_port()
    async with _server(tmp_path, takeover) as server, _tag_server(b"old") as old:
        first = await _client(server, KEYS[0])
        await first.forward_remote(None, port, old)
        second = await _client(server, KEYS[second_key])
        with pytest.raises(RemoteForwardFailed):
            await second.forward_remote(None, port, old)
        assert await _who_answers(port) == b"old"
        for client in (first, second):
            client.close()
            await client.wait_closed()


@pytest.mark.parametrize("released", [True, False])
async def test_a_port_held_by_another_process_is_bound_again_while_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, released: bool
) -> None:
    """A hashiked worker asks the others (Server.take_over_elsewhere) and
    binds again while the port is in use: here the other process is a plain
    socket closed after the first refused bind, or never."""
    port = free_port()
    holder = socket.create_server(("127.0.0.1", port))
    binds = []

    async def bind_then_release(*args: Any, **kwargs: Any) -> list[asyncio.Server]:
        binds.append(port)
        try:
            return await bind_all(*args, **kwargs)
        except BindError:
            if released:
                holder.close()
            raise

    monkeypatch.setattr(remote_server, "bind_all", bind_then_release)
    monkeypatch.setattr(remote_server, "TAKEOVER_PAUSE", 0.0)
    asked: list[tuple[tuple[str, str], str, int]] = []

    def elsewhere(who: tuple[str, str], address: str, port: int) -> bool:
        asked.append((who, address, port))
        return True

    async with _server(tmp_path, True) as server, _tag_server(b"new") as new:
        server.take_over_elsewhere = elsewhere
        client = await _client(server, KEYS[0])
        try:
            if released:
                await client.forward_remote(None, port, new)
                assert await _who_answers(port) == b"new"
            else:
                with pytest.raises(RemoteForwardFailed):
                    await client.forward_remote(None, port, new)
        finally:
            holder.close()
            client.close()
            await client.wait_closed()
    assert [request[0] for request in asked] == [(getpass.getuser(), KEYS[0].public_key.fingerprint())]
    assert asked[0][2] == port
    assert len(binds) == (2 if released else remote_server.TAKEOVER_BINDS)
