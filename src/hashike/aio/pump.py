"""The asyncio side of one connection: moves bytes between a socket and a core.

It is deliberately thin. ``data_received`` feeds the core, turns the events it
emits into calls on ``handle_event`` and writes everything the core wants to
send in one ``transport.write`` (profiled, one write per packet is the
largest cost of a Python SSH implementation). No protocol decision is made
here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Generic, TypeVar, get_args

from hashike.proto.channels import (
    ChannelClosed,
    ChannelData,
    ChannelEofReceived,
    ChannelEvent,
    ChannelOpenConfirmed,
    ChannelOpenRefused,
    ChannelOpenRequested,
    ChannelRequestReceived,
    ChannelRequestReplied,
    ChannelWindowOpened,
    GlobalRequestReceived,
)
from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.events import Disconnected, Event, KexCompleted

from .handler import ChannelHandler

__all__ = ["CorePump", "TIMER_INTERVAL"]

log = logging.getLogger("hashike")

# How often the core is told the time (RekeyLimit's time part).
TIMER_INTERVAL = 30.0

CoreT = TypeVar("CoreT", ClientConnection, ServerConnection)
_CHANNEL_EVENTS = get_args(ChannelEvent)


class CorePump(asyncio.Protocol, Generic[CoreT]):
    """asyncio Protocol that drives one sans-IO connection core."""

    def __init__(self, core: CoreT) -> None:
        self.core: CoreT = core
        self.transport: asyncio.Transport | None = None
        self.peername: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None
        self.disconnect: Disconnected | None = None
        # Every channel with a runtime handler, by local channel id.
        self.bridges: dict[int, ChannelHandler] = {}
        self._ssh_write_paused = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._after_batch: list[Callable[[], None]] = []

    def call_after_batch(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the events of this batch of input are handled."""
        self._after_batch.append(fn)

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        """Run ``coro`` for this connection; cancelled when the connection goes."""
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
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self._tick()
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.core.receive_data(data)
        self.process()

    def eof_received(self) -> bool | None:
        self.core.receive_eof()
        self.process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if not self.core.closed:
            self.core.receive_eof()
            self._dispatch_events()
        if not self.closed.done():
            self.closed.set_result(None)

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
                if isinstance(event, Disconnected):
                    self.disconnect = event
                    self._close_bridges()
                elif isinstance(event, KexCompleted):
                    self._resume_bridges()  # sends were held during the exchange
                elif (
                    self.core.closed
                    and isinstance(event, _CHANNEL_EVENTS)
                    and not isinstance(event, ChannelOpenRequested)
                ):
                    # The peer's DISCONNECT came in the same batch: nothing can
                    # be answered any more, and the Disconnected event that
                    # follows closes every handler. (Opens still reach
                    # handle_event, which judges and logs them, unanswered.)
                    continue
                if not self._route(event):
                    self.handle_event(event)
        after, self._after_batch = self._after_batch, []
        for fn in after:
            fn()

    def _route(self, event: Event) -> bool:
        """Channel events go to the channel's handler (a socket bridge, a
        session); requests nobody handles fail, as RFC 4254 §4 and §5.4 ask."""
        if isinstance(event, GlobalRequestReceived):
            if event.want_reply:
                self.core.channels.reply_global_request(False)
            return True
        channel_id = getattr(event, "channel_id", None)
        handler = self.bridges.get(channel_id) if isinstance(channel_id, int) else None
        if isinstance(event, ChannelRequestReceived):
            handled = handler is not None and handler.channel_request(event)
            if not handled and event.want_reply and event.channel_id in self.core.channels:
                self.core.channels.reply_request(event.channel_id, False)
            return True
        if handler is None:
            return isinstance(event, ChannelWindowOpened)
        if isinstance(event, ChannelData):
            handler.channel_data(event.data, event.extended)
        elif isinstance(event, ChannelWindowOpened):
            handler.pump_data()
        elif isinstance(event, ChannelEofReceived):
            handler.channel_eof()
        elif isinstance(event, ChannelClosed):
            del self.bridges[event.channel_id]
            handler.channel_closed()
        elif isinstance(event, ChannelRequestReplied):
            handler.channel_request_replied(event.success)
        elif isinstance(event, ChannelOpenConfirmed):
            handler.channel_open()
        elif isinstance(event, ChannelOpenRefused):
            del self.bridges[event.channel_id]
            self.open_refused(event)
            handler.channel_refused(event.reason, event.description)
        else:
            return False
        return True

    def open_refused(self, event: ChannelOpenRefused) -> None:
        """A channel we opened was refused; subclasses report it."""

    def can_send(self) -> bool:
        """False while a key exchange holds sends back, or the SSH socket's
        write buffer is full: bridges then stop reading their sockets."""
        return not self._ssh_write_paused and not self.core.transport.send_blocked

    def pause_writing(self) -> None:
        self._ssh_write_paused = True

    def resume_writing(self) -> None:
        self._ssh_write_paused = False
        self._resume_bridges()
        self.flush()

    def _resume_bridges(self) -> None:
        for bridge in list(self.bridges.values()):
            bridge.pump_data()

    def _close_bridges(self) -> None:
        for bridge in list(self.bridges.values()):
            bridge.channel_closed()
        self.bridges.clear()

    def flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data = self.core.data_to_send()
        if data:
            transport.write(data)
        if self.core.closed:
            transport.close()

    def close(self, description: str = "disconnected by user") -> None:
        self.core.close(description)
        self.process()

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self.core.handle_timer(loop.time())
        self.flush()
        self._timer = loop.call_later(TIMER_INTERVAL, self._tick)

    def handle_event(self, event: Event) -> None:
        """Subclasses react to the core's events here."""
