"""RFC 4253 §6 binary packet protocol: framing, padding, sequence numbers.

Theory of operation. :class:`PacketWriter` assembles each packet in one
plaintext buffer and seals it straight into a growing output buffer, so many
packets leave in one socket write (profiles of Python SSH clients show one
``send()`` per packet dominating their cost). :class:`PacketReader` buffers
wire bytes (the runtime may receive straight into its buffer), checks
``packet_length`` *before* waiting for or allocating anything, and opens
each packet into an arena; the payload it returns is a memoryview of it.

Lifetime rule: a payload view stays valid for as long as anyone holds it, so
channel data goes on to its consumer with no copy after decryption. The
arena is rewritten from the start only when no view of it is alive
(:func:`exported` asks CPython, which refuses to resize a buffer that has
exports); while views are alive, new packets go after them, or into a new
arena when it is full (the old one lives on with its views). A runtime that
drops its views once it has written them onward, before it feeds the next
input, reuses one arena for ever; one that keeps them costs an allocation,
never a corruption. The same rule lets :meth:`PacketWriter.take` hand out a
view of the output buffer rather than a copy.

Every buffer starts small and grows to the largest packet actually seen, so
that a connection that has not authenticated (and may never) costs a few KiB,
not the 1 MiB a hashike peer's packets need (the DHEat class of
pre-authentication memory exhaustion, CVE-2002-20001).

Both count packets and bytes since the last key exchange, for rekeying (§9).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from hashike.proto.ciphers import NONE_OPENER, NONE_SEALER, Opener, Sealer
from hashike.proto.errors import RemoteProtocolError

__all__ = [
    "BULK_PACKET_LENGTH",
    "MAX_PACKET_LENGTH",
    "MAX_PAYLOAD",
    "MIN_PACKET_LENGTH",
    "PacketReader",
    "PacketWriter",
    "exported",
]

# OpenSSH accepts packets up to 256 KiB (PACKET_MAX_SIZE); RFC 4253 §6.1 asks
# for at least 35000. A reader accepts no more until its owner raises its
# bound (PacketReader.max_length) after user authentication: before it, this
# bounds every allocation driven by the peer.
MAX_PACKET_LENGTH = 256 * 1024
# The largest packet two hashike peers exchange once logged in (our EXT_INFO
# announces it: max-packet-length@hashike.dev). Channel data in 1 MiB packets
# cost the sending side 0.15-0.2 s/GiB less than in 256 KiB ones (a fixed cost
# per packet and per socket read; 512 KiB saved half of it), the receiving
# side no more (bench.tunnel_throughput).
BULK_PACKET_LENGTH = 1024 * 1024
# padding_length byte + at least 4 bytes of padding (RFC 4253 §6).
MIN_PACKET_LENGTH = 5
MAX_PAYLOAD = BULK_PACKET_LENGTH - 1 - 4 - 16
_MAX_TAG = 64  # hmac-sha2-512
_SLACK = 16  # update_into wants block_size - 1 spare bytes

_HEAD = struct.Struct(">IB")
_MAX_PADDING = 4 + 16 + 4  # at most block_size + 3 bytes, and 4 for the length
_PAD_POOL = 4096
_SHRUNK = 64 * 1024  # what a buffer shrinks back to after a burst
_BURST = 4 * 1024 * 1024  # a buffer larger than this is given back once empty
_INITIAL_PLAIN = 2048  # a KEXINIT fits
# What PacketReader.buffer offers to one read: a few KiB while packets are
# small (an unauthenticated or idle connection must stay cheap), room for a
# batch of packets once they are bulk data's (_BULK and more), so that one
# 512 KiB read is a syscall, an event-loop turn and a window credit for
# sixteen of OpenSSH's 32 KiB packets (eight cost the server 0.07 s/GiB more).
_MIN_READ = 4 * 1024
_BULK = 16 * 1024
_MAX_READ = 1024 * 1024


# The reader's arena grows to what one batch of input opens into (a 1 MiB
# read and a packet left over from the last), and no further: a runtime that
# keeps its views gets arenas of this size.
_MAX_ARENA = 2 * 1024 * 1024


def exported(buf: bytearray) -> bool:
    """True while a memoryview of ``buf`` (or of a slice of one) is alive.

    Removing and restoring the last byte is a resize, which CPython refuses
    with BufferError while the buffer is exported. Shrinking by one byte never
    reallocates, and putting it back fits the same allocation."""
    if not buf:
        return False
    try:
        last = buf.pop()
    except BufferError:
        return True
    buf.append(last)
    return False


def _grown(size: int, need: int) -> bytearray:
    """A fresh buffer for ``need`` bytes that was ``size``: at least doubled, so
    that a stream of growing packets reallocates a few times only, and never
    beyond what the largest packet needs. A new object rather than a resize:
    the caller may still hold a view of the old one (the last payload)."""
    return bytearray(min(max(need, 2 * size), BULK_PACKET_LENGTH + 4 + 256))


class PacketWriter:
    """Seals payloads into wire bytes; :meth:`take` hands them to the runtime."""

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self.seq = 0
        self.packets = 0  # since the last key exchange
        self.bytes = 0
        self._sealer: Sealer = NONE_SEALER
        self._rng = rng
        self._pad = rng(_PAD_POOL)
        self._pad_pos = 0
        self._plain = bytearray(_INITIAL_PLAIN)
        self._out = bytearray()
        self._taken = False  # a view of _out was handed out by take()
        # Bytes sealed but not yet taken by the runtime; a plain attribute, read
        # once per input packet by the transport's output bound.
        self.pending = 0

    def set_sealer(self, sealer: Sealer, reset_seq: bool) -> None:
        """Install new keys after sending NEWKEYS (RFC 4253 §7.3)."""
        self._sealer = sealer
        self.packets = 0
        self.bytes = 0
        if reset_seq:  # strict kex: PROTOCOL §1.10
            self.seq = 0

    def _padding(self, n: int) -> bytes:
        # Random padding (RFC 4253 §6), drawn from a pool so that the injected rng
        # is called once per 4 KiB rather than once per packet.
        if self._pad_pos + n > _PAD_POOL:
            self._pad = self._rng(_PAD_POOL)
            self._pad_pos = 0
        start = self._pad_pos
        self._pad_pos += n
        return self._pad[start : self._pad_pos]

    def reserve(self, offset: int, n: int) -> memoryview:
        """Room for ``n`` bytes at ``offset`` into the next packet's payload,
        in the plaintext buffer itself: the runtime receives channel data
        straight into it (``recv_into``), then :meth:`write` with
        ``reserved`` seals it where it lies. Nothing else may be written in
        between; the view is valid until then."""
        if offset + n > MAX_PAYLOAD:
            raise ValueError(f"payload of {offset + n} bytes exceeds {MAX_PAYLOAD}")
        total = 5 + offset + n + _MAX_PADDING
        if total > len(self._plain):
            self._plain = _grown(len(self._plain), total)
        return memoryview(self._plain)[5 + offset : 5 + offset + n]

    def write(
        self, payload: bytes | bytearray | memoryview, data: bytes | memoryview = b"", *, reserved: int = 0
    ) -> None:
        """Queue one packet whose payload is ``payload`` followed by ``data``,
        or by the ``reserved`` bytes already in place (:meth:`reserve`).

        Passing channel data separately lets the caller avoid building the
        concatenated payload: it is copied once, into the plaintext buffer."""
        sealer = self._sealer
        n = len(payload) + (reserved or len(data))
        if n > MAX_PAYLOAD:
            raise ValueError(f"payload of {n} bytes exceeds {MAX_PAYLOAD}")
        block = sealer.block_size
        unpadded = 1 + n + (4 if sealer.aligns_length else 0)
        pad = block - unpadded % block
        if pad < 4:
            pad += block
        packet_length = 1 + n + pad
        total = 4 + packet_length
        wire = total + sealer.tag_size
        if total > len(self._plain):
            self._plain = _grown(len(self._plain), total)
        if self._taken:
            self._reuse()
        need = self.pending + wire + _SLACK
        if need > len(self._out):
            self._out.extend(bytes(max(need - len(self._out), len(self._out))))
        # Copy through a memoryview: ``bytearray[a:b] = bytes`` first copies the
        # right side into a temporary bytearray (CPython's bytearray_ass_subscript),
        # i.e. two memcpys and a payload-sized malloc/free per packet.
        with memoryview(self._plain) as pv, memoryview(self._out) as ov:
            _HEAD.pack_into(pv, 0, packet_length, pad)
            pv[5 : 5 + len(payload)] = payload
            if data and not reserved:
                pv[5 + len(payload) : 5 + n] = data
            pv[5 + n : total] = self._padding(pad)
            sealer.seal(self.seq, pv[:total], ov[self.pending : self.pending + wire + _SLACK])
        self.pending += wire
        # RFC 4253 §6.4: the sequence number wraps at 2^32.
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.packets += 1
        self.bytes += wire

    def take(self) -> bytes | memoryview:
        """Everything sealed so far, in one piece, for one socket write: a
        view of the output buffer, which is not written again while the
        view is held (the lifetime rule above)."""
        if not self.pending:
            return b""
        data = memoryview(self._out)[: self.pending]
        self.pending = 0
        self._taken = True
        return data

    def _reuse(self) -> None:
        """Before the first packet after a take(): a fresh output buffer if
        the last one is still held (a transport that queued the view), or
        was a burst's, whose memory is given back."""
        self._taken = False
        if len(self._out) > _BURST:
            self._out = bytearray(_SHRUNK)
        elif exported(self._out):
            self._out = bytearray(len(self._out))


class PacketReader:
    """Buffers wire bytes and yields one opened payload at a time."""

    def __init__(self) -> None:
        self.seq = 0
        self.packets = 0
        self.bytes = 0
        self._opener: Opener = NONE_OPENER
        # Unopened wire bytes live in _buf[_start:_end]. The buffer is reused, never
        # emptied with ``del``: CPython shrinks a bytearray that falls below half
        # its allocation, so every big packet would cost a fresh malloc and, under
        # glibc's heap trimming, ~64 page faults per 256 KiB.
        self._buf = bytearray()
        self._start = 0
        self._end = 0
        # A ``bytes`` object fed while _buf is empty is opened in place, without a
        # copy; its unread tail moves into _buf on the next feed.
        self._held: memoryview | None = None
        self._held_pos = 0
        # Opened packets: _arena[:_fill] may be held by views (see the lifetime rule).
        self._arena = bytearray(_INITIAL_PLAIN)
        self._fill = 0
        self._payload_at = 0  # where the last opened packet's plaintext starts
        self._length: int | None = None  # packet_length of the packet being awaited
        self._largest = 0  # the largest packet opened so far, wire bytes
        self.max_length = MAX_PACKET_LENGTH  # the largest packet_length accepted

    def set_opener(self, opener: Opener, reset_seq: bool) -> None:
        """Install new keys after receiving NEWKEYS (RFC 4253 §7.3)."""
        self._opener = opener
        self.packets = 0
        self.bytes = 0
        if reset_seq:
            self.seq = 0

    def _new_batch(self) -> None:
        # Once per read, not per packet: the views of the last batch have
        # normally been written onward and dropped by now.
        if self._fill and not exported(self._arena):
            self._fill = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._new_batch()
        if self._held is not None:
            self._append(self._held[self._held_pos :])
            self._held = None
        if not data:
            return
        if self._start == self._end and type(data) is bytes:  # immutable: safe to keep
            self._held = memoryview(data)
            self._held_pos = 0
        else:
            self._append(data)

    def _append(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        self._make_room(n)
        with memoryview(self._buf) as bv:
            bv[self._end : self._end + n] = data
        self._end += n

    def _make_room(self, n: int) -> None:
        """At least ``n`` free bytes after the unopened ones."""
        if self._end + n <= len(self._buf):
            return
        live = self._end - self._start
        if live + n > len(self._buf):
            # A new buffer rather than a resize: a view of the old one may
            # still be alive (the runtime's, from the last buffer()).
            grown = bytearray(max(live + n, 2 * len(self._buf)))
            grown[:live] = memoryview(self._buf)[self._start : self._end]
            self._buf = grown
        elif self._start:
            with memoryview(self._buf) as bv:
                bv[:live] = bv[self._start : self._end]  # memmove
        self._start, self._end = 0, live

    def buffer(self) -> memoryview:
        """Free space for the runtime to receive into (``recv_into``), then
        :meth:`commit` what it wrote: wire bytes land where they are opened
        from, with no ``bytes`` object per read and no copy. Sized to the
        packets seen so far (sixteen of the largest once they are bulk data's,
        at most _MAX_READ): small before authentication, one read for a batch of
        packets after. Valid until the next call of any method here."""
        self._new_batch()
        if self._held is not None:
            self._append(self._held[self._held_pos :])
            self._held = None
        if self._start == self._end:
            self._start = self._end = 0
        want = min(16 * self._largest, _MAX_READ) if self._largest >= _BULK else _MIN_READ
        self._make_room(want)
        return memoryview(self._buf)[self._end : self._end + want]

    def commit(self, n: int) -> None:
        """``n`` bytes were written at the start of the last :meth:`buffer`."""
        if not 0 <= n <= len(self._buf) - self._end:
            raise ValueError(f"committed {n} bytes, more than the buffer had room for")
        self._end += n

    @property
    def buffered(self) -> int:
        held = len(self._held) - self._held_pos if self._held is not None else 0
        return self._end - self._start + held

    def _check_length(self, length: int) -> None:
        opener = self._opener
        aligned = length + (4 if opener.aligns_length else 0)
        if length < MIN_PACKET_LENGTH or length > self.max_length or aligned % opener.block_size:
            # Checked before anything is allocated or awaited (RFC 4253 §6.1).
            raise RemoteProtocolError(f"bad packet length {length}")

    def _open(self, src: memoryview, pos: int, end: int) -> int:
        """Open the packet starting at ``src[pos]`` into the arena; its wire
        size, or 0 while ``src[pos:end]`` does not hold all of it yet."""
        opener = self._opener
        if self._length is None:
            if end - pos < 4:
                return 0
            length = opener.packet_length(self.seq, src[pos : pos + 4])
            self._check_length(length)
            self._length = length
        length = self._length
        wire = 4 + length + opener.tag_size
        if end - pos < wire:
            return 0
        need = length + _SLACK
        at = self._fill if self._fill + need <= len(self._arena) else self._room(need)
        with memoryview(self._arena) as av:
            opener.open(self.seq, src[pos : pos + wire], av[at : at + length + _SLACK])
        self._payload_at = at
        self._fill = at + length
        return wire

    def _room(self, need: int) -> int:
        """Where in the arena ``need`` bytes can be written without touching
        a view that may still be held, once they do not fit after _fill."""
        arena = self._arena
        if need <= len(arena) and not exported(arena):
            return 0
        # Too small, or full with live views: a new arena; the old one is
        # freed with its last view.
        size = max(need, min(2 * len(arena), _MAX_ARENA))
        self._arena = bytearray(size)
        return 0

    def next_payload(self) -> memoryview | None:
        """The next packet's payload, or None until more bytes arrive.

        The view stays valid while it is held (the lifetime rule above)."""
        held = self._held
        if held is not None:
            wire = self._open(held, self._held_pos, len(held))
            if not wire:
                return None
            self._held_pos += wire
            if self._held_pos == len(held):
                self._held = None
        else:
            with memoryview(self._buf) as bv:
                wire = self._open(bv, self._start, self._end)
            if not wire:
                return None
            self._start += wire
            if self._start == self._end:
                self._start = self._end = 0
                if len(self._buf) > _BURST:  # give back a burst's memory
                    self._buf = bytearray(_SHRUNK)
        length = wire - 4 - self._opener.tag_size
        if wire > self._largest:
            self._largest = wire
        self._length = None
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.packets += 1
        self.bytes += wire
        at = self._payload_at
        pad = self._arena[at]
        # RFC 4253 §6: at least four bytes of padding, and a non-empty payload.
        if pad < 4 or pad >= length - 1:
            raise RemoteProtocolError(f"bad padding length {pad} in a packet of {length}")
        return memoryview(self._arena)[at + 1 : at + length - pad]
