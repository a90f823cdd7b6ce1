"""-R to a Unix socket on the server (streamlocal-forward@openssh.com,
OpenSSH PROTOCOL §2.4) between hashike's client and hashike's server,
in-process: to a TCP target and to a local socket, StreamLocalBindMask,
StreamLocalBindUnlink, AllowStreamLocalForwarding (which AllowTcpForwarding
does not govern), cancelling, and opens for paths never asked for."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest

from hashike.aio.forward import Target
from hashike.aio.remote import RemoteForwardFailed
from hashike.aio.server import ServerOptions
from hashike.cli.pop3 import start_pop3
from hashike.config.policy import ForwardingPolicy
from hashike.proto.channel_types import encode_streamlocal
from hashike.proto.forwarding import encode_streamlocal_forward
from tests.aio.forwarding import hashike_pair
from tests.aio.test_remote_forward import _Refusal, assert_pop3, pop3_exchange
from tests.echo import start_echo_server
from tests.helpers import eventually

WAIT = 20.0


async def test_pop3_through_a_remote_socket(tmp_path: Path) -> None:
    pop3 = await start_pop3()
    path = tmp_path / "pop3.sock"
    async with hashike_pair(tmp_path) as (server, client):
        listener = await client.forward_remote(
            None, 0, Target("127.0.0.1", pop3.port), listen_socket=str(path)
        )
        assert listener.socket_path == str(path) and listener.port == 0
        (pump,) = server.connections
        assert pump.remote_forwards.paths == [str(path)]
        assert_pop3(await asyncio.wait_for(pop3_exchange(*await asyncio.open_unix_connection(path)), WAIT))
        # StreamLocalBindMask's default, 0177: only the owner may connect.
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert listener.connections == 1
    pop3.close()


async def test_remote_socket_to_a_local_socket(tmp_path: Path) -> None:
    echo = await asyncio.start_unix_server(_echo, str(tmp_path / "local.sock"))
    remote = tmp_path / "remote.sock"
    options = ServerOptions(forwarding=ForwardingPolicy(streamlocal_bind_mask=0o077))
    async with hashike_pair(tmp_path, options) as (_server, client):
        await client.forward_remote(
            None, 0, Target(socket_path=str(tmp_path / "local.sock")), listen_socket=str(remote)
        )
        assert stat.S_IMODE(remote.stat().st_mode) == 0o700
        reader, writer = await asyncio.open_unix_connection(str(remote))
        writer.write(b"socket to socket")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == b"socket to socket"
        writer.close()
    echo.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(1 << 16):
        writer.write(chunk)
    writer.write_eof()
    writer.close()


@pytest.mark.parametrize("unlink", [False, True])
async def test_an_existing_file_needs_stream_local_bind_unlink(
    tmp_path: Path, unlink: bool, caplog: pytest.LogCaptureFixture
) -> None:
    echo = await start_echo_server()
    path = tmp_path / "stale.sock"
    path.write_text("in the way")
    options = ServerOptions(forwarding=ForwardingPolicy(streamlocal_bind_unlink=unlink))
    target = Target("127.0.0.1", echo.sockets[0].getsockname()[1])
    caplog.set_level(logging.INFO, logger="hashike")
    async with hashike_pair(tmp_path, options) as (_server, client):
        if not unlink:
            with pytest.raises(
                RemoteForwardFailed, match=f"^remote port forwarding failed for listen path {path}$"
            ):
                await client.forward_remote(None, 0, target, listen_socket=str(path))
            assert path.read_text() == "in the way"  # left alone, as sshd leaves it
            assert any("cannot bind to path" in r.getMessage() for r in caplog.records)
            return
        await client.forward_remote(None, 0, target, listen_socket=str(path))
        assert stat.S_ISSOCK(path.stat().st_mode)
    echo.close()


@pytest.mark.parametrize(
    ("policy", "key_options", "granted"),
    [
        (ForwardingPolicy(allow_tcp_forwarding="no"), "", True),  # TCP's switch is not the sockets'
        (ForwardingPolicy(allow_streamlocal_forwarding="remote"), "", True),
        (ForwardingPolicy(allow_streamlocal_forwarding="local"), "", False),
        (ForwardingPolicy(allow_streamlocal_forwarding="no"), "", False),
        (ForwardingPolicy(disable_forwarding=True), "", False),
        (ForwardingPolicy(), "no-port-forwarding", False),
    ],
    ids=["tcp-no", "remote", "local", "no", "disable", "no-port-forwarding"],
)
async def test_allow_stream_local_forwarding(
    tmp_path: Path, policy: ForwardingPolicy, key_options: str, granted: bool
) -> None:
    path = tmp_path / "policy.sock"
    async with hashike_pair(tmp_path, ServerOptions(forwarding=policy), key_options) as (_server, client):
        request = client.forward_remote(None, 0, Target("127.0.0.1", 9), listen_socket=str(path))
        if granted:
            await request
            assert path.exists()
        else:
            with pytest.raises(RemoteForwardFailed):
                await request
            assert not path.exists()
        assert not client.core.closed


def test_direct_streamlocal_follows_allow_stream_local_forwarding() -> None:
    """sshd: direct-streamlocal (the client's -L to a socket) is
    AllowStreamLocalForwarding's, local or yes, not AllowTcpForwarding's."""
    assert ForwardingPolicy(allow_tcp_forwarding="no").allows_streamlocal(None)
    assert not ForwardingPolicy(allow_streamlocal_forwarding="remote").allows_streamlocal(None)
    assert ForwardingPolicy(allow_streamlocal_forwarding="local").allows_streamlocal(None)


async def test_cancel_closes_the_socket_and_later_opens_are_refused(tmp_path: Path) -> None:
    echo = await start_echo_server()
    path = tmp_path / "cancel.sock"
    async with hashike_pair(tmp_path) as (server, client):
        listener = await client.forward_remote(
            None, 0, Target("127.0.0.1", echo.sockets[0].getsockname()[1]), listen_socket=str(path)
        )
        (pump,) = server.connections
        listener.close()
        listener.close()  # idempotent
        await eventually(lambda: pump.remote_forwards.paths == [], what="the server closes the listener")
        with pytest.raises(OSError):
            await asyncio.open_unix_connection(str(path))
        # The server (or an impostor) opening for the cancelled path is refused.
        refused = asyncio.get_running_loop().create_future()
        cid = pump.core.channels.open(
            "forwarded-streamlocal@openssh.com", encode_streamlocal(str(path), direct=False)
        )
        pump.bridges[cid] = _Refusal(refused)  # type: ignore[assignment]
        pump.flush()
        assert await asyncio.wait_for(refused, WAIT)
    echo.close()


async def test_an_open_for_a_path_never_asked_for_is_refused(tmp_path: Path) -> None:
    """A forwarded-streamlocal open naming a path we did not forward, or a
    forwarded-tcpip one for a socket forward, connects nowhere."""
    path = tmp_path / "asked.sock"
    async with hashike_pair(tmp_path) as (server, client):
        await client.forward_remote(None, 0, Target("127.0.0.1", 9), listen_socket=str(path))
        (pump,) = server.connections
        for kind, extra in [
            ("forwarded-streamlocal@openssh.com", encode_streamlocal("/etc/never", direct=False)),
            ("forwarded-tcpip", b"\0\0\0\0" + (0).to_bytes(4, "big") + b"\0\0\0\0" + (0).to_bytes(4, "big")),
        ]:
            refused = asyncio.get_running_loop().create_future()
            cid = pump.core.channels.open(kind, extra)
            pump.bridges[cid] = _Refusal(refused)  # type: ignore[assignment]
            pump.flush()
            assert await asyncio.wait_for(refused, WAIT), kind


async def test_malformed_and_unknown_streamlocal_requests_fail(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path) as (_server, client):
        pump = client._pump
        replies = [
            await asyncio.wait_for(pump.global_request(name, extra), WAIT)
            for name, extra in [
                ("streamlocal-forward@openssh.com", b"\0\0"),
                ("streamlocal-forward@openssh.com", encode_streamlocal_forward("")),
                ("streamlocal-forward@openssh.com", encode_streamlocal_forward("/a\0b")),
                ("streamlocal-forward@openssh.com", encode_streamlocal_forward(str(tmp_path / ("x" * 200)))),
                ("cancel-streamlocal-forward@openssh.com", encode_streamlocal_forward("/never/asked")),
            ]
        ]
        assert [r.success for r in replies] == [False] * 5
        assert not client.core.closed


async def test_socket_listeners_close_with_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    async with hashike_pair(tmp_path) as (server, client):
        await client.forward_remote(None, 0, Target("127.0.0.1", 9), listen_socket=str(path))
        (pump,) = server.connections
        client.close()
        await eventually(
            lambda: pump.remote_forwards.paths == [], what="the listener goes with the connection"
        )
    with pytest.raises(OSError):
        await asyncio.open_unix_connection(str(path))
    assert os.path.exists(path)  # the file stays, as sshd leaves it (StreamLocalBindUnlink)
