"""Dynamic forwarding (-D) between hashike's client and hashike's server,
in-process on loopback: each protocol, refusals and their reply codes, hostile
and slow clients, integrity with half-close both ways, and a burst."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import pytest

from hashike.aio.server import ServerOptions
from hashike.config.policy import ForwardingPolicy
from hashike.proto.socks import Reply
from tests.aio.forwarding import hashike_pair
from tests.echo import INTEGRITY_SIZE, round_trip, start_echo_server
from tests.helpers import eventually
from tests.socks_client import (
    HOSTILE_HANDSHAKES,
    HOSTILE_IDS,
    socks4_request,
    socks5_connect,
    socks5_greeting,
    socks5_request,
)


async def _echo_port() -> tuple[asyncio.Server, int]:
    echo = await start_echo_server()
    return echo, echo.sockets[0].getsockname()[1]


async def _closed_port() -> int:
    probe = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port: int = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    return port


async def _round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    assert await asyncio.wait_for(reader.readexactly(len(data)), 30) == data


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_socks5_connect(tmp_path: Path, host: str) -> None:
    echo, port = await _echo_port()
    async with hashike_pair(tmp_path) as (_server, client):
        proxy = await client.forward_socks(None, 0)
        code, reader, writer = await socks5_connect(proxy.port, host, port)
        assert code == Reply.SUCCEEDED
        await _round_trip(reader, writer, b"through the proxy\n")
        writer.write_eof()  # half-close: the echo still answers, then EOF
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        assert proxy.connections == 1
        proxy.close()
    echo.close()


@pytest.mark.parametrize("by_name", [False, True], ids=["socks4", "socks4a"])
async def test_socks4_connect(tmp_path: Path, by_name: bool) -> None:
    echo, port = await _echo_port()
    async with hashike_pair(tmp_path) as (_server, client):
        proxy = await client.forward_socks(None, 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        host = "localhost" if by_name else "127.0.0.1"
        writer.write(socks4_request(host, port, by_name=by_name, user=b"alice"))
        assert await asyncio.wait_for(reader.readexactly(8), 30) == b"\x00\x5a" + bytes(6)
        await _round_trip(reader, writer, b"four\n")
        writer.close()
    echo.close()


async def test_one_byte_at_a_time_with_early_data(tmp_path: Path) -> None:
    """A client that trickles its handshake and sends data before our reply."""
    echo, port = await _echo_port()
    async with hashike_pair(tmp_path) as (_server, client):
        proxy = await client.forward_socks(None, 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for byte in socks5_greeting(2, 0) + socks5_request("127.0.0.1", port) + b"early":
            writer.write(bytes((byte,)))
            await writer.drain()
            await asyncio.sleep(0)
        assert await asyncio.wait_for(reader.readexactly(12), 30) == b"\x05\x00\x05\x00\x00\x01" + bytes(6)
        assert await asyncio.wait_for(reader.readexactly(5), 30) == b"early"
        writer.close()
    echo.close()


async def test_refusals_get_their_reply_and_the_proxy_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    echo, port = await _echo_port()
    closed = await _closed_port()
    caplog.set_level(logging.INFO, logger="hashike")
    async with hashike_pair(tmp_path) as (_server, client):
        proxy = await client.forward_socks(None, 0)
        for host, target, expected in [
            ("127.0.0.1", closed, Reply.CONNECTION_REFUSED),
            ("no-such-host.invalid", 80, Reply.HOST_UNREACHABLE),
        ]:
            code, reader, writer = await socks5_connect(proxy.port, host, target)
            assert code == expected
            assert await asyncio.wait_for(reader.read(), 30) == b""  # then closed
            writer.close()
        # SOCKS4 has one code for every failure.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(socks4_request("127.0.0.1", closed))
        assert await asyncio.wait_for(reader.read(), 30) == b"\x00\x5b" + bytes(6)
        writer.close()
        code, reader, writer = await socks5_connect(proxy.port, "127.0.0.1", port)
        assert code == Reply.SUCCEEDED
        await _round_trip(reader, writer, b"still working\n")
        writer.close()
        assert not client.core.closed
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("open failed: connect failed: Connection refused") for m in messages), messages
    assert any(
        f"socks5 host 127.0.0.1 port {closed} command 1: refused (SOCKS reply 0x05)" in m for m in messages
    )
    echo.close()


async def test_prohibited_target_is_not_allowed(tmp_path: Path) -> None:
    options = ServerOptions(forwarding=ForwardingPolicy(allow_tcp_forwarding="no"))
    async with hashike_pair(tmp_path, options) as (_server, client):
        proxy = await client.forward_socks(None, 0)
        code, reader, writer = await socks5_connect(proxy.port, "127.0.0.1", 9)
        assert code == Reply.NOT_ALLOWED
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()


@pytest.mark.parametrize(("handshake", "answer"), HOSTILE_HANDSHAKES, ids=HOSTILE_IDS)
async def test_hostile_handshakes_close_only_that_client(
    tmp_path: Path, handshake: bytes, answer: bytes
) -> None:
    echo, port = await _echo_port()
    async with hashike_pair(tmp_path) as (_server, client):
        proxy = await client.forward_socks(None, 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(handshake)
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), 30)
        assert got == answer
        writer.close()
        code, reader, writer = await socks5_connect(proxy.port, "127.0.0.1", port)
        assert code == Reply.SUCCEEDED
        writer.close()
        assert not client.core.closed and len(client.core.channels) <= 1
    echo.close()


async def test_slow_handshake_is_cut_off(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        proxy = await client.forward_socks(None, 0, handshake_timeout=0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"\x05")  # and nothing more
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        assert not client.core.closed and len(client.core.channels) == 0


SIZE = INTEGRITY_SIZE


async def test_integrity_both_directions_with_half_close(tmp_path: Path) -> None:
    """SIZE bytes out and back through -D; the far side (the echo server)
    sees every byte, and its SHA-256 is checked against what was sent."""
    far = hashlib.sha256()
    far_count = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal far_count
        while chunk := await reader.read(1 << 18):
            far.update(chunk)
            far_count += len(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        writer.close()

    echo = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with hashike_pair(tmp_path) as (_server, client):
        proxy = await client.forward_socks(None, 0)
        code, reader, writer = await socks5_connect(proxy.port, "127.0.0.1", echo.sockets[0].getsockname()[1])
        assert code == Reply.SUCCEEDED
        received, got, sent = await round_trip(reader, writer, SIZE, 180)
        assert far_count == received == SIZE
        assert far.hexdigest() == got == sent
        writer.close()
    echo.close()


async def test_burst_of_connections_through_one_proxy(tmp_path: Path) -> None:
    echo, port = await _echo_port()
    count = int(os.environ.get("HASHIKE_BURST", "1000"))
    payload = os.urandom(16 * 1024)
    async with hashike_pair(tmp_path) as (_server, client):
        proxy = await client.forward_socks(None, 0)

        async def one() -> bool:
            code, reader, writer = await socks5_connect(proxy.port, "127.0.0.1", port)
            writer.write(payload)
            writer.write_eof()
            data = await reader.read()
            writer.close()
            return code == Reply.SUCCEEDED and data == payload

        results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 240)
        assert results.count(True) == count
        await eventually(lambda: len(client.core.channels) == 0, what=lambda: client.core.channels)
    echo.close()
