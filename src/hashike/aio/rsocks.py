"""Reverse dynamic forwarding (``-R [bind_address:]port`` alone, as OpenSSH
7.6+ has it): SOCKS served by the client on ``forwarded-tcpip`` channels.

Theory of operation. The server listens for us, and each connection it
accepts arrives as a ``forwarded-tcpip`` channel (RFC 4254 §7.2) for a
forward that named no target. The channel is confirmed at once: the SOCKS
client is at its far end, waiting for our method selection. Channel data
goes to the SOCKS codec (:mod:`hashike.proto.socks`), bounded in size by the
codec and in time by ``handshake_timeout``; the codec's answers go back as
channel data. Once the request is complete the target is connected from
here, and only then is the client told "granted", or the reply that says why
not (SOCKS5: 0x05 refused, 0x03 or 0x04 unreachable; SOCKS4: 0x5B), after
which the channel is closed. ssh answers "granted" before it knows, and
closes the channel when the connect fails. Whatever the client sent past its
request waits, unacknowledged (so bounded by the window we gave), until the
connection is made. From then on the channel is an ordinary socket bridge.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hashike.proto.constants import OpenFailureReason
from hashike.proto.socks import SocksError, SocksRequest, SocksServer, reply_for_open_failure
from hashike.proto.text import escape_text

from .bridge import SocketBridge
from .forward import connect_failure
from .pump import CorePump

__all__ = ["ReverseSocks"]

log = logging.getLogger("hashike.client")


class ReverseSocks(SocketBridge):
    """One connection on a reverse dynamic forward: the SOCKS handshake on
    the channel, then a socket bridge to the target it named."""

    def __init__(self, pump: CorePump[Any], channel_id: int, handshake_timeout: float) -> None:
        super().__init__(pump)
        self.bind(channel_id)
        self._socks: SocksServer | None = SocksServer()  # None once connected or dropped
        self._early = b""  # the target's, in the request's packet (acknowledged with it)
        self._waiting: list[bytes] = []  # the target's, in later packets (not acknowledged yet)
        self._eof_waiting = False
        loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = loop.call_later(handshake_timeout, self._too_slow)
        self._timeout = handshake_timeout

    def channel_data(self, data: bytes | memoryview, extended: int | None = None) -> None:
        socks = self._socks
        if socks is None or extended is not None:
            super().channel_data(data, extended)
            return
        if socks.request is not None:  # connecting: the data is the target's
            self._waiting.append(bytes(data))
            return
        assert self.channel_id is not None
        self.channels.acknowledge(self.channel_id, len(data))  # the handshake's, bounded by the codec
        try:
            socks.receive_data(bytes(data))
        except SocksError as exc:
            self._reply(socks)
            self._drop(str(exc))
            return
        self._reply(socks)
        if socks.request is not None:
            self._stop_timer()
            self._early = socks.early_data
            log.debug(
                "channel %s: dynamic request: %s host %s port %d command 1",
                self.channel_id, socks.request.label, socks.request.host, socks.request.port,
            )  # fmt: skip
            self.pump._spawn(self._connect(socks, socks.request))

    def channel_eof(self) -> None:
        socks = self._socks
        if socks is None:
            super().channel_eof()
        elif socks.request is None:
            self._drop("EOF before the SOCKS request")
        else:
            self._eof_waiting = True  # passed on once connected

    def channel_closed(self) -> None:
        self._stop_timer()
        self._socks = None
        super().channel_closed()

    async def _connect(self, socks: SocksServer, request: SocksRequest) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self, request.host, request.port)
        except OSError as exc:
            if self._socks is None:  # the channel went meanwhile
                return
            # ssh's words for a target that cannot be reached.
            log.error("connect_to %s port %d: failed.", escape_text(request.host), request.port)
            socks.reject(reply_for_open_failure(OpenFailureReason.CONNECT_FAILED, connect_failure(exc)))
            self._reply(socks)
            self._drop(f"connect failed: {connect_failure(exc)}")
            return
        if self._socks is None:
            if self.transport is not None:
                self.transport.close()
            return
        self._socks = None
        socks.accept()
        self._reply(socks)
        self._pass_waiting()
        self.channel_open()
        self.pump.flush()

    def _pass_waiting(self) -> None:
        """Hand the target what came while it was being connected."""
        waiting, self._waiting = self._waiting, []
        if self._early and self.transport is not None:
            self.bytes_in += len(self._early)
            self.transport.write(self._early)
        for data in waiting:
            super().channel_data(data)
        self.flush_writes()
        if self._eof_waiting:
            super().channel_eof()

    def _reply(self, socks: SocksServer) -> None:
        data = socks.data_to_send()
        if data and self.channel_id is not None and not self._closed:
            # At most 12 bytes: a peer's window smaller than that is a peer
            # that wants nothing from this channel.
            if self.channels.send_data(self.channel_id, data) < len(data):
                self._drop("the peer's window is too small for the SOCKS reply")
            self.pump.flush()

    def _too_slow(self) -> None:
        self._timer = None
        self._drop(f"no SOCKS request within {self._timeout:g} s")

    def _drop(self, why: str) -> None:
        """End this channel (never the SSH connection)."""
        self._stop_timer()
        self._socks = None
        log.debug("reverse dynamic forward: channel %s dropped: %s", self.channel_id, why)
        self._close_channel()
        self.pump.flush()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
