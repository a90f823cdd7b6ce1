"""Forwarding between hashike's client and hashike's server, in-process on
loopback: the guide's POP3 scenario, integrity with half-close both ways,
refused and prohibited targets, and a burst of connections."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from hashike.aio.server import ServerOptions
from hashike.cli.pop3 import GREETING, MESSAGES, start_pop3
from hashike.config.policy import ForwardingPolicy, parse_permit_open
from hashike.proto.constants import DisconnectReason, OpenFailureReason
from hashike.proto.errors import ChannelOpenFailed
from tests.aio.forwarding import hashike_pair
from tests.echo import INTEGRITY_SIZE, round_trip, start_echo_server
from tests.helpers import eventually


async def test_pop3_through_local_forward(tmp_path: Path) -> None:
    """The guide's scenario: USER/PASS/LIST/RETR/QUIT through -L."""
    pop3 = await start_pop3()
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_local(None, 0, "127.0.0.1", pop3.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        assert await reader.readline() == GREETING + b"\r\n"
        writer.write(b"USER a70099a\r\nPASS secret\r\nLIST\r\n")
        assert await reader.readline() == b"+OK\r\n"
        assert await reader.readline() == b"+OK maildrop locked and ready\r\n"
        assert await reader.readline() == b"+OK 2 messages\r\n"
        listing = [await reader.readline() for _ in range(3)]
        assert listing == [f"{i} {len(m)}\r\n".encode() for i, m in enumerate(MESSAGES, 1)] + [b".\r\n"]
        writer.write(b"RETR 2\r\nQUIT\r\n")
        assert await reader.readline() == f"+OK {len(MESSAGES[1])} octets\r\n".encode()
        assert await reader.readexactly(len(MESSAGES[1]) + 3) == MESSAGES[1] + b".\r\n"
        assert await reader.readline() == b"+OK bye\r\n"
        assert await reader.read() == b""  # the POP3 server closed: EOF through the tunnel
        writer.close()
    pop3.close()


async def test_connection_closed_before_the_channel_opens(tmp_path: Path) -> None:
    """A local client that hangs up at once (a port probe) must not disturb
    the SSH connection or later forwarded connections."""
    pop3 = await start_pop3()
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_local(None, 0, "127.0.0.1", pop3.port)
        for _ in range(3):
            _reader, probe = await asyncio.open_connection("127.0.0.1", listener.port)
            probe.close()
        # Each probe reached the listener, and its channel is gone again.
        await eventually(
            lambda: listener.connections == 3 and client.forwarded_channels() == 0,
            what=lambda: f"{listener.connections} accepted, {client.forwarded_channels()} open",
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        assert await asyncio.wait_for(reader.readline(), 10) == GREETING + b"\r\n"
        writer.write(b"QUIT\r\n")
        assert await asyncio.wait_for(reader.readline(), 10) == b"+OK bye\r\n"
        writer.close()
        assert not client.core.closed
    pop3.close()


SIZE = INTEGRITY_SIZE


async def test_flushes_asked_for_in_one_turn_leave_in_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CorePump.flush_soon, what a burst of accepted connections uses: their
    # channel opens leave together once the turn of the loop is over.
    async with hashike_pair(tmp_path) as (_server, client):
        pump = client._pump
        assert pump.transport is not None
        writes: list[int] = []
        real = pump.transport.write

        def counted(data: bytes | memoryview) -> None:
            writes.append(len(data))
            real(data)

        monkeypatch.setattr(pump.transport, "write", counted)
        for _ in range(5):
            pump.core.channels.global_request("nothing@hashike.test", False)
            pump.flush_soon()
        assert writes == []
        await eventually(lambda: writes, 10, what="the scheduled flush")
        await asyncio.sleep(0.05)
        assert len(writes) == 1 and writes[0] > 5 * len("nothing@hashike.test")


async def test_integrity_both_directions_with_half_close(tmp_path: Path) -> None:
    echo = await start_echo_server()
    port = echo.sockets[0].getsockname()[1]
    async with hashike_pair(tmp_path) as (_server, client):
        reader, writer = await client.open_connection("127.0.0.1", port)
        received, got, sent = await round_trip(reader, writer, SIZE, 120)
        assert received == SIZE
        assert got == sent
        writer.close()
    echo.close()


async def test_refused_target_is_connect_failed(tmp_path: Path) -> None:
    probe = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    closed = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with hashike_pair(tmp_path) as (_server, client):
        with pytest.raises(ChannelOpenFailed) as info:
            await client.open_connection("127.0.0.1", closed)
        assert info.value.reason == OpenFailureReason.CONNECT_FAILED
        assert "Connection refused" in str(info.value)


@pytest.mark.parametrize(
    ("policy", "key_options", "allowed"),
    [
        (ForwardingPolicy(), "", True),
        (ForwardingPolicy(allow_tcp_forwarding="no"), "", False),
        (ForwardingPolicy(allow_tcp_forwarding="remote"), "", False),
        (ForwardingPolicy(allow_tcp_forwarding="local"), "", True),
        (ForwardingPolicy(disable_forwarding=True), "", False),
        (ForwardingPolicy(permit_open=parse_permit_open(["none"])), "", False),
        (ForwardingPolicy(permit_open=parse_permit_open(["127.0.0.1:*"])), "", True),
        (ForwardingPolicy(permit_open=parse_permit_open(["127.0.0.2:*"])), "", False),
        (ForwardingPolicy(), "restrict", False),
        (ForwardingPolicy(), "no-port-forwarding", False),
        (ForwardingPolicy(), "restrict,port-forwarding", True),
        (ForwardingPolicy(), 'permitopen="127.0.0.1:1"', False),
    ],
)
async def test_policy_matrix(
    tmp_path: Path, policy: ForwardingPolicy, key_options: str, allowed: bool
) -> None:
    pop3 = await start_pop3()
    options = ServerOptions(forwarding=policy)
    async with hashike_pair(tmp_path, options, key_options) as (_server, client):
        if allowed:
            reader, writer = await client.open_connection("127.0.0.1", pop3.port)
            assert await reader.readline() == GREETING + b"\r\n"
            writer.close()
        else:
            with pytest.raises(ChannelOpenFailed) as info:
                await client.open_connection("127.0.0.1", pop3.port)
            assert info.value.reason == OpenFailureReason.ADMINISTRATIVELY_PROHIBITED
    pop3.close()


async def test_burst_of_connections_through_one_forward(tmp_path: Path) -> None:
    echo = await start_echo_server()
    port = echo.sockets[0].getsockname()[1]
    count = int(os.environ.get("HASHIKE_BURST", "1000"))
    payload = os.urandom(64 * 1024)
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_local(None, 0, "127.0.0.1", port)

        async def one() -> bool:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(payload)
            writer.write_eof()
            data = await reader.read()
            writer.close()
            return data == payload

        results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 180)
        assert results.count(True) == count
        # Every channel is closed both ways soon after: state stays bounded.
        await eventually(lambda: len(client.core.channels) == 0, what=lambda: client.core.channels)
    echo.close()


async def test_requests_arriving_with_disconnect_are_not_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A channel request and the peer's DISCONNECT in one batch: the server
    must not try to answer on the closed connection (it used to raise out of
    data_received, which asyncio logs as a fatal error)."""
    async with hashike_pair(tmp_path) as (server, client):
        channels = client.core.channels
        cid = channels.open("session")
        client._pump.flush()
        await eventually(lambda: channels.channel(cid).state.name == "OPEN", what="the session channel opens")
        (server_end,) = server.connections
        channels.send_request(cid, "exec", True, b"\x00\x00\x00\x04true")
        channels.global_request("keepalive@example.org", True)
        client.core.close()
        client._pump.flush()  # the requests and DISCONNECT leave in one write
        await client.wait_closed()
        await eventually(lambda: not server.connections, what="the server drops the connection")
    # The server read the batch through to our DISCONNECT and closed on it.
    disconnect = server_end.disconnect
    assert disconnect is not None and disconnect.by_peer
    assert disconnect.reason == DisconnectReason.BY_APPLICATION
    assert server_end.core.closed
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelname == "ERROR"]
