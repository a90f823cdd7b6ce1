"""Reverse dynamic forwarding (-R [bind:]port alone) between hashike's client
and hashike's server, in-process on loopback: the server listens, and our
client serves SOCKS on each forwarded-tcpip channel and connects where it
asks. Each protocol, the reply codes of refused and unreachable targets,
hostile and slow handshakes (only that channel goes), early data, integrity
with half-close both ways, and a burst."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

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

WAIT = 30.0


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
    assert await asyncio.wait_for(reader.readexactly(len(data)), WAIT) == data


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
async def test_socks5_through_the_remote_port(tmp_path: Path, host: str) -> None:
    echo, port = await _echo_port()
    if host == "::1":
        echo.close()
        echo = await asyncio.start_server(_echo, "::1", 0)
        port = echo.sockets[0].getsockname()[1]
    async with hashike_pair(tmp_path) as (server, client):
        listener = await client.forward_remote(None, 0, None)
        assert listener.target is None and listener.describe_target() == "socks:0"
        (pump,) = server.connections
        assert pump.remote_forwards.ports == [("localhost", listener.port)]
        code, reader, writer = await socks5_connect(listener.port, host, port)
        assert code == Reply.SUCCEEDED
        await _round_trip(reader, writer, b"through the reverse proxy\n")
        writer.write_eof()  # half-close: the echo still answers, then EOF
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        assert listener.connections == 1
    echo.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(1 << 16):
        writer.write(chunk)
    writer.close()


@pytest.mark.parametrize("by_name", [False, True], ids=["socks4", "socks4a"])
async def test_socks4_through_the_remote_port(tmp_path: Path, by_name: bool) -> None:
    echo, port = await _echo_port()
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_remote("127.0.0.1", 0, None)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        host = "localhost" if by_name else "127.0.0.1"
        writer.write(socks4_request(host, port, by_name=by_name, user=b"alice"))
        assert await asyncio.wait_for(reader.readexactly(8), WAIT) == b"\x00\x5a" + bytes(6)
        await _round_trip(reader, writer, b"four\n")
        writer.close()
    echo.close()


async def test_one_byte_at_a_time_with_early_data(tmp_path: Path) -> None:
    """A client that trickles its handshake and sends data before our reply:
    the data waits for the target's connection and reaches it."""
    echo, port = await _echo_port()
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_remote(None, 0, None)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        for byte in socks5_greeting(2, 0) + socks5_request("127.0.0.1", port) + b"early":
            writer.write(bytes((byte,)))
            await writer.drain()
            await asyncio.sleep(0)
        assert await asyncio.wait_for(reader.readexactly(12), WAIT) == b"\x05\x00\x05\x00\x00\x01" + bytes(6)
        assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"early"
        writer.close()
    echo.close()


async def test_refusals_get_their_reply_and_the_forward_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    echo, port = await _echo_port()
    closed = await _closed_port()
    caplog.set_level(logging.INFO, logger="hashike")
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_remote(None, 0, None)
        for host, target, expected in [
            ("127.0.0.1", closed, Reply.CONNECTION_REFUSED),
            ("no-such-host.invalid", 80, Reply.HOST_UNREACHABLE),
        ]:
            code, reader, writer = await socks5_connect(listener.port, host, target)
            assert code == expected
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # then closed
            writer.close()
        # SOCKS4 has one code for every failure.
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(socks4_request("127.0.0.1", closed))
        assert await asyncio.wait_for(reader.read(), WAIT) == b"\x00\x5b" + bytes(6)
        writer.close()
        code, reader, writer = await socks5_connect(listener.port, "127.0.0.1", port)
        assert code == Reply.SUCCEEDED
        await _round_trip(reader, writer, b"still working\n")
        writer.close()
        assert not client.core.closed
    messages = [r.getMessage() for r in caplog.records]
    assert f"connect_to 127.0.0.1 port {closed}: failed." in messages, messages  # ssh's words
    assert "connect_to no-such-host.invalid port 80: failed." in messages, messages
    echo.close()


@pytest.mark.parametrize(("handshake", "answer"), HOSTILE_HANDSHAKES, ids=HOSTILE_IDS)
async def test_hostile_handshakes_close_only_that_channel(
    tmp_path: Path, handshake: bytes, answer: bytes
) -> None:
    echo, port = await _echo_port()
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_remote(None, 0, None)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(handshake)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == answer
        writer.close()
        code, reader, writer = await socks5_connect(listener.port, "127.0.0.1", port)
        assert code == Reply.SUCCEEDED
        writer.close()
        assert not client.core.closed
        await eventually(lambda: len(client.core.channels) == 0, what=lambda: client.core.channels)
    echo.close()


async def test_slow_handshake_is_cut_off(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_remote(None, 0, None, handshake_timeout=0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"\x05")  # and nothing more
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        assert not client.core.closed
        await eventually(lambda: len(client.core.channels) == 0, what=lambda: client.core.channels)


async def test_integrity_both_directions_with_half_close(tmp_path: Path) -> None:
    """INTEGRITY_SIZE bytes out and back through -R port (SOCKS on our side)."""
    echo, port = await _echo_port()
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_remote(None, 0, None)
        code, reader, writer = await socks5_connect(listener.port, "127.0.0.1", port)
        assert code == Reply.SUCCEEDED
        received, got, sent = await round_trip(reader, writer, INTEGRITY_SIZE, 180)
        assert received == INTEGRITY_SIZE and got == sent
        writer.close()
    echo.close()


async def test_burst_of_connections_through_one_reverse_proxy(tmp_path: Path) -> None:
    echo, port = await _echo_port()
    count = int(os.environ.get("HASHIKE_BURST", "1000")) // 4
    payload = os.urandom(8 * 1024)
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_remote(None, 0, None)

        async def one() -> bool:
            code, reader, writer = await socks5_connect(listener.port, "127.0.0.1", port)
            writer.write(payload)
            writer.write_eof()
            data = await reader.read()
            writer.close()
            return code == Reply.SUCCEEDED and data == payload

        results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 240)
        assert results.count(True) == count
        await eventually(lambda: len(client.core.channels) == 0, what=lambda: client.core.channels)
    echo.close()
