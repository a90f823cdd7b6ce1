"""The asyncio runtime end to end on loopback: hashike client -> hashike server."""

from __future__ import annotations

import asyncio

import pytest

from hashike.aio.client import connect
from hashike.aio.server import ServerOptions, listen
from hashike.proto.errors import ConnectionClosed, HostKeyNotVerified
from hashike.proto.hostkey import PublicKey
from tests.helpers import eventually
from tests.proto.pair import host_key


async def test_client_reaches_userauth_on_hashike_server() -> None:
    key = host_key()
    async with await listen("127.0.0.1", 0, host_keys=[key]) as server:
        seen: list[PublicKey] = []

        def check(k: PublicKey) -> bool:
            seen.append(k)
            return k == key.public_key

        async with await connect("127.0.0.1", server.port, check_host_key=check) as client:
            assert client.negotiated.kex == "mlkem768x25519-sha256"
            assert client.server_version.startswith("hashike")
            assert client.core.service_accepted
        assert seen == [key.public_key]


async def test_rejected_host_key_fails_closed() -> None:
    async with await listen("127.0.0.1", 0, host_keys=[host_key()]) as server:
        with pytest.raises(HostKeyNotVerified):
            await connect("127.0.0.1", server.port, check_host_key=lambda k: False)


async def test_login_grace_time_disconnects() -> None:
    options = ServerOptions(login_grace_time=0.2)
    async with await listen("127.0.0.1", 0, host_keys=[host_key()], options=options) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        banner = await asyncio.wait_for(reader.readline(), 5)
        assert banner.startswith(b"SSH-2.0-hashike")
        # Say nothing more: the server must hang up on its own.
        rest = await asyncio.wait_for(reader.read(), 5)
        assert reader.at_eof()
        assert rest  # its KEXINIT, then nothing
        writer.close()


async def test_rekey_over_sockets() -> None:
    key = host_key()
    async with await listen("127.0.0.1", 0, host_keys=[key]) as server:
        client = await connect("127.0.0.1", server.port, check_host_key=lambda k: True)
        async with client:
            first = client.core.transport.session_id
            client.rekey()
            await eventually(lambda: not client.core.transport.send_blocked, what="the rekey completes")
            assert client.core.transport.session_id == first


async def test_verbose_log_names_every_key_exchange_rekeys_included() -> None:
    """ssh -v logs each exchange's algorithms; we logged only the first."""
    lines: list[str] = []
    async with await listen("127.0.0.1", 0, host_keys=[host_key()]) as server:
        client = await connect("127.0.0.1", server.port, check_host_key=lambda k: True, log=lines.append)
        async with client:
            kex_lines = [line for line in lines if line.startswith("kex: ")]
            assert len(kex_lines) == 1
            for _ in range(2):
                client.rekey()
                await eventually(lambda: not client.core.transport.send_blocked, what="the rekey completes")
            await eventually(
                lambda: len([line for line in lines if line.startswith("kex: ")]) == 3,
                what="a kex line for each rekey",
            )


async def test_connection_refused_is_clear() -> None:
    sock_server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = sock_server.sockets[0].getsockname()[1]
    sock_server.close()
    await sock_server.wait_closed()
    with pytest.raises(OSError):
        await connect("127.0.0.1", port, check_host_key=lambda k: True)


async def test_peer_hanging_up_mid_handshake() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-Fake\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        with pytest.raises(ConnectionClosed):
            await connect("127.0.0.1", port, check_host_key=lambda k: True)
