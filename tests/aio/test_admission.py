"""Admission before allocation (the DHEat class, CVE-2002-20001): silent
pre-authentication connections cost a few KiB each, given back when they
close; PerSourceMaxStartups and PerSourcePenalties refuse a source on its
address alone, logged in sshd's words. Loopback only, bounded loops."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import tracemalloc

import pytest

from hashike.aio.admission import Admission
from hashike.aio.server import Server, ServerOptions, listen
from hashike.config.srclimit import PenaltyPolicy
from tests.helpers import eventually
from tests.proto.pair import host_key

MiB = 1024 * 1024
CONNECTIONS = 2000


async def _connect(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 10)
    return sock


async def _refused_with(sock: socket.socket) -> bytes:
    """What the server said before closing: all of it, up to EOF."""
    loop, said = asyncio.get_running_loop(), b""
    for _ in range(10):  # bounded: the notice is one short line
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
        if not data:
            return said
        said += data
    raise AssertionError(f"the server did not close: {said!r}")


def _log_line(caplog: pytest.LogCaptureFixture, sock: socket.socket, server: Server, reason: str) -> str:
    host, port = sock.getsockname()[:2]
    line = (
        f"drop connection #{len(server.startups)} from [{host}]:{port} on [127.0.0.1]:{server.port} {reason}"
    )
    assert line in caplog.messages, caplog.messages
    return line


async def test_dheat_2000_preauth_connections_cost_at_most_100_mib_and_are_given_back() -> None:
    # Every one admitted (MaxStartups far above), so each costs what a real
    # pre-auth connection costs; none ever sends a byte.
    options = ServerOptions(max_startups=(3 * CONNECTIONS, 100, 3 * CONNECTIONS), login_grace_time=0)
    async with await listen("127.0.0.1", 0, host_keys=[host_key()], options=options) as server:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            socks: list[socket.socket] = []
            try:
                for _ in range(CONNECTIONS // 100):
                    socks += await asyncio.gather(*(_connect(server.port) for _ in range(100)))
                await eventually(
                    lambda: len(server.connections) == CONNECTIONS, 60, what=lambda: len(server.connections)
                )
                held = tracemalloc.get_traced_memory()[0] - before
                assert held <= 100 * MiB, f"{CONNECTIONS} pre-auth connections hold {held / MiB:.1f} MiB"
            finally:
                for sock in socks:
                    sock.close()
            await eventually(lambda: not server.connections, 60, what=lambda: len(server.connections))
            gc.collect()
            left = tracemalloc.get_traced_memory()[0] - before
            assert left <= 8 * MiB, f"{left / MiB:.1f} MiB not given back"
        finally:
            tracemalloc.stop()


async def test_per_source_max_startups_refuses_the_next_connection_from_one_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hashike.server")
    options = ServerOptions(per_source_max_startups=2)
    async with await listen("127.0.0.1", 0, host_keys=[host_key()], options=options) as server:
        first, second = await _connect(server.port), await _connect(server.port)
        try:
            await eventually(lambda: len(server.startups) == 2)
            third = await _connect(server.port)
            with third:
                assert await _refused_with(third) == b"Exceeded MaxStartups\r\n"
                _log_line(caplog, third, server, "past MaxStartups")
            assert len(server.connections) == 2
        finally:
            first.close()
            second.close()
        await eventually(lambda: not server.connections)
        # Once they are gone, the source may start again.
        with await _connect(server.port):
            await eventually(lambda: len(server.startups) == 1)


@pytest.mark.parametrize("exempt", [False, True])
async def test_per_source_penalty_noauth_refuses_the_source(
    caplog: pytest.LogCaptureFixture, exempt: bool
) -> None:
    caplog.set_level(logging.INFO, logger="hashike.server")
    options = ServerOptions(
        penalties=PenaltyPolicy(noauth=30, min=15),
        penalty_exempt=("127.0.0.0/8",) if exempt else (),
    )
    async with await listen("127.0.0.1", 0, host_keys=[host_key()], options=options) as server:
        with await _connect(server.port):
            await eventually(lambda: len(server.connections) == 1)
        await eventually(lambda: not server.connections)  # hung up without trying to log in
        sock = await _connect(server.port)
        with sock:
            if exempt:
                await eventually(lambda: len(server.connections) == 1)
                assert not any("penalty" in m for m in caplog.messages)
                return
            reason = "penalty: connections without attempting authentication"
            assert f"ipv4: new 127.0.0.1/32 active penalty of 30 seconds for {reason}" in caplog.messages
            assert await _refused_with(sock) == b"Not allowed at this time\r\n"
            _log_line(caplog, sock, server, reason)


def test_penalties_add_up_to_max_and_refuse_from_min() -> None:
    admission = Admission((10, 30, 100), None, (24, 128), PenaltyPolicy(authfail=5, min=15, max=20), ())
    for _ in range(2):
        admission.penalise("192.0.2.7", "authfail", 0.0)
        assert admission.refusal("192.0.2.9", 0, 0.0) is None  # 10 s charged: below min
    admission.penalise("192.0.2.7", "authfail", 0.0)  # 15 s: from now on, refused
    refusal = admission.refusal("192.0.2.200", 0, 2.0)  # the same /24
    assert refusal is not None and refusal.reason == "penalty: failed authentication"
    assert admission.refusal("192.0.3.1", 0, 2.0) is None  # another network
    for _ in range(10):
        admission.penalise("192.0.2.7", "authfail", 3.0)  # capped at max from now: 23
    assert admission.refusal("192.0.2.7", 0, 22.9) is not None
    assert admission.refusal("192.0.2.7", 0, 23.0) is None  # expired


def test_penalty_table_overflow_deny_all_refuses_new_sources() -> None:
    policy = PenaltyPolicy(noauth=1, max_sources4=1, overflow4_deny_all=True)
    admission = Admission((10, 30, 100), None, (32, 128), policy, ())
    admission.penalise("192.0.2.1", "noauth", 0.0)
    refusal = admission.refusal("192.0.2.2", 0, 0.5)
    assert refusal is not None and refusal.notice == b"Not allowed at this time\r\n"
    assert admission.refusal("192.0.2.2", 0, 1.5) is None  # the entry expired: room again
