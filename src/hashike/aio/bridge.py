"""A local socket joined to one SSH channel, with end-to-end flow control.

Theory of operation (RFC 4254 §5.2, §5.3). Bytes read from the socket go out
as channel data as far as the peer's window allows; the rest waits in one
memoryview and the socket stops being read until ``ChannelWindowOpened``.
Bytes arriving on the channel are written to the socket; window credit is
granted (``acknowledge``) only while asyncio's write buffer is below its high
mark, and held back from ``pause_writing`` to ``resume_writing``, so a slow
reader slows the sender instead of filling our memory.

Half-close: the socket's EOF becomes CHANNEL_EOF; the channel's EOF becomes
``write_eof()`` (shutdown(SHUT_WR)) once buffered data is flushed. The
channel is closed when both directions are done, or at once on an error.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from hashike.proto.errors import ChannelOpenFailed
from hashike.proto.events import ChannelRequestReceived
from hashike.proto.packet import exported

from .flow import Credit, Outflow

if TYPE_CHECKING:
    from hashike.proto.channels import Channels

    from .pump import CorePump
    from .stats import ForwardStats

__all__ = ["SocketBridge"]

log = logging.getLogger("hashike")

# How much we read from a socket at a time is asyncio's business; how much
# we let asyncio buffer towards a slow socket before holding credit back:
WRITE_HIGH_WATER = 1024 * 1024
# Pieces of a batch smaller than this on average are copied into one write.
COALESCE_BELOW = 64 * 1024


class SocketBridge(asyncio.BufferedProtocol):
    """asyncio Protocol for the local end of a forwarded connection.

    The socket is read straight into the packet being built
    (Channels.data_buffer) when the channel can take a large packet now: one
    read is one CHANNEL_DATA, sealed where it lies, with no ``bytes`` per read
    and no copy. Otherwise (before the open, a small window or small
    packets, a kex, a subclass's handshake) a read goes to
    :meth:`data_received`, which sends what the window allows and keeps the
    rest."""

    def __init__(self, pump: CorePump[Any], channel_id: int | None = None) -> None:
        self.pump = pump
        self.channel_id = channel_id
        self.transport: asyncio.Transport | None = None
        self.open = False  # the channel is confirmed
        self._out = Outflow()  # read from the socket, not yet sent
        self._local_eof = False  # the socket sent EOF
        self._eof_sent = False
        self._remote_eof = False
        self._credit = Credit()  # for what we write to the socket
        # Received this batch, written at its end: views of the core's arena,
        # valid while held (proto/packet.py), dropped once written.
        self._writes: list[bytes | memoryview] = []
        self._joined = bytearray()  # reused to make a batch's pieces one write
        self._fd: int | None = None  # the socket's, for writev while asyncio buffers nothing
        self._direct = False  # get_buffer gave a packet's room, not the scratch
        self._closed = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.stats: ForwardStats | None = None  # a listening forward's, told of our end
        # Resolved when the channel opens, failed with ChannelOpenFailed when
        # it is refused (for library callers that wait on the open).
        self.on_open: asyncio.Future[None] | None = None

    # --- the channel, from the pump ----------------------------------------

    @property
    def channels(self) -> Channels:
        channels: Channels = self.pump.core.channels
        return channels

    def bind(self, channel_id: int) -> None:
        self.channel_id = channel_id
        self.pump.bridges[channel_id] = self

    def channel_open(self) -> None:
        """The channel is confirmed: start moving data. Its data then comes
        straight to the socket's batch, without an event per packet."""
        self.open = True
        if self.channel_id is not None:
            self.channels.deliver(self.channel_id, self._write_later)
        if self.on_open is not None and not self.on_open.done():
            self.on_open.set_result(None)
        self.pump_data()

    def channel_refused(self, reason: int, description: str) -> None:
        if self.on_open is not None and not self.on_open.done():
            self.on_open.set_exception(ChannelOpenFailed(f"open failed: {description}", reason))
        self.channel_closed()

    def channel_data(self, data: bytes | memoryview, extended: int | None = None) -> None:
        if extended is not None:
            # RFC 4254 §5.2: a forwarded connection has no stderr: drop it, but
            # still give the window back. (On a channel or connection that
            # closed later in this batch, the core takes it as a no-op.)
            assert self.channel_id is not None
            self.channels.acknowledge(self.channel_id, len(data))
            return
        self._write_later(data)

    def _write_later(self, data: bytes | memoryview) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.channel_id is None:
            return
        # One write per batch of input rather than per CHANNEL_DATA: an
        # OpenSSH peer sends 32 KiB packets, and a syscall for each dominated.
        if not self._writes:
            self.pump.call_after_batch(self.flush_writes)
        self._writes.append(data)
        self.bytes_in += len(data)

    def flush_writes(self) -> None:
        """Write the batch, then give its window back: once per batch, and
        held (Credit) if the write filled the socket's buffer."""
        writes, self._writes = self._writes, []
        transport = self.transport
        if not writes or transport is None or transport.is_closing():
            return
        total = sum(map(len, writes))
        if total >= COALESCE_BELOW * len(writes):
            # Large pieces (a hashike peer's packets of up to 1 MiB): a write each
            # costs a system call, less than copying them together.
            for piece in writes:
                transport.write(piece)
        elif self._fd is not None and not transport.get_write_buffer_size():
            self._write_gathered(transport, self._fd, writes, total)
        else:
            transport.write(self._coalesce(writes, total))
        n = self._credit.grant(total)
        if n and self.channel_id is not None:
            self.channels.acknowledge(self.channel_id, n)

    def _write_gathered(
        self, transport: asyncio.Transport, fd: int, writes: list[bytes | memoryview], total: int
    ) -> None:
        """The pieces in one system call, straight from the views (writev),
        while nothing waits in asyncio's buffer, so the order stays; what the
        socket did not take goes to the transport in one write, which buffers
        it (and reports the socket's errors)."""
        try:
            sent = os.writev(fd, writes)
        except OSError:
            sent = 0  # full (EAGAIN), broken, or too many pieces: the transport's write deals
        if sent == total:
            return
        left = total - sent
        rest: list[bytes | memoryview] = []
        for piece in writes:
            if sent >= len(piece):
                sent -= len(piece)
            else:
                rest.append(piece[sent:])
                sent = 0
        transport.write(self._coalesce(rest, left))

    def _coalesce(self, writes: list[bytes | memoryview], total: int) -> memoryview:
        """The pieces, copied end to end into one reused buffer. A fresh
        ``b"".join`` per batch (256 KiB) made glibc trim and regrow the heap:
        a page-fault storm in every new process. asyncio's selector transport
        sends what it can and copies the rest, so the buffer is free again once
        ``write`` returns; a transport that kept a view makes ``exported``
        true, and this buffer is then left to it."""
        buf = self._joined
        if total > len(buf) or exported(buf):
            buf = self._joined = bytearray(max(total, len(buf)))
        view = memoryview(buf)
        pos = 0
        for piece in writes:
            view[pos : pos + len(piece)] = piece
            pos += len(piece)
        return view[:total]

    def channel_eof(self) -> None:
        self.flush_writes()
        self._remote_eof = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            try:
                transport.write_eof()  # shutdown(SHUT_WR) once the buffer is flushed
            except OSError:
                # The local peer is already gone (ENOTCONN): that is this
                # connection's problem only, never the SSH connection's.
                transport.close()
        if self._local_eof or transport is None or transport.is_closing():
            self._close_channel()

    def channel_request(self, event: ChannelRequestReceived) -> bool:
        return False  # no requests apply to a forwarded connection

    def channel_request_replied(self, success: bool) -> None:
        pass  # a bridge makes no requests

    def count(self, stats: ForwardStats, peer: str, target: str | None = None) -> None:
        """Counted by ``stats`` (a forward's, for hashike status) until the
        channel closes; ``target`` where this connection went, if not the forward's."""
        self.stats = stats
        stats.opened(self, peer, target)

    def channel_closed(self) -> None:
        self.flush_writes()
        self._closed = True
        if self.stats is not None:
            self.stats.finished(self)
        self.pump.bridges.pop(self.channel_id or -1, None)
        if self.transport is not None:
            self.transport.close()  # flushes what is buffered first

    def pump_data(self) -> None:
        """Send what is waiting, as far as the window and the connection allow;
        read more only when nothing waits."""
        if not self.open or self._closed:
            return
        assert self.channel_id is not None
        can_send = self.pump.can_send()
        if self._out.pending is not None and can_send:
            self.bytes_out += self._out.send(self.channels, self.channel_id)
        if self._out.pending is not None or not can_send:
            self._out.read(self.transport, False)
        elif self._local_eof:
            if not self._eof_sent:
                self._eof_sent = True
                self.channels.send_eof(self.channel_id)
                if self._remote_eof:
                    self._close_channel()
        else:
            self._out.read(self.transport, True)

    def _close_channel(self) -> None:
        if not self._closed and self.channel_id is not None:
            self._closed = True
            self.channels.close(self.channel_id)

    # --- asyncio.Protocol: the local socket ---------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        self._fd = None if sock is None else sock.fileno()
        if not self.open:
            self._out.read(transport, False)  # until the channel is confirmed

    def data_received(self, data: bytes) -> None:
        self._out.add(data)
        self.pump_data()
        self.pump.flush()

    def _sending(self) -> bool:
        """The channel is open and takes data now: nothing waits before it."""
        return self.open and not self._closed and self._out.pending is None and self.pump.can_send()

    def get_buffer(self, sizehint: int) -> memoryview:
        self._direct = False
        if self._sending():
            assert self.channel_id is not None
            direct = self.channels.data_buffer(self.channel_id)
            if direct is not None:
                self._direct = True
                return direct
        return memoryview(self.pump.read_scratch())

    def buffer_updated(self, nbytes: int) -> None:
        cid = self.channel_id
        if self._direct and cid is not None:
            self.channels.send_buffer(cid, nbytes)
            self.bytes_out += nbytes
        elif self._sending() and cid is not None:
            # Small packets: send_data copies the read into them.
            with memoryview(self.pump.read_scratch()) as scratch:
                self.bytes_out += self._out.offer(self.channels, cid, scratch[:nbytes])
        else:
            with memoryview(self.pump.read_scratch()) as scratch:
                self.data_received(bytes(scratch[:nbytes]))
            return
        self.pump_data()  # stops reading if the connection cannot send now
        self.pump.flush()

    def eof_received(self) -> bool:
        self._local_eof = True
        self.pump_data()
        self.pump.flush()
        return True  # keep the socket open for the other direction (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        # Also before the open is confirmed: the core sends CLOSE once it is.
        if not self._closed and self.channel_id is not None:
            self._close_channel()
            self.pump.flush()

    def pause_writing(self) -> None:
        self._credit.pause()

    def resume_writing(self) -> None:
        n = self._credit.resume()
        cid = self.channel_id
        if n and cid is not None and not self._closed:
            self.channels.acknowledge(cid, n)
            self.pump.flush()
