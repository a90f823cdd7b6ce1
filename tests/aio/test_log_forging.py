"""Log forging (issue 13): every string a peer chose reaches hashiked's log
escaped, one line per message, no raw control character; and sshd's lines for
how a connection ended."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hashike.config.policy import ForwardingPolicy
from hashike.proto.config import TransportConfig
from hashike.proto.connection import ClientConnection
from hashike.proto.events import AuthSucceeded, ChannelOpenConfirmed, ChannelOpenRefused, ServiceAccepted
from hashike.proto.text import escape_text
from hashike.proto.wire import encode_string
from tests.aio.test_server_auth import TinyClient, keys_file, options, start
from tests.helpers import eventually
from tests.proto.authkit import user_key

__all__ = ["keys_file"]  # the fixture, shared with test_server_auth

FORGED = "x\nAccepted publickey for root from 10.0.0.1 port 1 ssh2: ED25519 SHA256:x\x1b[2J"
SHOWN = "x\\nAccepted publickey for root from 10.0.0.1 port 1 ssh2: ED25519 SHA256:x\\x1b[2J"


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    caplog.set_level(logging.DEBUG, logger="hashike")
    yield lambda: [r.getMessage() for r in caplog.records if r.name.startswith("hashike")]


def assert_one_line_each(messages: list[str]) -> None:
    for message in messages:
        assert message.isprintable(), repr(message)


async def test_log_forging_disconnect_text_is_escaped(
    keys_file: Path, lines: Callable[[], list[str]]
) -> None:
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        port = client.writer.get_extra_info("sockname")[1]
        client.core.close(FORGED)
        client.writer.write(client.core.data_to_send())
        await eventually(lambda: not server.connections)
        await client.close()
    expected = f"Received disconnect from 127.0.0.1 port {port}:11: {SHOWN}"
    assert expected in lines()
    assert_one_line_each(lines())


async def test_plain_tcp_close_is_logged_as_sshd_does(
    keys_file: Path, lines: Callable[[], list[str]]
) -> None:
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        port = client.writer.get_extra_info("sockname")[1]
        await client.close()
        await eventually(lambda: not server.connections)
    assert f"Connection closed by 127.0.0.1 port {port}" in lines()
    assert not [m for m in lines() if m.startswith("Received disconnect")]


async def test_log_forging_client_version_is_escaped(keys_file: Path, lines: Callable[[], list[str]]) -> None:
    async with await start(options(keys_file)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        client = TinyClient(reader, writer)
        client.core = ClientConnection(
            TransportConfig(software_version="evil\x1b]0;owned\x07"), rng=os.urandom
        )
        await client.next(ServiceAccepted)
        await client.close()
    assert "Remote protocol version 2.0, remote software version evil\\x1b]0;owned\\x07" in lines()
    assert_one_line_each(lines())


async def _login(client: TinyClient) -> None:
    assert isinstance(await client.publickey("alice", user_key()), AuthSucceeded)


async def _open(client: TinyClient, host: str, port: int) -> object:
    client.core.channels.open_direct_tcpip(host, port, FORGED, 7)
    return await client.next(ChannelOpenConfirmed, ChannelOpenRefused)


async def test_log_forging_forward_refusal_is_escaped(
    keys_file: Path, lines: Callable[[], list[str]]
) -> None:
    keys_file.write_text(user_key().public_key.openssh_line() + "\n")
    opts = options(keys_file, forwarding=ForwardingPolicy(allow_tcp_forwarding="no"))
    async with await start(opts) as server:
        client = await TinyClient.connect(server.port)
        await _login(client)
        assert isinstance(await _open(client, FORGED, 22), ChannelOpenRefused)
        await client.close()
    refused = [m for m in lines() if m.startswith("refused local port forward")]
    assert refused == [f"refused local port forward: originator {SHOWN} port 7, target {SHOWN} port 22"]
    assert_one_line_each(lines())


async def test_log_forging_connect_to_is_escaped(keys_file: Path, lines: Callable[[], list[str]]) -> None:
    keys_file.write_text(user_key().public_key.openssh_line() + "\n")
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        await _login(client)
        assert isinstance(await _open(client, FORGED + ".invalid", 22), ChannelOpenRefused)
        await client.close()
    failed = [m for m in lines() if m.startswith("connect_to")]
    assert failed == [f"connect_to {SHOWN}.invalid port 22: failed: Name or service not known"]
    assert_one_line_each(lines())


async def test_log_forging_subsystem_name_is_escaped(keys_file: Path, lines: Callable[[], list[str]]) -> None:
    keys_file.write_text(user_key().public_key.openssh_line() + "\n")
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        await _login(client)
        channel = client.core.channels.open("session")
        await client.next(ChannelOpenConfirmed)
        client.core.channels.send_request(channel, "subsystem", False, encode_string(FORGED))
        client.writer.write(client.core.data_to_send())
        await eventually(lambda: any(m.startswith("subsystem request") for m in lines()))
        await client.close()
    failed = [m for m in lines() if m.startswith("subsystem request")]
    assert failed == [f"subsystem request for {SHOWN} by user alice failed, subsystem not found"]
    assert_one_line_each(lines())


def test_escape_text_makes_one_printable_line() -> None:
    assert escape_text(FORGED) == SHOWN
    assert escape_text(SHOWN) == SHOWN  # escaping twice changes nothing
    assert escape_text("tab\there\r\x00\x7f\u202e\u0085") == "tab\\there\\r\\x00\\x7f\\u202e\\x85"
    assert escape_text("banner\n\tline\x1b[0m\n", keep="\t\n\r") == "banner\n\tline\\x1b[0m\n"
    assert escape_text("zoë", limit=2) == "zo"
