"""The SSH connection protocol's channel layer (RFC 4254 §4, §5, §7) as a sans-IO core.

Theory of operation. A :class:`Channels` table is owned by a connection after
user authentication. The connection feeds it every message numbered 80-100
through :meth:`Channels.handle`; the table answers through the injected
``send(head, data)`` function and reports what happened by appending event
objects to the injected ``events`` list. It never does I/O, never buffers
channel data, and never looks at the clock.

Channel states (local view)::

    open()  --> OPENING --CONFIRMATION--> OPEN --close()--> CLOSING
                   |                        |                 |
                   +---FAILURE--> (freed)   +--peer CLOSE--+  +--peer CLOSE--> (freed)
    peer OPEN --> PENDING --accept_open()--> OPEN          |
                     +-----reject_open()--> (freed)        +--> we answer CLOSE --> (freed)

EOF is a flag per direction, not a state (RFC 4254 §5.3: half-close). A
channel's local id is freed, and may be reused, only once CLOSE has been both
sent and received; that moment is reported once as :class:`ChannelClosed`.
Each id's life ends in exactly one :class:`ChannelOpenRefused` or
:class:`ChannelClosed` event, except a peer's open that the runtime itself
answered with :meth:`Channels.reject_open`. After :meth:`Channels.close`, the
only further event for that id is its ChannelClosed (or ChannelOpenRefused if
it was still opening): data, EOF and requests racing our CLOSE are checked and
then dropped.

Flow control (RFC 4254 §5.2): ``local_window`` is what the peer may still send
us; it shrinks with each data message and grows only when the runtime calls
:meth:`Channels.acknowledge` for bytes it has written onward, batched into one
WINDOW_ADJUST per eighth of the window, which grows toward the path's
bandwidth-delay product within bounds (:mod:`hashike.proto.window`).
``remote_window`` is what we may send; :meth:`Channels.send_data` never
sends past it and never queues the rest.

What the peer may send about a channel depends on the channel's state, and
:data:`PEER_MAY_SEND` says it as a table: a message for a channel whose state
does not list it ends the connection (RFC 4254 §5.1: confirmations only for a
channel that is opening; §5.2-§5.4: data, EOF, CLOSE and requests only for one
both sides know).

Lifecycle. Once the connection is closed (``closed()`` is true), and for a
channel that has closed (CLOSE both ways, or a refused open) while its id is
not reused yet, every command is a no-op: answers (``accept_open``, ``reject_open``,
``reply_request``, ``reply_global_request``), ``send_eof``, ``close`` and
``acknowledge`` do nothing, ``send_data`` and ``window_available`` return 0.
The runtime never needs to ask "is it still open?" first. Commands that start
something that needs the peer (``open``, ``global_request``) raise
:class:`LocalProtocolError` instead: nothing could ever answer them.
"""

from __future__ import annotations

import heapq
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hashike.proto.channel_states import CHANNEL_MESSAGES, PEER_MAY_SEND, Channel, ChannelState
from hashike.proto.channel_types import decode_open_extra, encode_tcpip
from hashike.proto.constants import MsgType, OpenFailureReason
from hashike.proto.errors import ChannelOpenFailed, DecodeError, LocalProtocolError, RemoteProtocolError
from hashike.proto.events import (
    ChannelClosed,
    ChannelData,
    ChannelEofReceived,
    ChannelOpenConfirmed,
    ChannelOpenRefused,
    ChannelOpenRequested,
    ChannelRequestReceived,
    ChannelRequestReplied,
    ChannelWindowOpened,
)
from hashike.proto.global_requests import (
    KEEPALIVE,
    MAX_PENDING_GLOBAL_REQUESTS,
    NAME_LIMIT,
    EventSink,
    GlobalRequests,
    Send,
    expect_reply,
)
from hashike.proto.packet import MAX_PAYLOAD
from hashike.proto.replies import ReplyQueue
from hashike.proto.window import ReceiveWindow, WindowTuning
from hashike.proto.wire import Reader, encode_bool, encode_byte, encode_string

__all__ = [
    "MAX_PENDING_GLOBAL_REQUESTS",
    "MAX_PENDING_REQUESTS",
    "Channel",
    "ChannelState",
    "Channels",
    "EventSink",
    "CHANNEL_MESSAGES",
    "KEEPALIVE",
    "PEER_MAY_SEND",
    "Send",
]

MAX_UINT32 = 0xFFFF_FFFF
# Requests from the peer awaiting our reply, per channel. Replies must go in
# order (RFC 4254 §5.4), so an unanswered request holds back every later one;
# this bounds what a peer can make us remember (global requests: their own).
MAX_PENDING_REQUESTS = 256
_DESCRIPTION_LIMIT = 4096
# What a transport packet adds around a channel data payload, worst case:
# packet_length (4) + padding_length (1) + padding (<= 4 + 15) + MAC (<= 64),
# plus the CHANNEL_EXTENDED_DATA header (13). RFC 4253 §6.1 counts all of it
# against the peer's maximum packet size.
_PACKET_OVERHEAD = 4 + 1 + 19 + 64 + 13

_DATA_HEAD = struct.Struct(">BII")  # msg, recipient channel, data length
_EXT_HEAD = struct.Struct(">BIII")  # msg, recipient channel, data type code, data length
_U32X3 = struct.Struct(">III")


def _msg(msg: int, *uint32s: int) -> bytes:
    """A message number followed by uint32 fields."""
    return struct.pack(f">B{len(uint32s)}I", msg, *uint32s)


class DirectSend(Protocol):
    """The transport's reserve/commit sends (Transport.reserve, send_reserved)."""

    def reserve(self, offset: int, n: int) -> memoryview | None: ...

    def send_reserved(self, head: bytes, n: int) -> None: ...


# The smallest data buffer() offers: a read per packet pays a system call and
# a loop iteration, which for OpenSSH's 32 KiB packets costs more than the
# copy it saves (send_data copies one 256 KiB read into eight packets).
DIRECT_MIN = 64 * 1024


# ------------------------------------------------------------------ state


@dataclass(slots=True, eq=False)
class _Chan:
    id: int
    kind: str
    state: ChannelState
    tuning: ReceiveWindow  # the window's size, and what it grows on
    local_window: int
    local_max_packet: int
    remote_id: int = 0
    remote_window: int = 0
    remote_max_packet: int = 0
    unacked: int = 0  # received, not yet acknowledged by the runtime
    consumed: int = 0  # acknowledged, not yet granted back in a WINDOW_ADJUST
    eof_sent: bool = False
    eof_received: bool = False
    close_sent: bool = False
    close_on_confirm: bool = False
    sink: Callable[[memoryview], None] | None = None  # takes its CHANNEL_DATA (deliver)
    out_requests: deque[str] = field(default_factory=deque)  # our want_reply requests, oldest first
    in_requests: ReplyQueue = field(default_factory=lambda: ReplyQueue(MAX_PENDING_REQUESTS))  # the peer's


_UNKNOWN_TO_PEER = frozenset((ChannelState.OPENING, ChannelState.PENDING))


def _check_uint32(name: str, value: int, minimum: int = 0) -> None:
    if not minimum <= value <= MAX_UINT32:
        raise ValueError(f"{name} must be between {minimum} and {MAX_UINT32}, not {value}")


class Channels:
    """The channel table of one connection (RFC 4254 §5)."""

    def __init__(
        self,
        send: Send,
        events: EventSink,
        *,
        window: int = 2 * 1024 * 1024,
        max_packet: int = 32 * 1024,
        max_channels: int = 4096,
        peer_max_packet: int = 35000,
        closed: Callable[[], bool] = lambda: False,
        direct: DirectSend | None = None,
        tuning: WindowTuning | None = None,
    ) -> None:
        _check_uint32("window", window)
        self._check_max_packet(max_packet)
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self._send = send
        self._direct = direct
        self._events = events
        self._closed = closed  # the connection's: see "Lifecycle" above
        self.window = window  # each channel's start: it grows within self.tuning's bounds
        self.tuning = WindowTuning() if tuning is None else tuning
        self.max_packet = max_packet
        self.max_channels = max_channels
        # The largest transport packet the peer accepts (RFC 4253 §6.1, or
        # larger if it said so in EXT_INFO). The connection may update this.
        self.peer_max_packet = peer_max_packet
        self._channels: dict[int, _Chan] = {}
        self._free: list[int] = []  # heap of freed ids below _next_id
        self._released: list[int] = []  # freed, reusable after recycle()
        self._next_id = 0
        self._global = GlobalRequests(send, events, closed)
        self._handlers: dict[int, Callable[[memoryview], None]] = {
            MsgType.GLOBAL_REQUEST: self._global.on_request,
            MsgType.REQUEST_SUCCESS: lambda p: self._global.on_reply(p, True),
            MsgType.REQUEST_FAILURE: lambda p: self._global.on_reply(p, False),
            MsgType.CHANNEL_OPEN: self._on_open,
            MsgType.CHANNEL_OPEN_CONFIRMATION: self._on_open_confirmation,
            MsgType.CHANNEL_OPEN_FAILURE: self._on_open_failure,
            MsgType.CHANNEL_WINDOW_ADJUST: self._on_window_adjust,
            MsgType.CHANNEL_DATA: self.handle_data,
            MsgType.CHANNEL_EXTENDED_DATA: self._on_extended_data,
            MsgType.CHANNEL_EOF: self._on_eof,
            MsgType.CHANNEL_CLOSE: self._on_close,
            MsgType.CHANNEL_REQUEST: self._on_request,
            MsgType.CHANNEL_SUCCESS: lambda p: self._on_request_reply(p, True),
            MsgType.CHANNEL_FAILURE: lambda p: self._on_request_reply(p, False),
        }

    @staticmethod
    def _check_max_packet(max_packet: int) -> None:
        # Our transport must be able to receive a data message this large.
        if not 1 <= max_packet <= MAX_PAYLOAD - 13:
            raise ValueError(f"max_packet must be between 1 and {MAX_PAYLOAD - 13}, not {max_packet}")

    # ------------------------------------------------------------ queries

    def __len__(self) -> int:
        """Live channels, in every state until CLOSE went both ways."""
        return len(self._channels)

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._channels

    def ids(self) -> tuple[int, ...]:
        return tuple(self._channels)

    def channel(self, channel_id: int) -> Channel:
        c = self._get(channel_id)
        return Channel(
            channel_id=c.id,
            kind=c.kind,
            state=c.state,
            remote_id=None if c.state in _UNKNOWN_TO_PEER else c.remote_id,
            local_window=c.local_window,
            remote_window=c.remote_window,
            local_max_packet=c.local_max_packet,
            remote_max_packet=c.remote_max_packet,
            eof_sent=c.eof_sent,
            eof_received=c.eof_received,
            close_sent=c.close_sent,
        )

    def window_available(self, channel_id: int) -> int:
        """How many bytes ``send_data`` would accept now (0 if it cannot send)."""
        c = self._live(channel_id)
        if c is None or c.state is not ChannelState.OPEN or c.eof_sent:
            return 0
        return c.remote_window

    # ------------------------------------------------------------ opening

    def open(
        self, kind: str, extra: bytes = b"", *, window: int | None = None, max_packet: int | None = None
    ) -> int:
        """Send CHANNEL_OPEN (RFC 4254 §5.1) and return the new local id.

        Raises :class:`ChannelOpenFailed` (RESOURCE_SHORTAGE) when
        ``max_channels`` channels are live, :class:`LocalProtocolError` once
        the connection is closed."""
        self._check_open()
        window = self.window if window is None else window
        max_packet = self.max_packet if max_packet is None else max_packet
        _check_uint32("window", window)
        self._check_max_packet(max_packet)
        if len(self._channels) >= self.max_channels:
            raise ChannelOpenFailed(
                f"too many channels ({self.max_channels})", OpenFailureReason.RESOURCE_SHORTAGE
            )
        c = self._allocate(kind, ChannelState.OPENING, window, max_packet)
        self._send(
            encode_byte(MsgType.CHANNEL_OPEN)
            + encode_string(kind)
            + _U32X3.pack(c.id, window, max_packet)
            + extra,
            b"",
        )
        return c.id

    def open_direct_tcpip(self, host: str, port: int, orig_host: str, orig_port: int) -> int:
        """RFC 4254 §7.2: ask the peer to connect to host:port for us."""
        return self.open("direct-tcpip", encode_tcpip(host, port, orig_host, orig_port))

    def open_forwarded_tcpip(self, address: str, port: int, orig_host: str, orig_port: int) -> int:
        """RFC 4254 §7.2: tell the peer a connection arrived on a port it
        forwarded with "tcpip-forward" (address/port as it asked for them)."""
        return self.open("forwarded-tcpip", encode_tcpip(address, port, orig_host, orig_port))

    def accept_open(self, channel_id: int) -> None:
        """Confirm a :class:`ChannelOpenRequested` (RFC 4254 §5.1)."""
        c = self._get_state(channel_id, ChannelState.PENDING, "accept")
        if c is None:
            return
        c.state = ChannelState.OPEN
        fields = (c.remote_id, c.id, c.local_window, c.local_max_packet)
        self._send(_msg(MsgType.CHANNEL_OPEN_CONFIRMATION, *fields), b"")

    def reject_open(self, channel_id: int, reason: int, description: str) -> None:
        """Refuse a :class:`ChannelOpenRequested`; the id is free at once."""
        c = self._get_state(channel_id, ChannelState.PENDING, "reject")
        if c is None:
            return
        self._release(c)
        self._send_open_failure(c.remote_id, reason, description)

    def _send_open_failure(self, remote_id: int, reason: int, description: str) -> None:
        language = encode_string(b"")
        self._send(
            _msg(MsgType.CHANNEL_OPEN_FAILURE, remote_id, reason) + encode_string(description) + language, b""
        )

    # ------------------------------------------------------------ sending

    def send_data(self, channel_id: int, data: bytes | memoryview, extended: int | None = None) -> int:
        """Send as much of ``data`` as the peer's window allows (RFC 4254 §5.2),
        in packets no larger than the peer's maximum; return how many bytes
        were consumed. Nothing is buffered or retained: each packet is one
        ``send(head, slice)`` call; the caller keeps the rest and retries
        after :class:`ChannelWindowOpened`."""
        c = self._sendable(channel_id, "send data")
        if c is None:
            return 0
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if extended is not None:
            _check_uint32("extended", extended)
        total = min(len(view), c.remote_window)
        if total == 0:
            return 0
        chunk = self._packet_limit(c)
        if chunk < 1:
            raise LocalProtocolError(f"peer's maximum packet size {self.peer_max_packet} is too small")
        send, rid = self._send, c.remote_id
        offset = 0
        while offset < total:
            n = min(chunk, total - offset)
            if extended is None:
                head = _DATA_HEAD.pack(MsgType.CHANNEL_DATA, rid, n)
            else:
                head = _EXT_HEAD.pack(MsgType.CHANNEL_EXTENDED_DATA, rid, extended, n)
            send(head, view[offset : offset + n])
            offset += n
        c.remote_window -= total
        return total

    def data_buffer(self, channel_id: int) -> memoryview | None:
        """Room for the next CHANNEL_DATA of ``channel_id`` inside the packet
        being built, as much as the peer's window and maximum packet allow:
        the runtime reads its socket into it, then :meth:`send_buffer`.
        None when that is less than :data:`DIRECT_MIN` (use send_data), or
        sends are blocked, or the channel is closed."""
        c = self._sendable(channel_id, "send data")
        if c is None or self._direct is None:
            return None
        n = min(c.remote_window, self._packet_limit(c))
        if n < DIRECT_MIN:
            return None
        return self._direct.reserve(_DATA_HEAD.size, n)

    def send_buffer(self, channel_id: int, n: int) -> None:
        """Send the first ``n`` bytes written into the last :meth:`data_buffer`."""
        c = self._sendable(channel_id, "send data")
        if c is None or self._direct is None:
            raise LocalProtocolError(f"no data buffer of channel {channel_id} to send")
        if not 0 < n <= min(c.remote_window, self._packet_limit(c)):
            raise LocalProtocolError(f"cannot send {n} bytes on channel {channel_id}")
        self._direct.send_reserved(_DATA_HEAD.pack(MsgType.CHANNEL_DATA, c.remote_id, n), n)
        c.remote_window -= n

    def _packet_limit(self, c: _Chan) -> int:
        """The most data one CHANNEL_DATA of ``c`` may carry: the peer's
        maximum for the channel, and its transport's (RFC 4253 §6.1) less
        the worst-case packet overhead."""
        return min(c.remote_max_packet, self.peer_max_packet - _PACKET_OVERHEAD)

    def send_eof(self, channel_id: int) -> None:
        """RFC 4254 §5.3: we send no more data; the peer still may."""
        c = self._sendable(channel_id, "send EOF")
        if c is None:
            return
        c.eof_sent = True
        self._send(_msg(MsgType.CHANNEL_EOF, c.remote_id), b"")

    def close(self, channel_id: int) -> None:
        """Send CHANNEL_CLOSE once (RFC 4254 §5.3). A second call does nothing.
        On a channel still opening, CLOSE goes out when the peer confirms; on
        a peer's open not yet answered, it is refused."""
        c = self._live(channel_id)
        if c is None:
            return
        if c.state is ChannelState.PENDING:
            self.reject_open(channel_id, OpenFailureReason.ADMINISTRATIVELY_PROHIBITED, "closed")
        elif c.state is ChannelState.OPENING:
            c.close_on_confirm = True
        elif not c.close_sent:
            self._send_close(c)

    def _send_close(self, c: _Chan) -> None:
        c.close_sent = True
        c.state = ChannelState.CLOSING
        c.in_requests.clear()  # we may not answer them any more
        self._send(_msg(MsgType.CHANNEL_CLOSE, c.remote_id), b"")

    def deliver(self, channel_id: int, sink: Callable[[memoryview], None]) -> None:
        """``channel_id``'s CHANNEL_DATA goes to ``sink``, not a ChannelData event,
        while no event waits before it (the wire's order stays). ``sink`` runs in
        the call that fed the input: it must not call the connection."""
        c = self._live(channel_id)
        if c is not None:
            c.sink = sink

    def acknowledge(self, channel_id: int, n: int) -> None:
        """The runtime has written ``n`` received bytes onward: give the peer
        that much window back, batched into one WINDOW_ADJUST per eighth of
        the window (RFC 4254 §5.2), grown as :mod:`hashike.proto.window`
        decides."""
        c = self._live(channel_id)
        if c is None:
            return
        if not 0 <= n <= c.unacked:
            raise LocalProtocolError(f"acknowledged {n} bytes, but only {c.unacked} are unacknowledged")
        c.unacked -= n
        c.consumed += n
        if c.consumed < c.tuning.adjust_at:
            return
        if c.state is not ChannelState.OPEN or c.eof_received:
            return  # the peer sends no more data: no credit needed
        grant, c.consumed = self.tuning.adjust(c.tuning, c.consumed, c.local_window), 0
        c.local_window += grant
        self._send(_msg(MsgType.CHANNEL_WINDOW_ADJUST, c.remote_id, grant), b"")

    # ----------------------------------------------------------- requests

    def send_request(self, channel_id: int, name: str, want_reply: bool, extra: bytes = b"") -> None:
        """RFC 4254 §5.4. Allowed after our EOF (exit-status follows it), not after CLOSE."""
        c = self._live(channel_id)
        if c is None:
            return
        if c.state is not ChannelState.OPEN:
            raise LocalProtocolError(f"cannot send a request on channel {channel_id} ({c.state.value})")
        if want_reply:
            c.out_requests.append(name)
        head = _msg(MsgType.CHANNEL_REQUEST, c.remote_id) + encode_string(name) + encode_bool(want_reply)
        self._send(head + extra, b"")

    def reply_request(self, channel_id: int, success: bool) -> None:
        """Answer the oldest unanswered :class:`ChannelRequestReceived` with
        want_reply. After our CLOSE the answer is dropped (§5.3)."""
        c = self._live(channel_id)
        if c is not None and c.state is not ChannelState.CLOSING:
            c.in_requests.answer((success, b""), None, f"on channel {channel_id}")
            self._flush_channel_replies(c)

    def global_request(self, name: str, want_reply: bool, extra: bytes = b"") -> None:
        """RFC 4254 §4 (:meth:`GlobalRequests.request`)."""
        self._global.request(name, want_reply, extra)

    def reply_global_request(
        self, success: bool, extra: bytes = b"", *, request_id: int | None = None
    ) -> None:
        """Answer a :class:`GlobalRequestReceived` (:meth:`GlobalRequests.reply`)."""
        self._global.reply(success, extra, request_id=request_id)

    # ----------------------------------------------------------- dispatch

    def handle(self, msg: int, payload: memoryview) -> None:
        """One message numbered 80-100; ``payload`` starts with its message
        byte. Channel data is reported as a slice of it, uncopied: the
        packet reader keeps it unchanged while a view is held
        (proto/packet.py). Raises :class:`RemoteProtocolError` if the peer
        broke the protocol."""
        handler = self._handlers.get(msg)
        if handler is None:
            raise LocalProtocolError(f"message {msg} is not a connection protocol message")
        handler(payload)

    def handle_data(self, payload: memoryview) -> None:
        """CHANNEL_DATA (RFC 4254 §5.2), as :meth:`handle` takes it: the
        transport calls this directly on its data path. The fixed header is
        unpacked in place and the event's data is a slice, uncopied."""
        if len(payload) < 9:
            raise DecodeError("CHANNEL_DATA truncated")
        _, cid, n = _DATA_HEAD.unpack_from(payload)
        if len(payload) != 9 + n:
            raise DecodeError(f"CHANNEL_DATA length {n} does not match the message")
        self._receive(cid, payload[9:], None)

    def _on_extended_data(self, payload: memoryview) -> None:
        if len(payload) < 13:
            raise DecodeError("CHANNEL_EXTENDED_DATA truncated")
        _, cid, code, n = _EXT_HEAD.unpack_from(payload)
        if len(payload) != 13 + n:
            raise DecodeError(f"CHANNEL_EXTENDED_DATA length {n} does not match the message")
        self._receive(cid, payload[13:], code)

    def _receive(self, cid: int, data: memoryview, extended: int | None) -> None:
        c = self._peer_channel(
            cid, MsgType.CHANNEL_DATA if extended is None else MsgType.CHANNEL_EXTENDED_DATA
        )
        n = len(data)
        # RFC 4254 §5.2: the peer may not send more than the window we granted,
        # nor a packet larger than the maximum we announced.
        if n > c.local_window:
            raise RemoteProtocolError(
                f"channel {cid}: peer sent {n} bytes with only {c.local_window} left in the window"
            )
        if n > c.local_max_packet:
            raise RemoteProtocolError(
                f"channel {cid}: peer sent a {n}-byte packet, larger than our maximum {c.local_max_packet}"
            )
        if c.eof_received:
            raise RemoteProtocolError(f"channel {cid}: data after EOF")
        c.local_window -= n
        if c.close_sent:
            return  # §5.3: data racing our CLOSE; nobody will read it, nor acknowledge it
        if n:
            c.unacked += n
            self.tuning.count(c.tuning, n, c.local_window, c.unacked)
            # The view is of the packet reader's arena, valid while held
            # (proto/packet.py): the data goes on uncopied.
            if c.sink is not None and extended is None and not self._events:
                c.sink(data)
            else:
                self._events.append(ChannelData(channel_id=cid, data=data, extended=extended))

    def _on_window_adjust(self, payload: memoryview) -> None:
        r = Reader(payload, 1)
        cid, n = r.uint32(), r.uint32()
        r.check_end()
        c = self._peer_channel(cid, MsgType.CHANNEL_WINDOW_ADJUST)
        # RFC 4254 §5.2: the window may not exceed 2^32 - 1 bytes.
        if c.remote_window + n > MAX_UINT32:
            raise RemoteProtocolError(f"channel {cid}: WINDOW_ADJUST overflows the window")
        was = c.remote_window
        c.remote_window += n
        if was == 0 and n and c.state is ChannelState.OPEN and not c.eof_sent:
            self._events.append(ChannelWindowOpened(channel_id=cid, window=c.remote_window))

    def _on_eof(self, payload: memoryview) -> None:
        cid, c = self._addressed(payload)
        if c.eof_received:
            raise RemoteProtocolError(f"channel {cid}: second EOF")
        c.eof_received = True
        if not c.close_sent:
            self._events.append(ChannelEofReceived(channel_id=cid))

    def _on_close(self, payload: memoryview) -> None:
        cid, c = self._addressed(payload)
        # RFC 4254 §5.3: answer with our CLOSE unless we sent one; the
        # channel then is closed both ways and its id may be reused.
        if not c.close_sent:
            self._send_close(c)
        self._release(c)
        self._events.append(ChannelClosed(channel_id=cid))

    def _on_open(self, payload: memoryview) -> None:
        r = Reader(payload, 1)
        kind = r.ascii(NAME_LIMIT)
        sender, window, max_packet = r.uint32(), r.uint32(), r.uint32()
        extra = r.rest()
        r.check_end()
        if max_packet < 1:
            raise RemoteProtocolError(f"CHANNEL_OPEN with maximum packet size {max_packet}")
        decoded = decode_open_extra(kind, extra)
        if decoded is None:
            self._send_open_failure(sender, OpenFailureReason.CONNECT_FAILED, "invalid port")
            return
        if len(self._channels) >= self.max_channels:
            # Bounded state per connection: refuse rather than grow.
            self._send_open_failure(sender, OpenFailureReason.RESOURCE_SHORTAGE, "too many channels")
            return
        c = self._allocate(kind, ChannelState.PENDING, self.window, self.max_packet)
        c.remote_id, c.remote_window, c.remote_max_packet = sender, window, max_packet
        host, port, orig_host, orig_port, path = decoded
        self._events.append(
            ChannelOpenRequested(
                channel_id=c.id,
                kind=kind,
                window=window,
                max_packet=max_packet,
                extra=extra,
                host=host,
                port=port,
                orig_host=orig_host,
                orig_port=orig_port,
                socket_path=path,
            )
        )

    def _on_open_confirmation(self, payload: memoryview) -> None:
        r = Reader(payload, 1)
        cid, sender, window, max_packet = r.uint32(), r.uint32(), r.uint32(), r.uint32()
        # RFC 4254 §5.1: channel type specific data may follow; none of the
        # types we open defines any, so it is read and ignored.
        r.rest()
        r.check_end()
        c = self._peer_channel(cid, MsgType.CHANNEL_OPEN_CONFIRMATION)
        if max_packet < 1:
            raise RemoteProtocolError(f"OPEN_CONFIRMATION with maximum packet size {max_packet}")
        c.remote_id, c.remote_window, c.remote_max_packet = sender, window, max_packet
        c.state = ChannelState.OPEN
        if c.close_on_confirm:
            self._send_close(c)  # close() was called while opening
        else:
            self._events.append(ChannelOpenConfirmed(channel_id=cid))

    def _on_open_failure(self, payload: memoryview) -> None:
        r = Reader(payload, 1)
        cid, reason = r.uint32(), r.uint32()
        # Descriptions are for display: a bad one is not worth the connection.
        description = r.string(_DESCRIPTION_LIMIT).decode("utf-8", "replace")
        r.string(NAME_LIMIT)  # language tag
        r.check_end()
        c = self._peer_channel(cid, MsgType.CHANNEL_OPEN_FAILURE)
        self._release(c)
        self._events.append(ChannelOpenRefused(channel_id=cid, reason=reason, description=description))

    def _on_request(self, payload: memoryview) -> None:
        r = Reader(payload, 1)
        cid = r.uint32()
        name = r.ascii(NAME_LIMIT)
        want_reply = r.boolean()
        extra = r.rest()
        r.check_end()
        c = self._peer_channel(cid, MsgType.CHANNEL_REQUEST)
        if c.close_sent:
            return  # §5.3: we may send nothing more, not even a reply
        expect_reply(c.in_requests, name, want_reply)
        if name != KEEPALIVE:
            self._events.append(
                ChannelRequestReceived(channel_id=cid, name=name, want_reply=want_reply, extra=extra)
            )
        self._flush_channel_replies(c)

    def _flush_channel_replies(self, c: _Chan) -> None:
        for ok, _ in c.in_requests.ready():
            self._send(_msg(MsgType.CHANNEL_SUCCESS if ok else MsgType.CHANNEL_FAILURE, c.remote_id), b"")

    def _on_request_reply(self, payload: memoryview, success: bool) -> None:
        cid, c = self._addressed(payload)
        if not c.out_requests:
            raise RemoteProtocolError(f"channel {cid}: reply to a request we did not make")
        name = c.out_requests.popleft()  # §5.4: replies come in request order
        if not c.close_sent:
            self._events.append(ChannelRequestReplied(channel_id=cid, name=name, success=success))

    # ------------------------------------------------------------ helpers

    def _allocate(self, kind: str, state: ChannelState, window: int, max_packet: int) -> _Chan:
        # Lowest free id, so ids stay as small as the number of live channels.
        if self._free:
            cid = heapq.heappop(self._free)
        else:
            cid = self._next_id
            self._next_id += 1
        c = _Chan(cid, kind, state, self.tuning.open(window), window, max_packet)
        self._channels[cid] = c
        return c

    def _release(self, c: _Chan) -> None:
        del self._channels[c.id]
        self.tuning.close(c.tuning)
        # Not reusable yet: the runtime may still hold events for this id from
        # the same batch of input (a late acknowledge would credit a stranger).
        self._released.append(c.id)

    def recycle(self) -> None:
        """Make ids released so far reusable. The connection calls this when
        the runtime has taken the events of a batch of input."""
        for cid in self._released:
            heapq.heappush(self._free, cid)
        self._released.clear()

    def _check_open(self) -> None:
        if self._closed():
            raise LocalProtocolError("connection is closed")

    def _get(self, channel_id: int) -> _Chan:
        c = self._channels.get(channel_id)
        if c is None:
            raise LocalProtocolError(f"no channel {channel_id}")
        return c

    def _live(self, channel_id: int) -> _Chan | None:
        """The channel a command acts on, or None when the command is a no-op:
        the connection is closed, or the channel has closed (its id is free
        and not reused yet, which only happens once the runtime has taken
        the events that closed it). An id that was never ours is the
        runtime's bug: LocalProtocolError."""
        if self._closed():
            return None
        c = self._channels.get(channel_id)
        if c is None and not 0 <= channel_id < self._next_id:
            raise LocalProtocolError(f"no channel {channel_id}")
        return c

    def _get_state(self, channel_id: int, state: ChannelState, action: str) -> _Chan | None:
        c = self._live(channel_id)
        if c is not None and c.state is not state:
            raise LocalProtocolError(f"cannot {action} channel {channel_id}: it is {c.state.value}")
        return c

    def _sendable(self, channel_id: int, action: str) -> _Chan | None:
        c = self._live(channel_id)
        if c is not None and (c.state is not ChannelState.OPEN or c.eof_sent):
            why = "EOF was sent" if c.eof_sent and c.state is ChannelState.OPEN else c.state.value
            raise LocalProtocolError(f"cannot {action} on channel {channel_id}: {why}")
        return c

    def _addressed(self, payload: memoryview) -> tuple[int, _Chan]:
        """Decode a message that is just a recipient channel (EOF, CLOSE, replies)."""
        r = Reader(payload, 1)
        cid = r.uint32()
        r.check_end()
        return cid, self._peer_channel(cid, payload[0])

    def _peer_channel(self, cid: int, msg: int) -> _Chan:
        """The channel a peer's message ``msg`` names, if :data:`PEER_MAY_SEND`
        allows that message in the channel's state."""
        c = self._channels.get(cid)
        if c is not None and msg in PEER_MAY_SEND[c.state]:
            return c
        name = MsgType(msg).name
        if msg in PEER_MAY_SEND[ChannelState.OPENING]:
            raise RemoteProtocolError(f"{name} for channel {cid}, which is not opening")
        raise RemoteProtocolError(f"{name} for unknown channel {cid}")
