"""Receive-window auto-tuning (proto/window.py, RFC 4254 §5.2): one receiving
Channels table and a simulated sender that uses every byte of credit it has.
What the sender may send is read off the WINDOW_ADJUSTs the table sends, so
every assertion is about the wire, or the table's own accounting."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashike.proto.channels import Channels
from hashike.proto.connection import OPENSSH_CLIENT_MAX_WINDOW, OPENSSH_MAX_WINDOW, START_WINDOW
from hashike.proto.constants import MsgType
from hashike.proto.errors import RemoteProtocolError
from hashike.proto.events import ChannelData, ChannelOpenRequested
from hashike.proto.ext_info import EXT_MAX_PACKET
from hashike.proto.window import FASTEST_PATH, MAX_CHANNEL_WINDOW, WindowTuning
from hashike.proto.wire import encode_byte, encode_string
from tests.proto.authkit import logged_in

KIB = 1024
START = 64 * KIB
PACKET = 8 * KIB


class Receiver:
    """A Channels table fed hand-built peer messages, batch by batch."""

    def __init__(self, *, max_window: int = 1024 * KIB, budget: int = 64 * 1024 * KIB) -> None:
        self.out: list[bytes] = []
        self.events: list[object] = []
        self.in_flight: dict[int, int] = {}  # WINDOW_ADJUST credit sent, by the peer's channel id
        self.ch = Channels(
            lambda head, data: self.out.append(bytes(head) + bytes(data)),
            self.events,
            window=START,
            max_packet=PACKET,
            tuning=WindowTuning(max_window, budget),
        )

    def open(self, sender_id: int) -> int:
        msg = (
            encode_byte(MsgType.CHANNEL_OPEN)
            + encode_string("session")
            + struct.pack(">III", sender_id, START, PACKET)
        )
        self.ch.handle(msg[0], memoryview(msg))
        (opened,) = [e for e in self.events if isinstance(e, ChannelOpenRequested)]
        self.events.clear()
        self.ch.accept_open(opened.channel_id)
        self.out.clear()
        return opened.channel_id

    def data(self, cid: int, n: int) -> None:
        msg = struct.pack(">BII", MsgType.CHANNEL_DATA, cid, n) + b"x" * n
        self.ch.handle(msg[0], memoryview(msg))

    def take_data(self) -> list[tuple[int, int]]:
        """(channel, bytes) of each ChannelData since the last call."""
        got = [(e.channel_id, len(e.data)) for e in self.events if isinstance(e, ChannelData)]
        self.events.clear()
        self.ch.recycle()
        return got

    def grants(self, sender_id: int) -> int:
        """WINDOW_ADJUST credit sent to ``sender_id`` and not delivered yet."""
        for m in self.out:
            if m[0] == MsgType.CHANNEL_WINDOW_ADJUST:
                rid, n = struct.unpack_from(">II", m, 1)
                self.in_flight[rid] = self.in_flight.get(rid, 0) + n
        self.out.clear()
        return self.in_flight.pop(sender_id, 0)

    def size(self, cid: int) -> int:
        """The window the table keeps granted on ``cid`` (what auto-tuning grew)."""
        return self.ch._channels[cid].tuning.size


class Sender:
    """The peer's side of one channel: it sends all the credit it has, in
    packets of at most PACKET, and gets our WINDOW_ADJUSTs a round trip later."""

    def __init__(self, rx: Receiver, sender_id: int) -> None:
        self.rx, self.id = rx, sender_id
        self.cid = rx.open(sender_id)
        self.credit = START
        self.held = 0  # received by the table, not acknowledged (the consumer is behind)

    def burst(self, *, drained: bool = True) -> int:
        """One batch: everything the credit allows, then the batch ends."""
        sent = self.credit
        while self.credit:
            n = min(PACKET, self.credit)
            self.rx.data(self.cid, n)
            self.credit -= n
        self.rx.ch.tuning.input_ended(drained)
        return sent

    def consume(self, *, hold: bool = False) -> None:
        """The runtime takes the batch's events and acknowledges them, unless held."""
        for cid, n in self.rx.take_data():
            assert cid == self.cid
            if hold:
                self.held += n
            else:
                self.rx.ch.acknowledge(cid, n)

    def release(self) -> None:
        self.rx.ch.acknowledge(self.cid, self.held)
        self.held = 0

    def round_trip(self) -> None:
        """Our WINDOW_ADJUSTs reach the sender."""
        self.credit += self.rx.grants(self.id)

    def rounds(self, n: int, drained: Callable[[int], bool] = lambda i: True) -> list[int]:
        """``n`` round trips (bounded) of a burst, its consumption and our
        adjusts; ``drained(i)``: whether batch ``i`` ends with nothing left.
        What each burst sent."""
        bursts = []
        for i in range(n):
            bursts.append(self.burst(drained=drained(i)))
            self.consume()
            self.round_trip()
        return bursts


def test_a_sender_that_stalls_on_the_window_makes_it_grow_to_the_cap() -> None:
    rx = Receiver(max_window=1024 * KIB)
    peer = Sender(rx, 7)
    bursts = peer.rounds(30)  # doubling from 64 KiB reaches 1 MiB in a few rounds
    assert rx.size(peer.cid) == 1024 * KIB
    # Each stall granted more than the last until the cap; then a steady window.
    assert bursts[0] == START and max(bursts) > 8 * START
    assert all(b <= 1024 * KIB for b in bursts)


def test_a_receiver_that_never_drains_its_input_does_not_grow() -> None:
    # The same bytes, but every batch ends with more input waiting (a partial
    # packet): we are the bottleneck, and a bigger window would only buffer.
    rx = Receiver()
    peer = Sender(rx, 7)
    assert all(sent <= START for sent in peer.rounds(20, drained=lambda i: False))
    assert rx.size(peer.cid) == START


def test_a_stall_now_and_then_does_not_grow_the_window() -> None:
    # A fast peer on loopback: mostly we are behind it, and once in a while
    # we catch up exactly at the edge. Never in STREAK periods in a row.
    rx = Receiver()
    peer = Sender(rx, 7)
    peer.rounds(40, drained=lambda i: i % 3 == 0)
    assert rx.size(peer.cid) == START


def test_a_sender_with_credit_left_is_not_window_limited() -> None:
    # Our adjusts arrive at once and the sender sends less than it may:
    # the window is not what limits it.
    rx = Receiver()
    peer = Sender(rx, 7)
    for _ in range(100):
        rx.data(peer.cid, 3 * KIB)  # 3 KiB never divides the window evenly
        peer.credit -= 3 * KIB
        rx.ch.tuning.input_ended(True)
        peer.consume()
        peer.round_trip()
        assert peer.credit > 0
    assert rx.size(peer.cid) == START


def test_no_growth_while_the_consumer_holds_credit() -> None:
    rx = Receiver()
    peer = Sender(rx, 7)
    # The consumer stops reading; the sender spends its window over batches.
    for _ in range(START // PACKET):
        rx.data(peer.cid, PACKET)
        rx.ch.tuning.input_ended(True)
        peer.consume(hold=True)
    peer.credit = 0
    assert rx.grants(7) == 0  # credit held: nothing granted back
    peer.release()
    peer.round_trip()
    # The adjust after the consumer caught up gives back what it consumed, no more.
    assert peer.credit == START
    assert rx.size(peer.cid) == START


def test_the_connection_budget_stops_growth_across_channels() -> None:
    rx = Receiver(max_window=1024 * KIB, budget=512 * KIB)
    peers = [Sender(rx, 7), Sender(rx, 8)]
    for _ in range(30):
        for p in peers:
            p.burst()
            p.consume()
            p.round_trip()
    sizes = [rx.size(p.cid) for p in peers]
    assert sum(sizes) <= 512 * KIB
    assert max(sizes) < 1024 * KIB  # the budget, not the per-channel cap, stopped them
    assert rx.ch.tuning.used == sum(sizes)


def test_a_closed_channel_gives_its_window_back_to_the_budget() -> None:
    rx = Receiver(max_window=1024 * KIB, budget=1024 * KIB)
    peer = Sender(rx, 7)
    peer.rounds(30)
    assert rx.ch.tuning.used == 1024 * KIB
    close = encode_byte(MsgType.CHANNEL_CLOSE) + struct.pack(">I", peer.cid)
    rx.ch.handle(close[0], memoryview(close))
    assert rx.ch.tuning.used == 0


def test_a_stopped_consumer_bounds_what_the_sender_can_make_us_hold() -> None:
    rx = Receiver(max_window=512 * KIB)
    peer = Sender(rx, 7)
    peer.rounds(20)  # grow to the cap first
    assert rx.size(peer.cid) == 512 * KIB
    # The consumer stops: whatever the sender does, what we hold stays within the window.
    for _ in range(20):
        peer.burst()
        peer.consume(hold=True)
        peer.round_trip()
        assert peer.held <= 512 * KIB
    assert peer.credit == 0
    assert rx.ch._channels[peer.cid].unacked == peer.held
    # One byte more than granted is still a protocol error (RFC 4254 §5.2).
    with pytest.raises(RemoteProtocolError, match="window"):
        rx.data(peer.cid, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.booleans(), st.booleans(), st.booleans()), max_size=60))
def test_windows_stay_within_their_bounds_whatever_the_pattern(
    steps: list[tuple[int, bool, bool, bool]],
) -> None:
    # Each step: one sender bursts (its batch drained or not), its consumer
    # acknowledges or holds, and our adjusts reach it or stay in flight.
    rx = Receiver(max_window=512 * KIB, budget=768 * KIB)
    peers = [Sender(rx, 7), Sender(rx, 8)]
    for which, drained, hold, deliver in steps:
        peer = peers[which]
        peer.burst(drained=drained)
        peer.consume(hold=hold)
        if not hold:
            peer.release()
        if deliver:
            for p in peers:
                p.round_trip()
        for p in peers:
            chan = rx.ch._channels[p.cid]
            size = rx.size(p.cid)
            # What the sender may still send is what we granted and have not received.
            assert chan.local_window + chan.unacked + chan.consumed == size
            assert chan.unacked == p.held
            assert p.credit <= chan.local_window  # it never knows of more than we granted
            assert size <= 512 * KIB
        assert rx.ch.tuning.used == sum(rx.size(p.cid) for p in peers) <= 768 * KIB


def test_how_far_windows_grow_depends_on_the_peer_and_our_role() -> None:
    # An OpenSSH peer (no max-packet-length@hashike.dev in its EXT_INFO):
    # a download from sshd may grow to 8 MiB; an `ssh` client sending to us
    # gets sshd's 2 MiB (more set off its allocator on loopback). A hashike
    # peer: 64 MiB either way.
    for openssh in (True, False):
        pair = logged_in()
        if openssh:
            pair.client.transport.peer_extensions.pop(EXT_MAX_PACKET)
            pair.server.transport.peer_extensions.pop(EXT_MAX_PACKET)
        client, server = pair.client.channels.tuning, pair.server.channels.tuning
        expected = (OPENSSH_MAX_WINDOW, OPENSSH_CLIENT_MAX_WINDOW) if openssh else (MAX_CHANNEL_WINDOW,) * 2
        assert (client.max_window, server.max_window) == expected
    assert OPENSSH_CLIENT_MAX_WINDOW == START_WINDOW == 2 * 1024 * 1024


def test_the_round_trip_bounds_growth_at_the_bandwidth_delay_product() -> None:
    # 100 µs (loopback): FASTEST_PATH covers it with 250 kB, so a 64 KiB window
    # doubles to 128 KiB, then grows to 250 kB and no further, however often
    # it stalls.
    rx = Receiver(max_window=1024 * KIB)
    rx.ch.tuning.observe_rtt(100e-6)
    peer = Sender(rx, 7)
    peer.rounds(30)
    assert int(100e-6 * FASTEST_PATH) == 250_000
    assert rx.size(peer.cid) == 250_000
    # A long path: the same stalls grow it to the cap.
    far = Receiver(max_window=1024 * KIB)
    far.ch.tuning.observe_rtt(0.05)
    peer = Sender(far, 7)
    peer.rounds(30)
    assert far.size(peer.cid) == 1024 * KIB


def test_the_smallest_round_trip_counts() -> None:
    # Queues our own traffic fills add delay, not path: a later, longer sample
    # does not let windows grow further; nonsense samples are ignored.
    tuning = WindowTuning()
    assert tuning.rtt is None
    for sample in (0.04, 0.0005, 0.2, 0.0, -1.0):
        tuning.observe_rtt(sample)
    assert tuning.rtt == 0.0005


def test_the_connection_passes_round_trips_to_its_channels() -> None:
    # A sample taken before the connection layer exists (the runtime probes
    # as soon as authentication succeeds) reaches the channels' tuning.
    pair = logged_in()
    pair.client.observe_rtt(0.03)
    pair.client.observe_rtt(0.01)
    assert pair.client.channels.tuning.rtt == 0.01
    pair.client.observe_rtt(0.002)
    assert pair.client.channels.tuning.rtt == 0.002


def test_windows_wait_for_a_round_trip_the_runtime_is_measuring() -> None:
    # The runtime said a sample is on its way: stalls do not grow the window
    # until it comes, and the streak they built grows it at the next period.
    rx = Receiver(max_window=1024 * KIB)
    rx.ch.tuning.expect_rtt()
    peer = Sender(rx, 7)
    peer.rounds(12)
    assert rx.size(peer.cid) == START
    rx.ch.tuning.observe_rtt(0.05)
    peer.rounds(3)
    assert rx.size(peer.cid) > START
    peer.rounds(30)
    assert rx.size(peer.cid) == 1024 * KIB
