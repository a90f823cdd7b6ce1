"""Keepalives (aio/keepalive.py): OpenSSH's ServerAlive*/ClientAlive* rule as
a pure policy, walked without a clock, then both ends in-process: the round
trip time of the replies, a server that stops reading dropped by the client,
a client that stops reading dropped by the server with its -R listener."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from hashike.aio.forward import Target
from hashike.aio.keepalive import AlivePolicy, KeepaliveOptions, Verdict
from hashike.aio.server import ServerOptions
from hashike.proto.events import GlobalRequestReplied
from tests.aio.forwarding import hashike_pair
from tests.helpers import eventually

WAIT = 20.0


# --- the policy, without a clock ---------------------------------------------------------


def walk(policy: AlivePolicy, times: list[float], heard_at: float = 0.0) -> list[Verdict]:
    return [policy.check(now, heard_at) for now in times]


def test_a_silent_peer_is_probed_count_max_times_then_given_up() -> None:
    # clientloop.c: the check that would make the count exceed CountMax exits.
    policy = AlivePolicy(interval=1.0, count_max=3)
    policy.start(0.0)
    assert walk(policy, [0.5, 1.0, 2.0, 3.0, 3.5, 4.0]) == [
        Verdict.WAIT,
        Verdict.PROBE,
        Verdict.PROBE,
        Verdict.PROBE,
        Verdict.WAIT,
        Verdict.GIVE_UP,
    ]


def test_input_postpones_the_next_probe() -> None:
    policy = AlivePolicy(interval=10.0, count_max=3)
    policy.start(0.0)
    assert policy.check(10.0, heard_at=4.0) is Verdict.WAIT
    assert policy.next_check(heard_at=4.0) == 14.0
    assert policy.check(14.0, heard_at=4.0) is Verdict.PROBE
    assert policy.next_check(heard_at=4.0) == 24.0  # now counted from the probe


def test_any_reply_resets_the_count() -> None:
    policy = AlivePolicy(interval=1.0, count_max=1)
    policy.start(0.0)
    for second in range(1, 20):  # a peer that answers every probe is never given up
        assert policy.check(float(second), heard_at=0.0) is Verdict.PROBE
        policy.answered()
    assert policy.missed == 0


def test_count_max_zero_gives_up_at_the_first_silent_interval() -> None:
    policy = AlivePolicy(interval=1.0, count_max=0)
    policy.start(0.0)
    assert policy.check(1.0, 0.0) is Verdict.GIVE_UP


def test_no_count_max_probes_for_ever() -> None:
    # sshd's ClientAliveCountMax 0: keepalives without termination.
    policy = AlivePolicy(interval=1.0, count_max=None)
    policy.start(0.0)
    assert set(walk(policy, [float(s) for s in range(1, 50)])) == {Verdict.PROBE}


# --- both ends, in-process -----------------------------------------------------------------


FAST = KeepaliveOptions(interval=0.1, count_max=2)


async def test_replies_give_a_round_trip_time(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path, keepalive=FAST) as (_server, client):
        assert client.rtt is None
        replies: list[float] = []
        client.keepalive.on_reply.append(replies.append)
        await eventually(lambda: len(replies) >= 2, WAIT, what="two keepalive replies")
        assert client.rtt is not None and client.rtt >= 0
        assert client.rtt == replies[-1]
        assert not client.keepalive.timed_out and not client.core.closed


async def test_both_ends_measure_the_round_trip_at_login_without_keepalives(tmp_path: Path) -> None:
    # With no interval (the default: no keepalives), each end still sends two
    # probes once logged in, one after the other, and the smaller round trip
    # bounds its channels' window growth (proto/window.py). Nothing more
    # follows: no probe timer runs.
    async with hashike_pair(tmp_path) as (server, client):
        (pump,) = server.connections
        await eventually(
            lambda: client.keepalive.rtt is not None and pump.keepalive.rtt is not None,
            WAIT,
            what="replies to both ends' login probes",
        )
        await eventually(
            lambda: client.core.channels.tuning.rtt is not None and pump.core.channels.tuning.rtt is not None,
            WAIT,
            what="both ends' round trips in their window tuning",
        )
        for end, core in ((client.keepalive, client.core), (pump.keepalive, pump.core)):
            assert core.channels.tuning.awaiting_rtt  # said before the probe went
            rtt, last = core.channels.tuning.rtt, end.rtt
            assert rtt is not None and last is not None and 0 < rtt <= last < WAIT
        assert client.keepalive._timer is None and pump.keepalive._timer is None


async def test_a_login_probe_answered_as_the_connection_closes_sends_no_second(tmp_path: Path) -> None:
    # The reply resolves, then the connection closes before its callback runs:
    # the second probe must not be asked of a closed connection (it raised).
    async with hashike_pair(tmp_path) as (_server, client):
        await eventually(lambda: client.keepalive.rtt is not None, WAIT, what="the login probes' replies")
        reply: asyncio.Future[GlobalRequestReplied] = asyncio.get_running_loop().create_future()
        reply.set_result(GlobalRequestReplied(name="keepalive@openssh.com", success=False, extra=b""))
        client.core.close()
        client.keepalive._replied(reply, 0.0, again=True)
        assert client.keepalive.rtt is not None and client.keepalive.rtt > 0


async def test_a_server_that_stops_answering_is_dropped(tmp_path: Path) -> None:
    async with hashike_pair(tmp_path, keepalive=FAST) as (server, client):
        (pump,) = server.connections
        assert pump.transport is not None
        pump.transport.pause_reading()  # the server hangs: nothing it reads, nothing it answers
        await asyncio.wait_for(client.wait_closed(), WAIT)
        assert client.keepalive.timed_out
        event = client.disconnect_event
        assert event is not None and not event.by_peer
        assert event.description == "Timeout, server not responding"


async def test_a_client_that_stops_answering_is_dropped_with_its_listeners(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = ServerOptions(keepalive=replace(FAST, tcp=False))
    async with hashike_pair(tmp_path, options) as (server, client):
        listener = await client.forward_remote("127.0.0.1", 0, Target("127.0.0.1", 9))
        (pump,) = server.connections
        assert pump.tcp_keepalive is False
        assert client._pump.transport is not None
        with caplog.at_level(logging.INFO, logger="hashike.server"):
            client._pump.transport.pause_reading()  # the client hangs
            await eventually(lambda: not server.connections, WAIT, what="the server dropping the client")
        assert "Timeout, client not responding from user " in caplog.text
        # The port is free again at once: it can be bound.
        with socket.socket() as s:
            s.bind(("127.0.0.1", listener.port))
        assert pump.keepalive.timed_out


async def test_tcp_keepalive_is_set_on_the_socket_unless_turned_off(tmp_path: Path) -> None:
    off = KeepaliveOptions(tcp=False)
    async with hashike_pair(tmp_path, keepalive=off) as (server, client):
        (pump,) = server.connections
        assert _keepalive(pump.transport) == 1  # the server's default: TCPKeepAlive yes
        assert _keepalive(client._pump.transport) == 0
        assert client.rtt is None  # interval 0: no probes at all


def _keepalive(transport: asyncio.BaseTransport | None) -> int:
    assert transport is not None
    sock = transport.get_extra_info("socket")
    value: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    return value
