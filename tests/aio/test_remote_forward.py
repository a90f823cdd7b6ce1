"""Remote forwarding (-R, RFC 4254 §7.1) between hashike's client and
hashike's server, in-process on loopback: the guide's POP3 dialogue, port 0,
the policy matrix, integrity with half-close, a burst of connections, a
refused local target, cancelling, and listeners that go with the connection."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
from pathlib import Path

import pytest

from hashike.aio.forward import Target
from hashike.aio.remote import RemoteForwardFailed
from hashike.aio.remote_server import MAX_LISTENERS
from hashike.aio.server import ServerOptions
from hashike.cli.pop3 import GREETING, MESSAGES, start_pop3
from hashike.config.policy import ForwardingPolicy, parse_permit_listen
from hashike.proto.events import ChannelOpenRequested
from hashike.proto.forwarding import encode_tcpip_forward
from tests.aio.forwarding import hashike_pair
from tests.echo import INTEGRITY_SIZE, round_trip, start_echo_server
from tests.helpers import eventually
from tests.interop.conftest import free_port

WAIT = 20.0


async def pop3_dialogue(port: int, host: str = "127.0.0.1") -> list[bytes]:
    """USER/PASS/LIST/RETR/QUIT, the guide's dialogue; every line read."""
    return await pop3_exchange(*await asyncio.open_connection(host, port))


async def pop3_exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[bytes]:
    """The guide's dialogue on a connection already made."""
    lines = [await reader.readline()]
    writer.write(b"USER a70099a\r\nPASS secret\r\nLIST\r\n")
    lines += [await reader.readline() for _ in range(6)]
    writer.write(b"RETR 1\r\nQUIT\r\n")
    lines.append(await reader.readline())
    lines.append(await reader.readexactly(len(MESSAGES[0]) + 3))
    lines.append(await reader.readline())
    lines.append(await reader.read())
    writer.close()
    return lines


def assert_pop3(lines: list[bytes]) -> None:
    assert lines[0] == GREETING + b"\r\n"
    assert lines[1:4] == [b"+OK\r\n", b"+OK maildrop locked and ready\r\n", b"+OK 2 messages\r\n"]
    assert lines[4:7] == [f"{i} {len(m)}\r\n".encode() for i, m in enumerate(MESSAGES, 1)] + [b".\r\n"]
    assert lines[7:] == [
        f"+OK {len(MESSAGES[0])} octets\r\n".encode(),
        MESSAGES[0] + b".\r\n",
        b"+OK bye\r\n",
        b"",
    ]


@pytest.mark.parametrize("port", ["fixed", 0])
async def test_pop3_through_remote_forward(tmp_path: Path, port: str | int) -> None:
    pop3 = await start_pop3()
    async with hashike_pair(tmp_path) as (server, client):
        asked = free_port() if port == "fixed" else 0
        listener = await client.forward_remote(None, asked, Target("127.0.0.1", pop3.port))
        assert listener.port == (asked or listener.port) and listener.port > 0
        (pump,) = server.connections
        assert pump.remote_forwards.ports == [("localhost", listener.port)]
        lines = await asyncio.wait_for(pop3_dialogue(listener.port), WAIT)
        assert_pop3(lines)
        assert listener.connections == 1
    pop3.close()


async def test_remote_listener_carries_the_originator(tmp_path: Path) -> None:
    """RFC 4254 §7.2: the forwarded-tcpip open names the connected address
    (as the client asked for it), the bound port and the originator."""
    seen: list[tuple[str | None, int | None, str | None, int | None]] = []
    echo = await start_echo_server()
    async with hashike_pair(tmp_path) as (_server, client):
        pump = client._pump
        handler = pump.open_handlers["forwarded-tcpip"]

        def recording(event: ChannelOpenRequested) -> None:
            seen.append((event.host, event.port, event.orig_host, event.orig_port))
            handler(event)

        pump.open_handlers["forwarded-tcpip"] = recording
        listener = await client.forward_remote(
            "127.0.0.1", 0, Target("127.0.0.1", echo.sockets[0].getsockname()[1])
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), WAIT) == b"ping"
        local = writer.get_extra_info("sockname")
        writer.close()
    echo.close()
    assert seen == [("127.0.0.1", listener.port, "127.0.0.1", local[1])]


def _bound(port: int) -> set[str]:
    """The addresses that accept a connection on ``port``, of a few candidates."""
    found = set()
    for host in ("127.0.0.1", "::1", _outside_address()):
        if host is None:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as s:
            s.settimeout(2)
            if s.connect_ex((host, port)) == 0:
                found.add("outside" if host == _outside_address() else host)
    return found


def _outside_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent
        except OSError:
            return None
        address: str = s.getsockname()[0]
        return None if address.startswith("127.") else address


@pytest.mark.parametrize(
    ("gateway_ports", "listen_host", "expected"),
    [
        ("no", None, {"127.0.0.1", "::1"}),
        ("no", "", {"127.0.0.1", "::1"}),
        ("no", "0.0.0.0", {"127.0.0.1", "::1"}),
        ("no", "127.0.0.1", {"127.0.0.1"}),
        ("no", "::1", {"::1"}),
        ("yes", None, {"127.0.0.1", "::1", "outside"}),
        ("yes", "127.0.0.1", {"127.0.0.1", "::1", "outside"}),
        ("clientspecified", None, {"127.0.0.1", "::1"}),
        ("clientspecified", "127.0.0.1", {"127.0.0.1"}),
        ("clientspecified", "*", {"127.0.0.1", "::1", "outside"}),
    ],
)
async def test_gateway_ports_decides_the_bind_address(
    tmp_path: Path, gateway_ports: str, listen_host: str | None, expected: set[str]
) -> None:
    if _outside_address() is None:
        expected = expected - {"outside"}
    options = ServerOptions(forwarding=ForwardingPolicy(gateway_ports=gateway_ports))
    echo = await start_echo_server()
    async with hashike_pair(tmp_path, options) as (_server, client):
        listener = await client.forward_remote(
            listen_host, 0, Target("127.0.0.1", echo.sockets[0].getsockname()[1])
        )
        assert await asyncio.to_thread(_bound, listener.port) == expected
    echo.close()


@pytest.mark.parametrize(
    ("policy", "key_options", "listen", "allowed"),
    [
        (ForwardingPolicy(), "", (None, 0), True),
        (ForwardingPolicy(allow_tcp_forwarding="local"), "", (None, 0), False),
        (ForwardingPolicy(allow_tcp_forwarding="remote"), "", (None, 0), True),
        (ForwardingPolicy(allow_tcp_forwarding="no"), "", (None, 0), False),
        (ForwardingPolicy(disable_forwarding=True), "", (None, 0), False),
        (ForwardingPolicy(permit_listen=parse_permit_listen(["none"])), "", (None, 0), False),
        (ForwardingPolicy(permit_listen=parse_permit_listen(["localhost:*"])), "", (None, 0), True),
        (ForwardingPolicy(permit_listen=parse_permit_listen(["40000"])), "", ("127.0.0.1", 0), False),
        (ForwardingPolicy(permit_listen=parse_permit_listen(["127.0.0.*:*"])), "", ("127.0.0.1", 0), True),
        (ForwardingPolicy(permit_listen=parse_permit_listen(["127.0.0.1:*"])), "", (None, 0), False),
        (ForwardingPolicy(), "restrict", (None, 0), False),
        (ForwardingPolicy(), "no-port-forwarding", (None, 0), False),
        (ForwardingPolicy(), 'permitlisten="localhost:*"', (None, 0), True),
        (ForwardingPolicy(), 'permitlisten="1"', (None, 0), False),
        (ForwardingPolicy(), 'restrict,port-forwarding,permitlisten="*:*"', ("127.0.0.1", 0), True),
    ],
)
async def test_remote_policy_matrix(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    policy: ForwardingPolicy,
    key_options: str,
    listen: tuple[str | None, int],
    allowed: bool,
) -> None:
    pop3 = await start_pop3()
    caplog.set_level(logging.INFO, "hashike.server")
    async with hashike_pair(tmp_path, ServerOptions(forwarding=policy), key_options) as (server, client):
        if allowed:
            listener = await client.forward_remote(*listen, Target("127.0.0.1", pop3.port))
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            assert await asyncio.wait_for(reader.readline(), WAIT) == GREETING + b"\r\n"
            writer.close()
        else:
            with pytest.raises(RemoteForwardFailed, match="remote port forwarding failed for listen port 0"):
                await client.forward_remote(*listen, Target("127.0.0.1", pop3.port))
            (pump,) = server.connections
            assert pump.remote_forwards.ports == []
            address = listen[0] or "localhost"
            assert f"to remote forward to host {address} port 0, but the request was denied." in caplog.text
            assert not client.core.closed  # the session goes on
    pop3.close()


def test_privileged_ports_need_root() -> None:
    policy = ForwardingPolicy()
    assert not policy.allows_remote(None, 80, uid=1000)
    assert policy.allows_remote(None, 80, uid=0)
    assert policy.allows_remote(None, 1024, uid=1000)
    assert policy.allows_remote(None, 0, uid=1000)


SIZE = INTEGRITY_SIZE


async def test_integrity_both_directions_with_half_close(tmp_path: Path) -> None:
    """256 MiB out and back through -R; the far side (the echo target)
    hashes what it got and the sender compares both digests."""
    echo = await start_echo_server()
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_remote(None, 0, Target("127.0.0.1", echo.sockets[0].getsockname()[1]))
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        received, got, sent = await round_trip(reader, writer, SIZE, 300)
        assert (received, got) == (SIZE, sent)
        writer.close()
    echo.close()


async def test_burst_of_connections_through_one_remote_forward(tmp_path: Path) -> None:
    echo = await start_echo_server()
    count = int(os.environ.get("HASHIKE_BURST", "1000"))
    payload = os.urandom(16 * 1024)
    async with hashike_pair(tmp_path) as (server, client):
        listener = await client.forward_remote(None, 0, Target("127.0.0.1", echo.sockets[0].getsockname()[1]))

        async def one() -> bool:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(payload)
            writer.write_eof()
            data = await reader.read()
            writer.close()
            return data == payload

        results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 240)
        assert results.count(True) == count
        assert listener.connections == count
        (pump,) = server.connections
        await eventually(
            lambda: len(client.core.channels) == 0 and len(pump.core.channels) == 0,
            what=lambda: (client.core.channels, pump.core.channels),
        )
    echo.close()


async def test_refused_local_target_fails_only_that_channel(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = free_port()
    pop3 = await start_pop3()
    caplog.set_level(logging.INFO, "hashike")
    async with hashike_pair(tmp_path) as (_server, client):
        broken = await client.forward_remote(None, 0, Target("127.0.0.1", dead))
        reader, writer = await asyncio.open_connection("127.0.0.1", broken.port)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed at once
        writer.close()
        assert f"connect_to 127.0.0.1 port {dead}: failed." in caplog.messages
        working = await client.forward_remote(None, 0, Target("127.0.0.1", pop3.port))
        assert_pop3(await asyncio.wait_for(pop3_dialogue(working.port), WAIT))
        assert not client.core.closed
    pop3.close()


async def test_cancel_closes_the_listener_and_later_opens_are_refused(tmp_path: Path) -> None:
    pop3 = await start_pop3()
    async with hashike_pair(tmp_path) as (server, client):
        listener = await client.forward_remote(None, 0, Target("127.0.0.1", pop3.port))
        (pump,) = server.connections
        listener.close()
        listener.close()  # idempotent
        await eventually(lambda: pump.remote_forwards.ports == [], what="the server closes the listener")
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", listener.port)
        # The server (or an impostor) opening for the cancelled port is refused.
        refused = asyncio.get_running_loop().create_future()
        cid = pump.core.channels.open_forwarded_tcpip("localhost", listener.port, "127.0.0.1", 1)
        pump.bridges[cid] = _Refusal(refused)  # type: ignore[assignment]
        pump.flush()
        assert await asyncio.wait_for(refused, WAIT)
    pop3.close()
    assert pop3.sessions == 0


class _Refusal:
    def __init__(self, refused: asyncio.Future[bool]) -> None:
        self.refused = refused

    def channel_refused(self, reason: int, description: str) -> None:
        self.refused.set_result(True)

    def channel_open(self) -> None:
        self.refused.set_result(False)

    def channel_closed(self) -> None: ...


async def test_listeners_close_with_the_connection(tmp_path: Path) -> None:
    pop3 = await start_pop3()
    async with hashike_pair(tmp_path) as (server, client):
        ports = [
            (await client.forward_remote(None, 0, Target("127.0.0.1", pop3.port))).port for _ in range(3)
        ]
        (pump,) = server.connections
        assert len(pump.remote_forwards.ports) == 3
    await eventually(lambda: not server.connections, what="the server forgets the connection")
    assert pump.remote_forwards.ports == []
    for port in ports:
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    pop3.close()


async def test_listeners_per_connection_are_bounded(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (server, client):
        requests = [
            client._pump.global_request("tcpip-forward", encode_tcpip_forward("localhost", 0))
            for _ in range(MAX_LISTENERS + 3)
        ]
        replies = await asyncio.wait_for(asyncio.gather(*requests), WAIT)
        assert [r.success for r in replies] == [True] * MAX_LISTENERS + [False] * 3
        (pump,) = server.connections
        assert len(pump.remote_forwards.ports) == MAX_LISTENERS


async def test_malformed_and_unknown_cancel_requests_fail(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        pump = client._pump
        bad = await asyncio.wait_for(pump.global_request("tcpip-forward", b"\x00\x00"), WAIT)
        port = await asyncio.wait_for(
            pump.global_request(
                "tcpip-forward", encode_tcpip_forward("localhost", 0)[:-4] + b"\x00\x01\x00\x00"
            ),
            WAIT,
        )
        cancel = await asyncio.wait_for(
            pump.global_request("cancel-tcpip-forward", encode_tcpip_forward("localhost", 4)), WAIT
        )
        assert (bad.success, port.success, cancel.success) == (False, False, False)
        assert not client.core.closed


async def test_remote_forward_to_a_local_socket(tmp_path: Path) -> None:
    """-R port:local_socket: the connection is carried to a Unix socket here."""
    path = str(tmp_path / "pop3.sock")

    async def greet(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING + b"\r\n")
        await writer.drain()
        writer.close()

    target = await asyncio.start_unix_server(greet, path)
    async with hashike_pair(tmp_path) as (_server, client):
        listener = await client.forward_remote(None, 0, Target(socket_path=path))
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        assert await asyncio.wait_for(reader.read(), WAIT) == GREETING + b"\r\n"
        writer.close()
    target.close()


async def test_a_cancel_left_unanswered_at_logout_logs_nothing(tmp_path: Path) -> None:
    """Logging out right after closing a -R sends cancel-tcpip-forward and
    our DISCONNECT together; the cancel's reply never comes, and that must
    not surface as asyncio's "Future exception was never retrieved"."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with hashike_pair(tmp_path) as (_server, client):
            listener = await client.forward_remote(None, 0, Target("127.0.0.1", 9))
            listener.close()
            client.close()
            await client.wait_closed()
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
