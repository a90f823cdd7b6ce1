"""Transports that are not sockets, for ``connect(tunnel=...)`` (``-J``) and
``connect(proxy_command=...)`` (ProxyCommand).

Theory of operation. :class:`ChannelTransport` is the asyncio Transport of an
inner connection and, at the same time, the runtime handler of one
``direct-tcpip`` channel (RFC 4254 §7.2) of an outer connection: the inner
pump's writes go out as channel data, as far as the outer peer's window
allows, and the channel's data is the inner pump's input. Flow control runs
end to end: what does not fit the window waits here and, past
``WRITE_HIGH_WATER``, the inner pump is told to ``pause_writing``; window
credit goes back to the outer peer only for data the inner pump has taken,
and none while it has paused reading. Closing the inner connection sends EOF
and CLOSE on the channel once what waits is sent; the outer connection's end
ends the inner one with a ConnectionClosed that says so.

:class:`ProxyCommandTransport` runs a command through the user's shell, as
ssh runs ProxyCommand, and is the transport over its stdin and stdout pipes;
its stderr is ours. When the connection ends the child gets SIGHUP (ssh's
signal for it), then SIGKILL if it lingers, and is reaped before the
connection counts as closed.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from hashike.proto.errors import ChannelOpenFailed, ConnectionClosed
from hashike.proto.events import ChannelRequestReceived

from .pump import CorePump

__all__ = ["ChannelTransport", "ProxyCommandTransport", "open_tunnel", "run_proxy_command"]

WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = WRITE_HIGH_WATER // 4
# How long a ProxyCommand may take to go after SIGHUP before it is killed.
PROXY_EXIT_GRACE = 2.0

# The inner protocol is a connection pump; it takes data_received.
P = TypeVar("P", bound=CorePump[Any])


class ChannelTransport(asyncio.Transport):
    """An inner connection's transport: one channel of an outer connection."""

    def __init__(self, pump: CorePump[Any], host: str, port: int) -> None:
        super().__init__({"peername": (host, port), "sockname": None, "socket": None})
        self.pump = pump
        self.channel_id: int | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._protocol: CorePump[Any] | None = None
        self._out: deque[memoryview] = deque()  # written, not yet within the window
        self._out_size = 0
        self._write_paused = False  # we told the protocol to pause
        self._in: deque[bytes] = deque()  # received while reading is paused
        self._reading = True
        self._eof = False  # the channel's EOF came
        self._eof_delivered = False
        self._open = False  # the channel is confirmed
        self._closing = False  # close() was called: EOF and CLOSE once sent
        self._gone = False  # the channel is closed
        self._lost = False  # connection_lost was called
        self._ended: tuple[Exception | None] | None = None  # the channel closed: how

    # --- the channel, from the outer pump (aio.handler.ChannelHandler) ------------

    def bind(self, channel_id: int) -> None:
        self.channel_id = channel_id
        self.pump.bridges[channel_id] = self

    def channel_open(self) -> None:
        self._open = True
        if not self.opened.done():
            self.opened.set_result(None)
        self.pump_data()  # closes it at once if given up meanwhile

    def channel_refused(self, reason: int, description: str) -> None:
        self._gone = True
        if not self.opened.done():
            self.opened.set_exception(ChannelOpenFailed(f"open failed: {description}", reason))

    def channel_data(self, data: bytes | memoryview, extended: int | None) -> None:
        if extended is not None or self._lost:
            self._acknowledge(len(data))  # RFC 4254 §5.2: no stderr on a tunnel
            return
        if self._reading and not self._in and self._protocol is not None:
            self._protocol.data_received(bytes(data))
            self._acknowledge(len(data))
        else:
            # Bounded by the window we granted. (The server speaks first: its
            # version line may come before the protocol is started.)
            self._in.append(bytes(data))

    def channel_eof(self) -> None:
        self._eof = True
        self._deliver()  # after whatever is held back

    def channel_closed(self) -> None:
        self._gone = True
        self.pump.bridges.pop(self.channel_id or -1, None)
        if not self.opened.done():
            self.opened.set_exception(ConnectionClosed(self._outer_end()))
        # The outer connection's end is the inner one's: say so. (A channel
        # the far side closed is an inner connection closed by its peer.)
        outer_lost = self.pump.core.closed and not self._closing
        self._ended = (ConnectionClosed(self._outer_end()) if outer_lost else None,)
        self._connection_lost(self._ended[0])

    def channel_request(self, event: ChannelRequestReceived) -> bool:
        return False  # none apply to a tunnel

    def channel_request_replied(self, success: bool) -> None:
        pass  # a tunnel makes no requests

    def pump_data(self) -> None:
        """The window opened or the outer connection can send again."""
        if self.channel_id is None or self._gone or not self._open:
            return
        channels = self.pump.core.channels
        while self._out and self.pump.can_send():
            head = self._out[0]
            n = channels.send_data(self.channel_id, head)
            self._out_size -= n
            if n < len(head):
                self._out[0] = head[n:]
                break
            self._out.popleft()
        if self._write_paused and self._out_size <= WRITE_LOW_WATER and self._protocol is not None:
            self._write_paused = False
            self._protocol.resume_writing()
        if self._closing and not self._out:
            self._gone = True
            channels.send_eof(self.channel_id)
            channels.close(self.channel_id)
        self.pump.flush()

    def _outer_end(self) -> str:
        event = self.pump.disconnect
        how = f": {event.description}" if event is not None else ""
        host, port = self.get_extra_info("peername")
        return f"Connection to {host} port {port} lost with its jump host{how}"

    def _acknowledge(self, n: int) -> None:
        if self.channel_id is not None and not self._gone:
            self.pump.core.channels.acknowledge(self.channel_id, n)

    def _deliver(self) -> None:
        """Hand what was held back to the protocol, while it reads."""
        total = 0
        while self._in and self._reading and self._protocol is not None and not self._lost:
            data = self._in.popleft()
            self._protocol.data_received(data)
            total += len(data)
        if total:
            self._acknowledge(total)
            self.pump.flush()
        protocol = self._protocol
        if self._eof and not self._in and not self._eof_delivered and protocol is not None and not self._lost:
            self._eof_delivered = True
            if not protocol.eof_received():
                self.close()

    def _connection_lost(self, exc: Exception | None) -> None:
        if not self._lost and self._protocol is not None:
            self._lost = True
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, exc)

    # --- asyncio.Transport, for the inner protocol ----------------------------------

    def start(self, protocol: CorePump[Any]) -> None:
        self._protocol = protocol
        protocol.connection_made(self)
        self._deliver()
        if self._ended is not None:
            # The channel closed between its open and now (open_tunnel's
            # await): the protocol still learns that its connection is gone.
            self._connection_lost(self._ended[0])

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, CorePump)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._gone or not data:
            return
        # Kept until the outer window takes it: a copy unless immutable (the
        # core's output is a view of a buffer it reuses once we let go).
        view = memoryview(data if isinstance(data, bytes) else bytes(data))
        self._out.append(view)
        self._out_size += len(view)
        self.pump_data()
        if not self._write_paused and self._out_size > WRITE_HIGH_WATER and self._protocol is not None:
            self._write_paused = True
            self._protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self._out_size

    def is_closing(self) -> bool:
        return self._closing or self._gone

    def close(self) -> None:
        if self._closing or self._gone:
            self._connection_lost(None)
            return
        self._closing = True
        self.pump_data()  # EOF and CLOSE once what waits is sent
        self._connection_lost(None)

    def abort(self) -> None:
        self._out.clear()
        self._out_size = 0
        self.close()

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            asyncio.get_running_loop().call_soon(self._deliver)

    def is_reading(self) -> bool:
        return self._reading

    def can_write_eof(self) -> bool:
        return False


async def open_tunnel(pump: CorePump[Any], host: str, port: int, factory: Callable[[], P]) -> P:
    """A ``direct-tcpip`` channel of ``pump`` to ``host:port`` as the transport
    of a new ``factory()`` protocol. Raises ChannelOpenFailed when the far side
    refuses, ConnectionClosed when the outer connection is gone."""
    if pump.core.closed:
        raise ConnectionClosed("the jump host connection is closed")
    transport = ChannelTransport(pump, host, port)
    # RFC 4254 §7.2: there is no originator to name; ssh -W names none either.
    transport.bind(pump.core.channels.open_direct_tcpip(host, port, "127.0.0.1", 0))
    pump.flush()
    try:
        await transport.opened
    except asyncio.CancelledError:
        transport.abort()
        raise
    protocol = factory()
    transport.start(protocol)
    return protocol


class _ProxyProtocol(asyncio.SubprocessProtocol):
    """The subprocess side: stdout is the connection's input."""

    def __init__(self, inner: CorePump[Any], transport: ProxyCommandTransport) -> None:
        self.inner = inner
        self.transport = transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Before any of the child's output is delivered (asyncio holds it).
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport.attach(transport)
        self.inner.connection_made(self.transport)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.inner.data_received(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        # asyncio calls this once the child is reaped and every pipe is closed.
        self.transport.release()
        self.inner.connection_lost(exc)


class ProxyCommandTransport(asyncio.Transport):
    """A connection's transport over a ProxyCommand's stdin and stdout."""

    def __init__(self, command: str) -> None:
        super().__init__({"peername": None, "sockname": None, "socket": None, "command": command})
        self._process: asyncio.SubprocessTransport | None = None
        self._closing = False

    def attach(self, process: asyncio.SubprocessTransport) -> None:
        self._process = process

    def release(self) -> None:
        """The child is reaped: let asyncio's transport go."""
        self._closing = True
        if self._process is not None:
            self._process.close()

    def _pipe(self, fd: int) -> Any:
        assert self._process is not None
        return self._process.get_pipe_transport(fd)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        stdin = self._pipe(0)
        if stdin is not None and not stdin.is_closing():
            stdin.write(data)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what waits, close the child's stdin, and hang up on it."""
        if self._closing or self._process is None:
            return
        self._closing = True
        stdin = self._pipe(0)
        if stdin is not None:
            stdin.close()
        process = self._process
        if process.get_returncode() is None:
            process.send_signal(signal.SIGHUP)
            # close() kills a child that is still running.
            asyncio.get_running_loop().call_later(PROXY_EXIT_GRACE, process.close)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        stdout = self._pipe(1)
        if stdout is not None:
            stdout.pause_reading()

    def resume_reading(self) -> None:
        stdout = self._pipe(1)
        if stdout is not None:
            stdout.resume_reading()

    def get_write_buffer_size(self) -> int:
        stdin = self._pipe(0)
        return 0 if stdin is None else int(stdin.get_write_buffer_size())


async def run_proxy_command(command: str, factory: Callable[[], P]) -> P:
    """Start ``command`` as ssh starts ProxyCommand (``exec`` through the
    user's shell) and make it the transport of a new ``factory()`` protocol.
    Raises OSError when the shell cannot be started."""
    loop = asyncio.get_running_loop()
    shell = os.environ.get("SHELL") or "/bin/sh"
    protocol = factory()
    transport = ProxyCommandTransport(command)
    await loop.subprocess_exec(
        lambda: _ProxyProtocol(protocol, transport),
        shell,
        "-c",
        f"exec {command}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
    )
    return protocol
