"""Receive-window auto-tuning for one channel (RFC 4254 §5.2), clock-free.

Theory of operation. A channel carries at most one window per round trip, so
a window smaller than the path's bandwidth-delay product caps throughput; a
window larger than needed only lets a peer make us hold more while our
consumer does not read. A channel starts at the connection's window and
doubles it at a WINDOW_ADJUST (the adjust grants the extra) when, in each of
the last :data:`STREAK` periods (a period ends at the first adjust after a
window's worth of data), the peer was limited by our window and not by our
consumer.

Limited by our window. Without a clock this is read off the input: after each
batch the runtime says whether it read everything the socket had (no partial
packet left over). If so, and the peer has sent every byte of window it can
know of (everything we granted except the WINDOW_ADJUSTs it cannot have seen
yet: an adjust is proven seen once data arrives beyond what was allowed
before it), the peer's stream stopped exactly at the edge of our window while
we had nothing left to read: it stalled waiting for credit, and a bigger
window fills the pipe. (OpenSSH and hashike split a packet to fill a window
exactly; a sender that does not is never seen as limited, and keeps the
window it started with.) Byte counts alone cannot tell a stall from a stream
that merely passed the edge as our adjust arrived; the drained batch is what
says we waited. A receiver that is itself the bottleneck always finds more to
read, so it never grows: an OpenSSH sender buffers up to the window it is
given, and growing it there would only cost memory on both sides. Such a
peer still stalls now and then, when we catch up with it at the edge; a path
whose round trip the window does not cover stalls once a round trip, that is
at least once per window of data, so in every period: hence the streak. A
stall by chance costs memory within the bounds below, never correctness.

Not limited by our consumer. If bytes from earlier batches are still
unacknowledged when a batch ends (aio/flow.py ``Credit`` holds credit while the
local writer is paused), the consumer is behind: that period breaks the streak,
since a bigger window would only buffer more.

Bounds. Growth stops at a per-channel maximum, when the windows of all a
connection's channels together would pass its budget (:class:`WindowTuning`),
and at the bandwidth-delay product of the path once the runtime has measured
its round trip (aio/keepalive.py times SSH requests: the whole path's, relays
and jump hosts included, which the kernel's TCP estimate does not see; while
the first is on its way, windows wait for it): a
window of :data:`FASTEST_PATH` times the round trip fills any path we can
drive, so a stall on a shorter one is a scheduling hiccup, not latency. On
loopback (well under a millisecond) a window never grows past the 2 MiB it
starts with: growing to 8 MiB there made sshd, sending to us, storm in its
allocator (150k page faults per GiB, 0.6 times the speed).
RFC 4254 §5.2 has no way to take window back, so a window never shrinks; it
stops growing, and data beyond it stays a protocol error. HPN-SSH's idea of
following the TCP receive buffer is the background; the rule here is our own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "CONNECTION_WINDOW_BUDGET",
    "FASTEST_PATH",
    "MAX_CHANNEL_WINDOW",
    "STREAK",
    "ReceiveWindow",
    "WindowTuning",
]

# 64 MiB fills a 50 ms path at 1.3 GB/s, beyond what one channel here moves;
# it is also the most a stopped consumer makes us hold for one channel.
MAX_CHANNEL_WINDOW = 64 * 1024 * 1024
# What the windows of one connection's channels may add up to through growth
# (a channel's starting window is always granted).
CONNECTION_WINDOW_BUDGET = 128 * 1024 * 1024
# Bytes per second: twice what one channel here moves at best (about 1.3 GB/s),
# so that the window covering it at a round trip leaves credit to spare.
FASTEST_PATH = 2_500_000_000
# Stalls in this many periods in a row make a window grow (each further one
# grows it again). A window-limited path stalls in every period; a fast
# loopback peer stalls now and then (once per 20-60 adjusts of `ssh` sending
# to hashiked, bench.tunnel_throughput), and growing on each of those made it
# buffer 16 MiB and more and storm in its allocator.
STREAK = 2


@dataclass(slots=True, eq=False)
class ReceiveWindow:
    """Auto-tuning state of one channel's receive window."""

    size: int  # the window we keep granted
    received: int = 0  # data bytes the peer sent so far
    fed: int = 0  # of which in the current batch of input
    window: int = 0  # what the peer may still send by our count, after its last data
    unacked: int = 0  # what the consumer had not acknowledged then
    # Our WINDOW_ADJUSTs the peer may not have seen yet, oldest first: (the
    # bytes it could send before seeing it, the grant).
    unseen: deque[tuple[int, int]] = field(default_factory=deque)
    unseen_total: int = 0
    mark: int = 0  # ``received`` when the current period began
    limited: bool = False  # in this period, the peer stalled on our window
    behind: bool = False  # in this period, the consumer held credit
    streak: int = 0  # periods in a row with a stall and the consumer keeping up

    @property
    def adjust_at(self) -> int:
        """How much consumed credit makes a WINDOW_ADJUST. OpenSSH waits for
        half the window; credit that waits is window the sender cannot use
        (a quarter of it on average at half), and a download from sshd at
        50 ms RTT went from 75 to 125 MB/s at an eighth (bench/lfn.py)."""
        return max(1, self.size // 8)

    def batch_ended(self, drained: bool) -> None:
        if self.unacked - self.fed > self.size // 8:
            self.behind = True  # earlier batches' bytes still wait for the consumer
        elif drained and self.window <= self.unseen_total:
            # It sent every byte it knew it could (OpenSSH and hashike split a
            # packet to fill the window exactly), and then nothing more.
            self.limited = True
        self.fed = 0


@dataclass(slots=True)
class WindowTuning:
    """The bounds of one connection's channel windows, and their batch of input."""

    max_window: int = MAX_CHANNEL_WINDOW
    budget: int = CONNECTION_WINDOW_BUDGET
    used: int = 0  # the sum of the live channels' window sizes
    rtt: float | None = None  # the path's round trip, seconds, if the runtime knows it
    awaiting_rtt: bool = False  # the runtime is measuring it: no growth until it is known
    _fed: list[ReceiveWindow] = field(default_factory=list)  # got data in this batch

    def __post_init__(self) -> None:
        if not 0 < self.max_window <= 0xFFFF_FFFF:  # RFC 4254 §5.2: a window fits a uint32
            raise ValueError(f"max_window must be between 1 and {0xFFFF_FFFF}, not {self.max_window}")

    def open(self, size: int) -> ReceiveWindow:
        self.used += size
        return ReceiveWindow(size)

    def close(self, w: ReceiveWindow) -> None:
        self.used -= w.size

    def count(self, w: ReceiveWindow, n: int, window: int, unacked: int) -> None:
        """``n`` data bytes arrived, leaving ``window`` open and ``unacked``
        unacknowledged: the peer has seen each adjust it has sent beyond."""
        if not w.fed:
            self._fed.append(w)
        w.received += n
        w.fed += n
        w.window, w.unacked = window, unacked
        unseen = w.unseen
        while unseen and w.received > unseen[0][0]:
            w.unseen_total -= unseen.popleft()[1]

    def input_ended(self, drained: bool) -> None:
        """A batch of input was fed, its events not yet taken (so nothing was
        acknowledged since its data); ``drained``: none of it is left over,
        not even a partial packet. Judges each channel that got data in it."""
        for w in self._fed:
            w.batch_ended(drained)
        self._fed.clear()

    def _growth(self, w: ReceiveWindow) -> int:
        """A period ends: by how much the window grows."""
        w.streak = w.streak + 1 if w.limited and not w.behind else 0
        w.limited = w.behind = False
        w.mark = w.received
        if w.streak < STREAK:
            return 0
        limit = self.max_window
        if self.rtt is not None:
            limit = min(limit, int(self.rtt * FASTEST_PATH))
        elif self.awaiting_rtt:
            return 0  # the streak stands: the window grows at the first period after the sample
        return max(0, min(w.size, limit - w.size, self.budget - self.used))

    def expect_rtt(self) -> None:
        """The runtime is measuring the round trip: windows wait for it."""
        self.awaiting_rtt = True

    def observe_rtt(self, seconds: float) -> None:
        """A sample of the path's round trip. The smallest counts: queues
        filled by our own traffic add delay, not path to fill."""
        if seconds > 0 and (self.rtt is None or seconds < self.rtt):
            self.rtt = seconds

    def adjust(self, w: ReceiveWindow, consumed: int, window: int) -> int:
        """A WINDOW_ADJUST is due for ``consumed`` bytes with ``window`` still
        open: the grant, which doubles the window if it limited the peer in
        the last STREAK periods, within ``max_window`` and what is left of
        ``budget``."""
        extra = self._growth(w) if w.received - w.mark >= w.size else 0
        w.size += extra
        self.used += extra
        grant = consumed + extra
        w.unseen.append((w.received + window, grant))
        w.unseen_total += grant
        return grant
