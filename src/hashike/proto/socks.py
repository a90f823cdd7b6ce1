"""The server side of a SOCKS handshake (SOCKS4, SOCKS4A, SOCKS5), sans I/O.

Theory of operation. ``-D`` serves SOCKS to local programs: each accepted
connection gets one :class:`SocksServer`. Bytes from the client are fed with
:meth:`SocksServer.receive_data` as they come, in pieces of any size (a client
that writes one byte at a time works); whatever the server must answer is
taken with :meth:`SocksServer.data_to_send`. The handshake is a table of
states, each with the step that parses one message of that state: a step
returns None until its whole message has arrived, then consumes it and names
the next state. Once a CONNECT request is complete the state is
``REQUESTED`` and :attr:`SocksServer.request` says where to connect; the
runtime opens the channel and answers with :meth:`SocksServer.accept` or
:meth:`SocksServer.reject`. Anything after the request (a client that does
not wait for the reply) is kept in :attr:`SocksServer.early_data`.

Only CONNECT is served and no authentication is offered (RFC 1928 §3 method
0x00, "NO AUTHENTICATION REQUIRED"). Every field is bounded: SOCKS5's by
their one-byte lengths, SOCKS4's NUL-terminated USERID and SOCKS4A host name
by :data:`MAX_NAME`; so no handshake is longer than :data:`MAX_HANDSHAKE`
bytes, however the client sends it. Anything malformed raises
:class:`SocksError`, after queueing the refusal the protocol has for it (if
any); the connection is then to be closed.

References: RFC 1928 (SOCKS5); "SOCKS: A protocol for TCP proxy across
firewalls" (SOCKS4.protocol) and "SOCKS 4A: A Simple Extension to SOCKS 4
Protocol" (SOCKS4A.protocol), both by Ying-Da Lee.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from hashike.proto.constants import OpenFailureReason
from hashike.proto.errors import SSHError

__all__ = [
    "MAX_HANDSHAKE",
    "MAX_NAME",
    "Reply",
    "SocksError",
    "SocksRequest",
    "SocksServer",
    "State",
    "encode_socks4_reply",
    "encode_socks5_reply",
    "reply_for_open_failure",
]

# SOCKS4's USERID and SOCKS4A's host name end at a NUL the client chooses:
# without a cap a client could make us buffer forever. 255 is SOCKS5's own
# limit for a host name (one length byte), and more than any real user id.
MAX_NAME = 255
# The longest handshake the steps let through: SOCKS4A's 8 fixed bytes and
# two names with their NULs (a SOCKS5 greeting and request take at most
# 2 + 255 + 7 + 255 = 519).
MAX_HANDSHAKE = 8 + 2 * (MAX_NAME + 1)

_NO_AUTHENTICATION = 0x00  # RFC 1928 §3
_NO_ACCEPTABLE_METHODS = 0xFF
_CONNECT = 0x01  # the CONNECT command, in SOCKS4 and SOCKS5 alike
_ATYP_IPV4, _ATYP_DOMAIN, _ATYP_IPV6 = 0x01, 0x03, 0x04  # RFC 1928 §5
_SOCKS4_GRANTED, _SOCKS4_REJECTED = 0x5A, 0x5B  # SOCKS4.protocol: CD 90, 91


class SocksError(SSHError):
    """The client broke the SOCKS protocol, or asked for what we do not
    serve; the handshake is over and the client connection is to be closed
    (after sending :meth:`SocksServer.data_to_send`, which may hold a refusal)."""


class Reply(enum.IntEnum):
    """RFC 1928 §6 reply codes (REP). SOCKS4 has only granted/rejected: every
    failure is sent to a SOCKS4 client as 0x5B."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class State(enum.Enum):
    VERSION = enum.auto()  # the first byte says which protocol
    SOCKS4_REQUEST = enum.auto()  # VN CD DSTPORT DSTIP USERID NUL
    SOCKS4A_HOST = enum.auto()  # host name NUL, after the USERID's NUL
    SOCKS5_GREETING = enum.auto()  # VER NMETHODS METHODS
    SOCKS5_REQUEST = enum.auto()  # VER CMD RSV ATYP DST.ADDR DST.PORT
    REQUESTED = enum.auto()  # a CONNECT to answer with accept() or reject()
    DONE = enum.auto()  # answered
    FAILED = enum.auto()


@dataclass(frozen=True, slots=True)
class SocksRequest:
    """A CONNECT request: ``host`` is an IPv4 or IPv6 address in text or a
    domain name for the SSH server to resolve (SOCKS4A, SOCKS5 ATYP 3)."""

    version: int  # 4 (4A too) or 5
    host: str
    port: int
    resolved_by_server: bool  # a name, not an address, was given

    @property
    def label(self) -> str:
        """The protocol, as ssh's debug lines name it: socks4, socks4a, socks5."""
        if self.version == 4:
            return "socks4a" if self.resolved_by_server else "socks4"
        return "socks5"


def encode_socks5_reply(reply: Reply) -> bytes:
    """RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT. The address our side
    of the forward is bound to lives on the SSH server and is not told to
    us: 0.0.0.0 port 0, as ssh sends."""
    return bytes((5, reply, 0, _ATYP_IPV4, 0, 0, 0, 0, 0, 0))


def encode_socks4_reply(granted: bool) -> bytes:
    """SOCKS4.protocol: VN (0) CD DSTPORT DSTIP; the last two are ignored
    by the client for CONNECT."""
    return bytes((0, _SOCKS4_GRANTED if granted else _SOCKS4_REJECTED, 0, 0, 0, 0, 0, 0))


# RFC 4254 §5.1 gives only a code; the OS's reason, which OpenSSH's and our
# server send as the description, tells the kinds of connect failure apart.
_CONNECT_FAILURES = {
    "connection refused": Reply.CONNECTION_REFUSED,
    "network is unreachable": Reply.NETWORK_UNREACHABLE,
}


def reply_for_open_failure(reason: int, description: str) -> Reply:
    """The SOCKS5 reply for a refused ``direct-tcpip`` open."""
    if reason == OpenFailureReason.ADMINISTRATIVELY_PROHIBITED:
        return Reply.NOT_ALLOWED
    if reason == OpenFailureReason.CONNECT_FAILED:
        # No route, a name that does not resolve, a timeout: host unreachable.
        return _CONNECT_FAILURES.get(description.strip().lower(), Reply.HOST_UNREACHABLE)
    return Reply.GENERAL_FAILURE


# A step parses the message of its state from the buffer: None while it is
# incomplete, else (bytes consumed, next state).
_Step = Callable[["SocksServer", bytes], "tuple[int, State] | None"]


class SocksServer:
    """One client's SOCKS handshake, from the server's side."""

    def __init__(self) -> None:
        self.state = State.VERSION
        self.request: SocksRequest | None = None
        self.early_data = b""  # sent after the request, before our reply
        self._buffer = b""
        self._out = bytearray()
        self._socks4a_port = 0  # SOCKS4A: the request's port, while its host name comes

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client. Raises SocksError when the handshake
        fails (malformed, too large, not CONNECT, no acceptable method)."""
        if self.state not in _STEPS:
            # After the request the bytes are the connection's, not ours.
            raise SocksError(f"no SOCKS handshake to feed in state {self.state.name}")
        self._buffer += data
        while (step := _STEPS.get(self.state)) is not None:
            done = step(self, self._buffer)
            if done is None:
                return
            used, self.state = done
            self._buffer = self._buffer[used:]
        # REQUESTED: what the client sent beyond the request is its data.
        self.early_data, self._buffer = self._buffer, b""

    def data_to_send(self) -> bytes:
        """Bytes for the client: the method selection, a reply, a refusal."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def accept(self) -> None:
        """The channel opened: tell the client it is connected."""
        request = self._answer()
        self._out += (
            encode_socks4_reply(True) if request.version == 4 else encode_socks5_reply(Reply.SUCCEEDED)
        )

    def reject(self, reply: Reply) -> None:
        """The channel was refused: tell the client why (SOCKS4: rejected)."""
        request = self._answer()
        self._out += encode_socks4_reply(False) if request.version == 4 else encode_socks5_reply(reply)

    def _answer(self) -> SocksRequest:
        if self.state is not State.REQUESTED or self.request is None:
            raise SocksError(f"no SOCKS request to answer in state {self.state.name}")
        self.state = State.DONE
        return self.request

    def _fail(self, message: str, refusal: bytes = b"") -> NoReturn:
        self.state = State.FAILED
        self._out += refusal
        raise SocksError(message)

    # --- the steps -----------------------------------------------------------------

    def _version(self, buf: bytes) -> tuple[int, State] | None:
        if not buf:
            return None
        if buf[0] == 4:
            return 0, State.SOCKS4_REQUEST
        if buf[0] == 5:
            return 0, State.SOCKS5_GREETING
        self._fail(f"SOCKS version {buf[0]} is not 4 or 5")  # no way to answer in it

    def _socks4_request(self, buf: bytes) -> tuple[int, State] | None:
        end = _find_nul(buf, 8)
        if end < 0:
            if len(buf) > 8 + MAX_NAME:
                self._fail("SOCKS4 user id too long", encode_socks4_reply(False))
            return None
        command, port, address = buf[1], int.from_bytes(buf[2:4], "big"), buf[4:8]
        if command != _CONNECT:
            self._fail(f"SOCKS4 command {command} is not CONNECT", encode_socks4_reply(False))
        # SOCKS4A: 0.0.0.x with x nonzero means "the host name follows".
        if address[:3] == b"\0\0\0" and address[3]:
            self._socks4a_port = port
            return end + 1, State.SOCKS4A_HOST
        self._requested(4, str(ipaddress.IPv4Address(address)), port, by_name=False)
        return end + 1, State.REQUESTED

    def _socks4a_host(self, buf: bytes) -> tuple[int, State] | None:
        end = _find_nul(buf, 0)
        if end < 0:
            if len(buf) > MAX_NAME:
                self._fail("SOCKS4A host name too long", encode_socks4_reply(False))
            return None
        host = self._host_name(buf[:end], encode_socks4_reply(False))
        self._requested(4, host, self._socks4a_port, by_name=True)
        return end + 1, State.REQUESTED

    def _socks5_greeting(self, buf: bytes) -> tuple[int, State] | None:
        # RFC 1928 §3: VER NMETHODS METHODS(1..255).
        if len(buf) < 2 or len(buf) < 2 + buf[1]:
            return None
        methods = buf[2 : 2 + buf[1]]
        if _NO_AUTHENTICATION not in methods:
            self._fail("SOCKS5 client offers no method we accept", bytes((5, _NO_ACCEPTABLE_METHODS)))
        self._out += bytes((5, _NO_AUTHENTICATION))
        return 2 + buf[1], State.SOCKS5_REQUEST

    def _socks5_request(self, buf: bytes) -> tuple[int, State] | None:
        # RFC 1928 §4: VER CMD RSV ATYP DST.ADDR DST.PORT.
        if len(buf) < 5:
            return None
        if buf[0] != 5:
            self._fail(f"SOCKS5 request of version {buf[0]}", encode_socks5_reply(Reply.GENERAL_FAILURE))
        if buf[1] != _CONNECT:
            self._fail(
                f"SOCKS5 command {buf[1]} is not CONNECT", encode_socks5_reply(Reply.COMMAND_NOT_SUPPORTED)
            )
        atyp = buf[3]
        if atyp == _ATYP_IPV4:
            start, size = 4, 4
        elif atyp == _ATYP_IPV6:
            start, size = 4, 16
        elif atyp == _ATYP_DOMAIN:
            start, size = 5, buf[4]
        else:
            refusal = encode_socks5_reply(Reply.ADDRESS_TYPE_NOT_SUPPORTED)
            self._fail(f"SOCKS5 address type {atyp} is unknown", refusal)
        end = start + size
        if len(buf) < end + 2:
            return None
        raw, port = buf[start:end], int.from_bytes(buf[end : end + 2], "big")
        if atyp == _ATYP_DOMAIN:
            host = self._host_name(raw, encode_socks5_reply(Reply.GENERAL_FAILURE))
        elif atyp == _ATYP_IPV4:
            host = str(ipaddress.IPv4Address(raw))
        else:
            host = str(ipaddress.IPv6Address(raw))
        self._requested(5, host, port, by_name=atyp == _ATYP_DOMAIN)
        return end + 2, State.REQUESTED

    def _host_name(self, raw: bytes, refusal: bytes) -> str:
        """A host name as the SSH server will be given it: printable ASCII
        (an international name comes in its A-label form), never empty."""
        if not raw or not all(0x21 <= b < 0x7F for b in raw):
            self._fail("SOCKS host name is empty or not printable ASCII", refusal)
        return raw.decode("ascii")

    def _requested(self, version: int, host: str, port: int, *, by_name: bool) -> None:
        self.request = SocksRequest(version, host, port, by_name)


def _find_nul(buf: bytes, start: int) -> int:
    """The index of the first NUL at or after ``start``, or -1 (also when the
    buffer is not yet ``start`` bytes long)."""
    return buf.find(b"\0", start) if len(buf) >= start else -1


# The state table: the step for each state that reads a message. REQUESTED,
# DONE and FAILED read none.
_STEPS: dict[State, _Step] = {
    State.VERSION: SocksServer._version,
    State.SOCKS4_REQUEST: SocksServer._socks4_request,
    State.SOCKS4A_HOST: SocksServer._socks4a_host,
    State.SOCKS5_GREETING: SocksServer._socks5_greeting,
    State.SOCKS5_REQUEST: SocksServer._socks5_request,
}
