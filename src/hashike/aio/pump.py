"""The asyncio side of one connection: moves bytes between a socket and a core.

It is deliberately thin. ``data_received`` feeds the core, routes the events
it emits and writes everything the core wants to send in one
``transport.write`` (profiled, one write per packet would be the largest cost of
a Python SSH implementation). No protocol decision is made here.

Where things plug in:

- every event type has one route in :attr:`CorePump.routes`, a dict built
  from the channel routes here and the side's own (:meth:`side_routes`);
- a channel's events go to its :class:`ChannelHandler` in :attr:`bridges`;
- a peer's channel open goes to :attr:`open_handlers`, keyed by channel type
  (RFC 4254 §5.1); a type nobody registered is refused;
- a peer's global request goes to :attr:`global_handlers`, keyed by request
  name (RFC 4254 §4); one nobody registered gets REQUEST_FAILURE;
- the replies to our own global requests resolve the futures that
  :meth:`global_request` returned, in request order (RFC 4254 §4).

The core owns the lifecycle: once it is closed its commands are no-ops, so
nothing here asks whether it is still open before answering.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import OpenFailureReason
from hashike.proto.errors import ConnectionClosed
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
    Disconnected,
    Event,
    GlobalRequestReceived,
    GlobalRequestReplied,
    KexCompleted,
)

from .handler import ChannelHandler

__all__ = ["CorePump", "OpenHandler", "GlobalHandler", "Route", "TIMER_INTERVAL"]

log = logging.getLogger("hashike")

# How often the core is told the time (RekeyLimit's time part).
TIMER_INTERVAL = 30.0
# The read size of read_scratch: sixteen of OpenSSH's 32 KiB packets per read,
# loop turn and send (against asyncio's 256 KiB, the client sending to sshd
# spent 0.1 s/GiB less; 1 MiB saved more but made sshd, with its 2 MiB
# window, spend as much more).
READ_SCRATCH = 512 * 1024

CoreT = TypeVar("CoreT", ClientConnection, ServerConnection)
Route = Callable[[Any], None]
# Must answer the open (accept_open / reject_open), now or later.
OpenHandler = Callable[[ChannelOpenRequested], None]
# Must reply when the request wants a reply, now or later (replies are
# queued in request order by the core, RFC 4254 §4).
GlobalHandler = Callable[[GlobalRequestReceived], None]


class CorePump(asyncio.BufferedProtocol, Generic[CoreT]):
    """asyncio Protocol that drives one sans-IO connection core.

    A socket transport reads straight into the core's packet buffer
    (``get_buffer``/``buffer_updated``): no ``bytes`` per read, no copy
    before a packet is opened. Transports that only know ``data_received``
    (pipes, for ProxyCommand) use that."""

    # RFC 4254 §5.1: the reason and description for an open of a type that
    # no handler takes. Each side says what OpenSSH's says.
    unhandled_open: tuple[int, str] = (OpenFailureReason.ADMINISTRATIVELY_PROHIBITED, "open failed")
    # TCPKeepAlive (SO_KEEPALIVE), yes by default in ssh and sshd alike.
    tcp_keepalive = True

    def __init__(self, core: CoreT) -> None:
        self.core: CoreT = core
        self.transport: asyncio.Transport | None = None
        self.peername: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        # When bytes last came from the peer (the loop's clock): keepalives
        # probe only a peer that has been silent (aio/keepalive.py).
        self.input_at = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self.disconnect: Disconnected | None = None
        # Every channel with a runtime handler, by local channel id.
        self.bridges: dict[int, ChannelHandler] = {}
        self.open_handlers: dict[str, OpenHandler] = {}
        self.global_handlers: dict[str, GlobalHandler] = {}
        self._replies: deque[asyncio.Future[GlobalRequestReplied]] = deque()
        self._ssh_write_paused = False
        self._reading_held = False
        self._continue_scheduled = False
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._after_batch: list[Callable[[], None]] = []
        self._scratch: bytearray | None = None
        self.routes: dict[type, Route] = {**self._channel_routes(), **self.side_routes()}

    def side_routes(self) -> dict[type, Route]:
        """Routes for the events that are not about channels: each side
        (client, server) gives one for every such event type, even if only
        to ignore it, so that no event type is forgotten."""
        raise NotImplementedError

    def read_scratch(self) -> bytearray:
        """A buffer this connection's local sockets are read into when a read
        cannot go straight into a packet (aio/bridge.py). Its contents are
        consumed before the read returns, so one serves every bridge; made
        at the first use: a connection that forwards nothing costs nothing."""
        if self._scratch is None:
            self._scratch = bytearray(READ_SCRATCH)
        return self._scratch

    def call_after_batch(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the events of this batch of input are handled."""
        self._after_batch.append(fn)

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        """Run ``coro`` for this connection; cancelled when the connection
        goes, and never started once the core is closed (an open that came
        with the peer's DISCONNECT must not make us connect anywhere)."""
        if self.core.closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Message sequences OpenSSH sends back to back must not wait on
            # Nagle's algorithm meeting delayed ACKs (86 of 136 ms in `ssh host true`).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(self.tcp_keepalive))
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self._tick()
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.input_at = self._loop.time()
        self.core.receive_data(data)
        self.process()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.core.receive_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.input_at = self._loop.time()
        self.core.receive_into(nbytes)
        self.process()

    def eof_received(self) -> bool | None:
        self.core.receive_eof()
        self.process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_tasks()
        self.core.receive_eof()  # a no-op if the core has closed already
        self._dispatch_events()
        if not self.closed.done():
            self.closed.set_result(None)

    def _stop_tasks(self) -> None:
        """The connection is gone from here: its timer and tasks end."""
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()

    # driving the core ---------------------------------------------------

    def process(self) -> None:
        """Handle the core's events, then flush what it wants to send."""
        self._dispatch_events()
        self.flush()

    def _dispatch_events(self) -> None:
        # Handling an event may make the core emit more (accept_auth() ->
        # AuthSucceeded), so drain until it is quiet.
        while events := self.core.events_received():
            for event in events:
                self.routes[type(event)](event)
        after, self._after_batch = self._after_batch, []
        for fn in after:
            fn()

    # global requests (RFC 4254 §4) ---------------------------------------

    def global_request(
        self, name: str, extra: bytes = b"", *, awaited: bool = True
    ) -> asyncio.Future[GlobalRequestReplied]:
        """Send a global request that wants a reply; the future resolves to
        the reply, or fails with ConnectionClosed if the connection ends
        first. Raises LocalProtocolError if the connection is closed. With
        ``awaited=False`` nobody will look at the reply (a cancel at logout):
        its failure then counts as seen, so asyncio reports nothing."""
        self.core.channels.global_request(name, True, extra)
        reply: asyncio.Future[GlobalRequestReplied] = asyncio.get_running_loop().create_future()
        if not awaited:
            reply.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._replies.append(reply)
        self.flush()
        return reply

    def _on_global_reply(self, event: GlobalRequestReplied) -> None:
        # The core matched the reply to a request we made; replies come in
        # request order, so it is the oldest waiter's.
        reply = self._replies.popleft()
        if not reply.done():  # the caller may have given up (cancelled)
            reply.set_result(event)

    def _on_global_request(self, event: GlobalRequestReceived) -> None:
        handler = self.global_handlers.get(event.name)
        if handler is not None:
            handler(event)
        elif event.want_reply:
            self.core.channels.reply_global_request(False, request_id=event.request_id)

    # channels ------------------------------------------------------------

    def _channel_routes(self) -> dict[type, Route]:
        return {
            ChannelOpenRequested: self._on_open_requested,
            ChannelOpenConfirmed: self._with_handler(lambda h, e: h.channel_open()),
            ChannelOpenRefused: self._on_open_refused,
            ChannelData: self._with_handler(lambda h, e: h.channel_data(e.data, e.extended)),
            ChannelWindowOpened: self._with_handler(lambda h, e: h.pump_data()),
            ChannelEofReceived: self._with_handler(lambda h, e: h.channel_eof()),
            ChannelClosed: self._on_channel_closed,
            ChannelRequestReceived: self._on_channel_request,
            ChannelRequestReplied: self._with_handler(lambda h, e: h.channel_request_replied(e.success)),
            GlobalRequestReceived: self._on_global_request,
            GlobalRequestReplied: self._on_global_reply,
            Disconnected: self._on_disconnected,
            KexCompleted: self._on_kex_completed,
        }

    def _with_handler(self, call: Callable[[ChannelHandler, Any], None]) -> Route:
        """A route to the channel's handler; events for a channel without
        one (a peer's open we refused, say) have nobody to tell."""

        def route(event: Any) -> None:
            handler = self.bridges.get(event.channel_id)
            if handler is not None:
                call(handler, event)

        return route

    def _on_open_requested(self, event: ChannelOpenRequested) -> None:
        handler = self.open_handlers.get(event.kind)
        if handler is None:
            self.refuse_open(event)
        else:
            handler(event)

    def refuse_open(self, event: ChannelOpenRequested) -> None:
        """Refuse a peer's open that no handler takes (RFC 4254 §5.1)."""
        reason, description = self.unhandled_open
        self.core.channels.reject_open(event.channel_id, reason, description)

    def _on_open_refused(self, event: ChannelOpenRefused) -> None:
        handler = self.bridges.pop(event.channel_id, None)
        if handler is not None:
            self.open_refused(event)
            handler.channel_refused(event.reason, event.description)

    def _on_channel_closed(self, event: ChannelClosed) -> None:
        handler = self.bridges.pop(event.channel_id, None)
        if handler is not None:
            handler.channel_closed()

    def _on_channel_request(self, event: ChannelRequestReceived) -> None:
        # RFC 4254 §5.4: a request nobody handles fails.
        handler = self.bridges.get(event.channel_id)
        handled = handler is not None and handler.channel_request(event)
        if not handled and event.want_reply:
            self.core.channels.reply_request(event.channel_id, False)

    def open_refused(self, event: ChannelOpenRefused) -> None:
        """A channel we opened was refused; subclasses report it."""

    # the connection's life -------------------------------------------------

    def _on_disconnected(self, event: Disconnected) -> None:
        self.disconnect = event
        self._close_bridges()
        while self._replies:
            reply = self._replies.popleft()
            if not reply.done():
                reply.set_exception(ConnectionClosed(f"Connection closed: {event.description}"))
        self.disconnected(event)

    def disconnected(self, event: Disconnected) -> None:
        """The connection ended (the last event); subclasses react."""

    def _on_kex_completed(self, event: KexCompleted) -> None:
        self._resume_bridges()  # sends were held during the exchange
        self.kex_completed(event)

    def kex_completed(self, event: KexCompleted) -> None:
        """A key exchange finished; subclasses react."""

    def can_send(self) -> bool:
        """False while a key exchange holds sends back, or the SSH socket's
        write buffer is full: bridges then stop reading their sockets."""
        return not self._ssh_write_paused and not self.core.transport.send_blocked

    # A peer that does not read (the CVE-2025-26466 class). While the SSH
    # socket is write-paused, what the core sends stays in the core, where
    # MAX_UNSENT_BYTES bounds it: past that the core holds input back, and
    # then the socket is not read either, until the peer reads again. Reading
    # stops only then, not at every write pause: two peers sending bulk data
    # both ways are both write-paused at times, and neither may stop reading.

    def pause_writing(self) -> None:
        self._ssh_write_paused = True

    def resume_writing(self) -> None:
        self._ssh_write_paused = False
        self._resume_bridges()
        self.flush()

    def _hold_reading(self, transport: asyncio.Transport) -> None:
        """The core holds input: stop reading, and go on once its output is
        taken (now, unless the socket is write-paused)."""
        if not self._reading_held:
            self._reading_held = True
            transport.pause_reading()
        if not self._ssh_write_paused and not self._continue_scheduled:
            self._continue_scheduled = True
            asyncio.get_running_loop().call_soon(self._continue_input)

    def _continue_input(self) -> None:
        self._continue_scheduled = False
        self.core.receive_data(b"")
        self.process()

    def _resume_bridges(self) -> None:
        for bridge in list(self.bridges.values()):
            bridge.pump_data()

    def _close_bridges(self) -> None:
        for bridge in list(self.bridges.values()):
            bridge.channel_closed()
        self.bridges.clear()

    def flush_soon(self) -> None:
        """:meth:`flush` once this turn of the event loop is over. For what
        arrives in bursts, a channel per new connection: a listener's
        accepts, or connects that complete together, then leave in one
        send() rather than one each, and the peer wakes once (sshd walks
        every channel at each wake-up: 1000 forwarded opens cost it 2.3 s)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        core = self.core
        if not self._ssh_write_paused or core.closed:
            data = core.data_to_send()
            if data:
                transport.write(data)
        if core.closed:
            # A peer that does not read would keep the socket, and what waits
            # for it, for ever: a write-paused connection is dropped.
            if self._ssh_write_paused:
                transport.abort()
            else:
                transport.close()
        elif core.input_held:
            self._hold_reading(transport)
        elif self._reading_held:
            self._reading_held = False
            transport.resume_reading()

    def close(self, description: str = "disconnected by user") -> None:
        self.core.close(description)
        self.process()

    def detach(self) -> None:
        """Forget the connection without a word to the peer: another process
        holds the socket and goes on with it (hashiked's PrivilegeSeparation),
        so closing our descriptor sends nothing, not even a FIN."""
        self._stop_tasks()
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.set_protocol(asyncio.Protocol())  # no connection_lost for us
            transport.abort()
        if not self.closed.done():
            self.closed.set_result(None)

    def drop(self, description: str) -> None:
        """End a connection whose peer is gone (keepalives unanswered): the
        DISCONNECT is offered, but nothing waits for a peer that does not
        read to take it."""
        self.close(description)
        if self.transport is not None:
            self.transport.abort()

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self.core.handle_timer(loop.time())
        self.flush()
        self._timer = loop.call_later(TIMER_INTERVAL, self._tick)

    @staticmethod
    def ignore(event: Event) -> None:
        """The route of an event this side has nothing to do with."""
