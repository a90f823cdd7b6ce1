"""The client side of a session channel (RFC 4254 §6): a remote command or
shell as a process with streams.

Theory of operation. :func:`start_process` opens a ``session`` channel,
registers a :class:`SessionHandler` with the pump, and once the open is
confirmed sends, back to back, ``pty-req`` (if a terminal was asked for),
``env`` (no reply wanted, as ssh sends them) and ``exec`` or ``shell``. The
replies come in request order (§5.4); the handler answers them from a FIFO of
futures. A refused ``exec``/``shell`` closes the channel and raises
:class:`SessionRequestFailed`; a refused ``pty-req`` is reported in
``Process.pty`` and the session goes on without a terminal, as with ssh.

Flow control, end to end (§5.2):

- stdout and stderr are :class:`ChannelReader` s. Received data waits in the
  reader and its window credit is given back (``acknowledge``) only when the
  application reads it, so a reader that stops reading stops the remote
  writer once the window is spent; memory is bounded by the window we grant.
  The two streams share the channel's one window: read both (``run()`` does).
- stdin is a :class:`ChannelWriter`. ``write()`` queues; the queue goes out as
  far as the peer's window and the SSH socket allow; ``drain()`` waits while
  more than :data:`DRAIN_LIMIT` bytes are queued.

The remote end reports how the process ended with ``exit-status`` or
``exit-signal`` (§6.10), then EOF and CLOSE; :meth:`Process.wait` returns
once CLOSE went both ways.
"""

from __future__ import annotations

import asyncio
import signal as _signal
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hashike.proto.errors import ChannelOpenFailed, ConnectionClosed, DecodeError, SSHError
from hashike.proto.events import ChannelRequestReceived
from hashike.proto.session import (
    ExitSignal,
    PtyRequest,
    decode_exit_signal,
    decode_exit_status,
    encode_env,
    encode_exec,
    encode_pty_req,
    encode_signal,
    encode_window_change,
)
from hashike.proto.wire import encode_uint32

if TYPE_CHECKING:
    from hashike.proto.channels import Channels

    from .pump import CorePump

__all__ = [
    "DRAIN_LIMIT",
    "ChannelReader",
    "ChannelWriter",
    "Process",
    "RunResult",
    "SessionHandler",
    "SessionRequestFailed",
    "run",
    "start_process",
]

# stdin bytes queued beyond what the window took before drain() waits.
DRAIN_LIMIT = 64 * 1024
# The extended data type of stderr (RFC 4254 §5.2: SSH_EXTENDED_DATA_STDERR).
EXTENDED_STDERR = 1
# What a process that ended without exit-status or exit-signal returns (ssh exits 255).
NO_STATUS = 255


class SessionRequestFailed(SSHError):
    """The server refused ``exec`` or ``shell`` (RFC 4254 §5.4 CHANNEL_FAILURE).
    ``request`` is the request's name; the message is ssh's."""

    def __init__(self, message: str, request: str) -> None:
        super().__init__(message)
        self.request = request


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """How a remote command ended (``exit_status`` or ``exit_signal``, either
    may be None if the server sent neither) and everything it wrote."""

    exit_status: int | None
    exit_signal: str | None
    stdout: bytes
    stderr: bytes


# ------------------------------------------------------------------ streams


class ChannelReader:
    """One direction of channel output, read like an ``asyncio.StreamReader``.

    Consumed bytes are reported to ``consumed(n)``, which gives the peer that
    much window back; nothing is granted for bytes still waiting here."""

    def __init__(self, consumed: Callable[[int], None]) -> None:
        self._consumed = consumed
        self._chunks: deque[bytes] = deque()
        self._pos = 0  # how much of _chunks[0] was read already
        self._size = 0  # unread bytes
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None

    # --- fed by the session handler

    def feed_data(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)
            self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        if self._waiter is not None:
            raise RuntimeError("another coroutine is already waiting on this stream")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # --- the application's side

    def __len__(self) -> int:
        """Bytes buffered and not yet read."""
        return self._size

    def at_eof(self) -> bool:
        return self._eof and not self._size

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (everything until EOF if ``n`` < 0); b"" at EOF."""
        if n == 0:
            return b""
        if n < 0:
            # Take as it comes, so the window keeps moving (a caller asking
            # for everything accepts holding everything).
            parts = []
            while True:
                while self._size:  # giving credit back may bring more at once
                    parts.append(self._take(self._size))
                if self._eof:
                    return b"".join(parts)
                await self._wait()
        while not self._size and not self._eof:
            await self._wait()
        return self._take(min(n, self._size))

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; IncompleteReadError if EOF comes first."""
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        while self._size < n and not self._eof:
            await self._wait()
        if self._size < n:
            raise asyncio.IncompleteReadError(self._take(self._size), n)
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Through the next ``separator``; IncompleteReadError at EOF without one."""
        if not separator:
            raise ValueError("separator should be at least one-byte string")
        searched = 0
        while True:
            if self._size:
                self._coalesce()
                found = self._chunks[0].find(separator, self._pos + searched)
                if found >= 0:
                    return self._take(found + len(separator) - self._pos)
                searched = max(0, self._size - len(separator) + 1)
            if self._eof:
                raise asyncio.IncompleteReadError(self._take(self._size), None)
            await self._wait()

    async def readline(self) -> bytes:
        """A line with its b"\\n", or what is left before EOF."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    def __aiter__(self) -> ChannelReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    def _coalesce(self) -> None:
        """One chunk for a search; only for readuntil, never on read()."""
        if len(self._chunks) > 1 or self._pos:
            joined = b"".join([self._chunks[0][self._pos :], *list(self._chunks)[1:]])
            self._chunks.clear()
            self._chunks.append(joined)
            self._pos = 0

    def _take(self, n: int) -> bytes:
        """Remove ``n`` buffered bytes; a whole chunk goes out uncopied."""
        if not n:
            return b""
        parts: list[bytes] = []
        left = n
        while left:
            chunk = self._chunks[0]
            avail = len(chunk) - self._pos
            if left >= avail:
                parts.append(chunk if self._pos == 0 else chunk[self._pos :])
                self._chunks.popleft()
                self._pos = 0
                left -= avail
            else:
                parts.append(chunk[self._pos : self._pos + left])
                self._pos += left
                left = 0
        self._size -= n
        self._consumed(n)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class ChannelWriter:
    """The process's stdin, written like an ``asyncio.StreamWriter``."""

    def __init__(self, handler: SessionHandler) -> None:
        self._handler = handler
        self._queue: deque[memoryview] = deque()
        self._queued = 0
        self._eof = False  # write_eof() was called
        self._eof_sent = False
        self._drain_waiter: asyncio.Future[None] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; it goes out as the peer's window allows. After the
        channel closed, data is dropped and ``drain()`` raises."""
        if self._eof:
            raise RuntimeError("write() after write_eof()")
        if not data or self._handler.closed:
            return
        # bytes are kept as they are; a mutable buffer is copied, as asyncio does.
        view = memoryview(data if isinstance(data, bytes) else bytes(data))
        self._queue.append(view)
        self._queued += len(view)
        self._handler.pump_data()
        self._handler.flush()

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    def write_eof(self) -> None:
        """CHANNEL_EOF once everything queued has gone (RFC 4254 §5.3)."""
        if not self._eof:
            self._eof = True
            self._handler.pump_data()
            self._handler.flush()

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self._eof or self._handler.closed

    def close(self) -> None:
        """Like a pipe's close: EOF for the remote process."""
        self.write_eof()

    async def wait_closed(self) -> None:
        await self.drain()

    def get_write_buffer_size(self) -> int:
        return self._queued

    async def drain(self) -> None:
        """Wait until at most DRAIN_LIMIT bytes are queued. Raises
        ConnectionResetError once the channel is closed (as asyncio does for
        a closed transport): what was written may not have arrived."""
        while True:
            if self._handler.closed:
                raise ConnectionResetError("the session channel is closed")
            if self._queued <= DRAIN_LIMIT:
                return
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    # --- driven by the handler

    def send(self, channels: Channels, channel_id: int) -> None:
        """Send from the queue as far as the window allows; then EOF if asked."""
        queue = self._queue
        while queue:
            view = queue[0]
            n = channels.send_data(channel_id, view)
            self._queued -= n
            if n < len(view):
                queue[0] = view[n:]
                break
            queue.popleft()
        if not queue and self._eof and not self._eof_sent:
            self._eof_sent = True
            channels.send_eof(channel_id)
        if self._queued <= DRAIN_LIMIT:
            self._wake()

    def abandon(self) -> None:
        """The channel is gone: wake drain() so it can raise."""
        self._wake()

    def _wake(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


# ------------------------------------------------------------------ handler


class SessionHandler:
    """The :class:`~hashike.aio.handler.ChannelHandler` of one client session
    channel: events from the pump in, streams and futures out."""

    def __init__(self, pump: CorePump[Any]) -> None:
        self.pump = pump
        self.channel_id: int | None = None
        self.closed = False
        self.connection_lost = False  # closed because the connection went, not by CLOSE
        self.exit_status: int | None = None
        self.exit_signal: ExitSignal | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self._replies: deque[asyncio.Future[bool]] = deque()
        self.stdout = ChannelReader(self._acknowledge)
        self.stderr = ChannelReader(self._acknowledge)
        self.stdin = ChannelWriter(self)

    @property
    def channels(self) -> Channels:
        channels: Channels = self.pump.core.channels
        return channels

    def open(self) -> int:
        """Send CHANNEL_OPEN "session" (RFC 4254 §6.1) and register."""
        channel_id = self.channels.open("session")
        self.channel_id = channel_id
        self.pump.bridges[channel_id] = self
        self.flush()
        return channel_id

    def flush(self) -> None:
        self.pump.flush()

    def request(self, name: str, extra: bytes, *, want_reply: bool) -> asyncio.Future[bool] | None:
        """Send a channel request; with want_reply, a future for the answer."""
        if not self._usable():
            raise ConnectionResetError("the session channel is closed")
        assert self.channel_id is not None
        future: asyncio.Future[bool] | None = None
        if want_reply:
            future = asyncio.get_running_loop().create_future()
            self._replies.append(future)
        self.channels.send_request(self.channel_id, name, want_reply, extra)
        self.flush()
        return future

    def close(self) -> None:
        """Send CLOSE (RFC 4254 §5.3) unless the channel is already gone."""
        if self._usable():
            assert self.channel_id is not None
            self.channels.close(self.channel_id)
            self.flush()

    def _usable(self) -> bool:
        """The channel is ours to send on: not closed, its id not reused, and
        the connection not ended (it may have, earlier in this batch of events)."""
        return (
            not self.closed
            and self.channel_id is not None
            and self.channel_id in self.channels
            and not self.pump.core.closed
        )

    def _acknowledge(self, n: int) -> None:
        # Only while the id is still ours: after ChannelClosed it may be reused.
        if self._usable():
            assert self.channel_id is not None
            self.channels.acknowledge(self.channel_id, n)
            self.flush()

    # --- ChannelHandler

    def channel_open(self) -> None:
        if not self.opened.done():
            self.opened.set_result(None)
        self.pump_data()

    def channel_refused(self, reason: int, description: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ChannelOpenFailed(f"open failed: {description}", reason))
        self._finish()

    def channel_data(self, data: bytes | memoryview, extended: int | None) -> None:
        if extended is None:
            self.stdout.feed_data(bytes(data))
        elif extended == EXTENDED_STDERR:
            self.stderr.feed_data(bytes(data))
        else:
            self._acknowledge(len(data))  # no stream for other types (§5.2): drop, credit back

    def channel_eof(self) -> None:
        self.stdout.feed_eof()
        self.stderr.feed_eof()

    def channel_closed(self) -> None:
        # The pump calls this for a CLOSE both ways, and for every handler
        # when the connection ends; the two differ in pump.disconnect.
        self.connection_lost = self.pump.disconnect is not None or self.pump.core.closed
        self._finish()

    def channel_request(self, event: ChannelRequestReceived) -> bool:
        """exit-status and exit-signal (RFC 4254 §6.10); anything else fails."""
        try:
            if event.name == "exit-status":
                self.exit_status = decode_exit_status(event.extra)
            elif event.name == "exit-signal":
                self.exit_signal = decode_exit_signal(event.extra)
            else:
                return False
        except DecodeError:
            return False
        if event.want_reply and self._usable():
            assert self.channel_id is not None
            self.channels.reply_request(self.channel_id, True)
        return True

    def channel_request_replied(self, success: bool) -> None:
        if self._replies:
            future = self._replies.popleft()
            if not future.done():
                future.set_result(success)

    def pump_data(self) -> None:
        if not self._usable() or not self.opened.done():
            return
        if self.pump.can_send():
            assert self.channel_id is not None
            self.stdin.send(self.channels, self.channel_id)

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pump.bridges.pop(self.channel_id if self.channel_id is not None else -1, None)
        self.stdout.feed_eof()
        self.stderr.feed_eof()
        self.stdin.abandon()
        if not self.opened.done():
            error = ConnectionClosed("connection closed") if self.connection_lost else None
            self.opened.set_exception(error or ConnectionResetError("the session channel closed"))
        while self._replies:  # unanswered: refused, as far as anyone waiting is concerned
            future = self._replies.popleft()
            if not future.done():
                future.set_result(False)
        if not self.finished.done():
            self.finished.set_result(None)


# ------------------------------------------------------------------ process


def _signal_number(name: str) -> int | None:
    try:
        return int(_signal.Signals[f"SIG{name}"])
    except KeyError:
        return None


class Process:
    """A remote command or shell. ``stdin``/``stdout``/``stderr`` are streams;
    ``pty`` tells whether the server granted the terminal that was asked for."""

    def __init__(self, handler: SessionHandler, command: str | None, pty: bool) -> None:
        self._handler = handler
        self.command = command
        self.pty = pty
        self.stdin = handler.stdin
        self.stdout = handler.stdout
        self.stderr = handler.stderr

    @property
    def channel_id(self) -> int:
        assert self._handler.channel_id is not None
        return self._handler.channel_id

    @property
    def exit_status(self) -> int | None:
        return self._handler.exit_status

    @property
    def exit_signal(self) -> str | None:
        """The name of the signal that killed the process, without "SIG"."""
        sig = self._handler.exit_signal
        return None if sig is None else sig.signal

    @property
    def exit_signal_info(self) -> ExitSignal | None:
        """The whole exit-signal: name, core dumped, message."""
        return self._handler.exit_signal

    @property
    def returncode(self) -> int | None:
        """None until the channel closed; then the exit status, or minus the
        signal's number (as ``asyncio.subprocess.Process``), or 255 when the
        server sent neither (ssh's exit status then) or the signal is unknown."""
        if not self._handler.closed:
            return None
        if self.exit_status is not None:
            return self.exit_status
        if self.exit_signal is not None:
            number = _signal_number(self.exit_signal)
            return -number if number is not None else NO_STATUS
        return NO_STATUS

    @property
    def closed(self) -> bool:
        return self._handler.closed

    async def wait(self) -> int:
        """Wait until the channel is closed both ways; return :attr:`returncode`.
        Raises ConnectionClosed if the connection was lost before the server
        said how the process ended."""
        await asyncio.shield(self._handler.finished)
        if self._handler.connection_lost and self.exit_status is None and self.exit_signal is None:
            raise ConnectionClosed("connection closed before the remote process ended")
        code = self.returncode
        assert code is not None
        return code

    def change_terminal_size(self, cols: int, rows: int, width_px: int = 0, height_px: int = 0) -> None:
        """RFC 4254 §6.7 window-change (no reply)."""
        self._handler.request(
            "window-change", encode_window_change(cols, rows, width_px, height_px), want_reply=False
        )

    def send_signal(self, name: str | int) -> None:
        """RFC 4254 §6.9: "TERM", "SIGTERM" or signal.SIGTERM. Many servers
        (OpenSSH before 7.9 among them) ignore it."""
        if isinstance(name, int):
            name = _signal.Signals(name).name
        name = name.removeprefix("SIG")
        self._handler.request("signal", encode_signal(name), want_reply=False)

    def terminate(self) -> None:
        self.send_signal("TERM")

    def kill(self) -> None:
        self.send_signal("KILL")

    def send_break(self, milliseconds: int = 1000) -> None:
        """RFC 4335: a BREAK on the remote terminal's serial line (or SysRq)."""
        self._handler.request("break", encode_uint32(milliseconds), want_reply=False)

    def close(self) -> None:
        """Close the channel at once (RFC 4254 §5.3): output not yet arrived is lost."""
        self._handler.close()


async def start_process(
    pump: CorePump[Any],
    command: str | None,
    *,
    term: str | None = None,
    size: tuple[int, int] | None = None,
    pixels: tuple[int, int] = (0, 0),
    modes: Mapping[int, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> Process:
    """Open a session and start ``command`` (a shell if None) in it.

    With ``term`` (or ``size``/``modes``) a pty is requested first: terminal
    type, (columns, rows), pixels (width, height) and RFC 4254 §8 modes.
    Raises ChannelOpenFailed if the server refuses the channel,
    SessionRequestFailed if it refuses the command, ConnectionClosed if the
    connection is gone."""
    if pump.core.closed:
        raise ConnectionClosed("connection closed")
    handler = SessionHandler(pump)
    channel_id = handler.open()
    await asyncio.shield(handler.opened)
    pty_reply: asyncio.Future[bool] | None = None
    try:
        if term is not None or size is not None or modes is not None:
            cols, rows = size or (80, 24)
            req = PtyRequest(
                term=term or "",
                columns=cols,
                rows=rows,
                width_px=pixels[0],
                height_px=pixels[1],
                modes=dict(modes or {}),
            )
            pty_reply = handler.request("pty-req", encode_pty_req(req), want_reply=True)
        for name, value in (env or {}).items():
            handler.request("env", encode_env(name, value), want_reply=False)
        if command is None:
            kind, reply = "shell", handler.request("shell", b"", want_reply=True)
        else:
            kind, reply = "exec", handler.request("exec", encode_exec(command), want_reply=True)
        assert reply is not None
        pty = await pty_reply if pty_reply is not None else False
        ok = await reply
    except ConnectionResetError:  # the channel closed before the requests went
        ok, kind = False, "shell" if command is None else "exec"
        pty = False
    if handler.connection_lost:
        raise ConnectionClosed("connection closed")
    if not ok:
        handler.close()
        raise SessionRequestFailed(f"{kind} request failed on channel {channel_id}", kind)
    return Process(handler, command, pty)


async def run(pump: CorePump[Any], command: str, *, input: bytes | None = None) -> RunResult:
    """Run ``command`` to completion: ``input`` (or nothing) on its stdin,
    then EOF; stdout and stderr read to the end, concurrently."""
    process = await start_process(pump, command)

    async def feed() -> None:
        if input:
            process.stdin.write(input)
            try:
                await process.stdin.drain()
            except ConnectionResetError:
                return  # the command ended without reading everything: like a pipe
        process.stdin.write_eof()

    _, out, err = await asyncio.gather(feed(), process.stdout.read(), process.stderr.read())
    await process.wait()
    return RunResult(exit_status=process.exit_status, exit_signal=process.exit_signal, stdout=out, stderr=err)
