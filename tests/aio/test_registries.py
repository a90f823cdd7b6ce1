"""The runtime's seams: every event type has a route, a channel open or a
global request that no handler takes is refused, and the replies to our own
global requests reach their callers in order (RFC 4254 §4, §5.1)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import get_args

import pytest

import hashike.proto.events
from hashike.proto.constants import OpenFailureReason
from hashike.proto.errors import ConnectionClosed
from hashike.proto.events import ChannelRequestReceived, Event, GlobalRequestReceived
from hashike.proto.wire import encode_string, encode_uint32
from tests.aio.forwarding import hashike_pair

WAIT = 10.0  # bounded waits fail the test; the refusals must come within a second


def _event_classes() -> set[type]:
    """Every event class the core defines: the dataclasses of its events module."""
    module = hashike.proto.events
    return {
        value
        for value in vars(module).values()
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == module.__name__
    }


def test_event_union_names_every_event_class() -> None:
    assert _event_classes() == set(get_args(Event))


async def test_every_event_type_has_a_route_on_both_sides(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (server, client):
        (server_pump,) = server.connections
        assert set(server_pump.routes) == _event_classes()
        assert set(client._pump.routes) == _event_classes()


class _OpenRecorder:
    """The server-side handler of a channel the server opens by hand."""

    def __init__(self) -> None:
        self.refused: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    def channel_refused(self, reason: int, description: str) -> None:
        self.refused.set_result((reason, description))

    def channel_open(self) -> None:
        self.refused.set_exception(AssertionError("the client accepted a channel it never asked for"))

    def channel_data(self, data: bytes | memoryview, extended: int | None) -> None: ...
    def channel_eof(self) -> None: ...
    def channel_closed(self) -> None: ...
    def channel_request_replied(self, success: bool) -> None: ...
    def pump_data(self) -> None: ...

    def channel_request(self, event: ChannelRequestReceived) -> bool:
        return False


async def test_unrequested_channel_opens_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server opening x11 and forwarded-tcpip channels the client never
    asked for gets OPEN_FAILURE for each at once, the client connects
    nowhere (the forwarded-tcpip open names a live listener), and the
    session goes on. OpenSSH's client answers the same way."""
    connections: list[object] = []
    target = await asyncio.start_server(lambda r, w: connections.append(w), "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    caplog.set_level(logging.WARNING, "hashike.client")
    async with hashike_pair(tmp_path) as (server, client):
        (pump,) = server.connections
        opens = {
            # RFC 4254 §6.3.2: originator address and port.
            "x11": encode_string("127.0.0.1") + encode_uint32(6010),
            # RFC 4254 §7.2: address and port connected, originator address and port.
            "forwarded-tcpip": encode_string("127.0.0.1")
            + encode_uint32(target_port)
            + encode_string("127.0.0.1")
            + encode_uint32(40000),
        }
        recorders = {}
        for kind, extra in opens.items():
            recorder = _OpenRecorder()
            pump.bridges[pump.core.channels.open(kind, extra)] = recorder
            recorders[kind] = recorder
        pump.flush()
        for kind, recorder in recorders.items():
            reason, description = await asyncio.wait_for(recorder.refused, WAIT)
            assert (reason, description) == (OpenFailureReason.ADMINISTRATIVELY_PROHIBITED, "open failed"), (
                kind
            )
        result = await asyncio.wait_for(client.run("echo still here"), WAIT)
        assert (result.exit_status, result.stdout) == (0, b"still here\n")
        assert not client.core.closed
        assert len(client.core.channels) == 0  # nothing left pending on our side
    target.close()
    await target.wait_closed()
    assert connections == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "hashike.client"]
    assert "Warning: ssh server tried X11 forwarding." in warnings
    assert f"WARNING: Server requests forwarding for unknown listen_port {target_port}" in warnings


async def test_replies_to_global_requests_reach_their_callers_in_order(tmp_path: Path) -> None:
    """RFC 4254 §4: replies come in request order, even when the server
    answers the first one later than the second; a request no handler
    takes gets REQUEST_FAILURE."""
    async with hashike_pair(tmp_path) as (server, client):
        (server_pump,) = server.connections
        seen: list[str] = []

        def slow(event: GlobalRequestReceived) -> None:
            seen.append(event.name)
            loop = asyncio.get_running_loop()

            def answer() -> None:
                server_pump.core.channels.reply_global_request(True, b"extra", request_id=event.request_id)
                server_pump.flush()

            loop.call_later(0.05, answer)

        server_pump.global_handlers["slow@test.example"] = slow
        pump = client._pump
        first = pump.global_request("slow@test.example")
        second = pump.global_request("nobody-handles@test.example")
        replies = await asyncio.wait_for(asyncio.gather(first, second), WAIT)
        assert [(r.name, r.success, r.extra) for r in replies] == [
            ("slow@test.example", True, b"extra"),
            ("nobody-handles@test.example", False, b""),
        ]
        assert seen == ["slow@test.example"]


async def test_pending_global_request_fails_when_the_connection_ends(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (server, client):
        (server_pump,) = server.connections
        server_pump.global_handlers["never@test.example"] = lambda event: None  # holds its reply
        reply = client._pump.global_request("never@test.example")
        await asyncio.sleep(0)
        server_pump.close("going away")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(reply, WAIT)


async def test_server_refuses_an_unknown_channel_type(tmp_path: Path) -> None:
    """What hashiked answered before the registries, and still does."""
    async with hashike_pair(tmp_path) as (_server, client):
        pump = client._pump
        recorder = _OpenRecorder()
        pump.bridges[pump.core.channels.open("tun@openssh.com", encode_uint32(1) + encode_uint32(0))] = (
            recorder
        )
        pump.flush()
        reason, description = await asyncio.wait_for(recorder.refused, WAIT)
        assert (reason, description) == (OpenFailureReason.UNKNOWN_CHANNEL_TYPE, "unknown channel type")
