"""RemoteForwardTakeover's messages between hashiked's workers and their
supervisor (hashike.cli.worker_forwards), over real SOCK_SEQPACKET pairs."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from hashike.aio.server import Server, ServerOptions
from hashike.cli.worker_forwards import WorkerForwards, relay_takeover
from hashike.cli.workers import MESSAGE_SIZE
from tests.proto.pair import host_key

FINGERPRINT = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"


class _Recording(Server):
    """A server that records what it is asked to give up."""

    def __init__(self) -> None:
        super().__init__([host_key()], ServerOptions())
        self.surrendered: list[tuple[tuple[str, str], str, int]] = []

    def surrender(self, who: tuple[str, str], address: str, port: int, asking: object = None) -> None:
        self.surrendered.append((who, address, port))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.settimeout(5)
    theirs.settimeout(5)
    with ours, theirs:
        yield ours, theirs


def test_a_takeover_reaches_the_other_workers_as_surrender(pair: tuple[socket.socket, socket.socket]) -> None:
    worker, supervisor = pair
    server = _Recording()
    forwards = WorkerForwards(worker, server, MESSAGE_SIZE)
    # A peer-chosen user and address with spaces and non-ASCII survive the trip.
    who = ("dé vé", FINGERPRINT)
    assert server.take_over_elsewhere is not None
    assert server.take_over_elsewhere(who, "local host", 8022) is True
    asked = supervisor.recv(MESSAGE_SIZE)
    assert asked.startswith(b"takeover ") and asked.isascii()
    others = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    try:
        assert relay_takeover(asked, [o[0] for o in others])
        for _, other in others:
            other.settimeout(5)
            told = other.recv(MESSAGE_SIZE)
            assert told.startswith(b"surrender ")
            forwards.surrender(told)
    finally:
        for a, b in others:
            a.close()
            b.close()
    assert server.surrendered == [(who, "local host", 8022)] * 2


@pytest.mark.parametrize(
    "data",
    [
        b"ended 127.0.0.1",
        b"takeover u " + FINGERPRINT.encode() + b" 0 localhost",
        b"takeover u " + FINGERPRINT.encode() + b" 65536 localhost",
        b"takeover u " + FINGERPRINT.encode() + b" 000022 localhost",
        b"takeover u " + FINGERPRINT.encode() + b" 22",
        b"takeover u " + FINGERPRINT.encode() + b" 22 local host",
        b"surrender u " + FINGERPRINT.encode() + b" 22 localhost",
    ],
)
def test_not_a_takeover_is_not_relayed(data: bytes, pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    assert relay_takeover(data, [ours]) is False
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(MESSAGE_SIZE)


def test_a_bad_surrender_is_logged_and_ignored(
    pair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    server = _Recording()
    forwards = WorkerForwards(pair[0], server, MESSAGE_SIZE)
    forwards.surrender(b"surrender \x1b[2J 22")
    assert server.surrendered == []
    assert "supervisor: bad message b'surrender \\x1b[2J 22'" in caplog.text


def test_a_request_too_long_for_the_channel_stays_in_the_worker(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    worker, supervisor = pair
    server = _Recording()
    WorkerForwards(worker, server, MESSAGE_SIZE)
    assert server.take_over_elsewhere is not None
    assert server.take_over_elsewhere(("u" * MESSAGE_SIZE, FINGERPRINT), "localhost", 22) is False
    supervisor.setblocking(False)
    with pytest.raises(BlockingIOError):
        supervisor.recv(MESSAGE_SIZE)


def test_a_closed_supervisor_is_no_takeover(pair: tuple[socket.socket, socket.socket]) -> None:
    worker, supervisor = pair
    server = _Recording()
    WorkerForwards(worker, server, MESSAGE_SIZE)
    supervisor.close()
    assert server.take_over_elsewhere is not None
    assert server.take_over_elsewhere(("u", FINGERPRINT), "localhost", 22) is False


def test_a_worker_gone_does_not_stop_the_relay(pair: tuple[socket.socket, socket.socket]) -> None:
    gone, _ = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    gone.close()
    ours, theirs = pair
    asked = b"takeover u " + FINGERPRINT.encode() + b" 22 localhost"
    assert relay_takeover(asked, [gone, ours])
    told = theirs.recv(MESSAGE_SIZE)
    assert told.startswith(b"surrender u SHA256") and told.endswith(b" 22 localhost")
