"""ClientConnection / ServerConnection: the public face of the sans-IO core.

The runtime feeds bytes in with ``receive_data()``, collects events with
``events_received()`` and writes ``data_to_send()`` to the socket. Decisions
the core cannot make alone arrive as events and are answered with a method
(``accept_host_key()`` / ``reject_host_key()``, ``accept_auth()`` /
``reject_auth()``), never with a callback.

Above the transport sit the service request (RFC 4253 §10) and the user
authentication service (RFC 4252, :mod:`hashike.proto.auth`), which gets
every message numbered 50-79. Until authentication succeeds, nothing from the
connection protocol (message numbers 80-127) is processed: such a message
ends the connection (CVE-2018-7750, CVE-2025-32433). After it succeeds,
messages 80-100 go to the channel table (:mod:`hashike.proto.channels`,
RFC 4254), reached through :attr:`channels`; the rest of the range is
answered UNIMPLEMENTED.

Window and packet sizes (RFC 4254 §5.2): every channel starts with OpenSSH's
2 MiB window and grows it toward the path's bandwidth-delay product
(:mod:`hashike.proto.window`), up to 8 MiB for downloads from OpenSSH's
sshd (an ``ssh`` client sending to us keeps sshd's 2 MiB) and 64 MiB when
the peer is hashike (it announced ``max-packet-length@hashike.dev`` in
EXT_INFO). Against any peer we use 32 KiB packets; against hashike both
sides use packets of up to 1 MiB (packet.BULK_PACKET_LENGTH, accepted only
once authenticated): fewer packets for the same data.

Lifecycle (as h11's ERROR state): the connection is closed once a DISCONNECT
was sent or received, the peer hung up, or a protocol error ended it; the
last event is then :class:`Disconnected`. After that every command here is a
documented no-op (host-key and auth decisions, answers to prompts, ``close``,
``start_rekey``, ``handle_timer``, further input), and so is every answer on
:attr:`channels` (see :mod:`hashike.proto.channels`), so a runtime answering a
batch of events that ended with the peer's DISCONNECT needs no guards. Only a
new request (``auth_*``, a channel open, a global request) still raises
:class:`LocalProtocolError`: nothing could ever answer it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Concatenate, ParamSpec, TypeVar

from hashike.proto.auth import ClientAuth, ServerAuth
from hashike.proto.certs import Certificate
from hashike.proto.channels import CHANNEL_MESSAGES, Channels
from hashike.proto.config import TransportConfig
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.errors import LocalProtocolError, RemoteProtocolError, SSHError
from hashike.proto.events import AuthPolicy, Event, ServiceAccepted
from hashike.proto.hostkey import HostKeySigner, PublicKey
from hashike.proto.packet import MAX_PAYLOAD
from hashike.proto.transport import ENDED, EXT_MAX_PACKET, State, Transport
from hashike.proto.window import MAX_CHANNEL_WINDOW, WindowTuning
from hashike.proto.wire import Reader, encode_byte, encode_string

__all__ = ["ClientConnection", "ServerConnection"]

USERAUTH = "ssh-userauth"
_AUTH_MESSAGES = range(50, 80)  # RFC 4250 §4.1.2: user authentication
_CONNECTION_MESSAGES = range(80, 128)  # RFC 4250 §4.1.2: connection protocol

OPENSSH_MAX_PACKET = 32 * 1024
# The receive window each channel starts with (RFC 4254 §5.2): OpenSSH's own
# 2 MiB. A channel carries at most a window per round trip (2 MiB caps a
# download at about 40 MB/s at 50 ms RTT, bench/lfn.py), so the window grows
# toward the path's bandwidth-delay product while the peer stalls on it
# (proto/window.py), up to a maximum per peer kind. For an OpenSSH peer that
# is 8 MiB: sshd buffers what a window lets it, and past 8 MiB gained little
# for it (a download at 50 ms RTT: 128-147 MB/s at 16 MiB against 122-127,
# sshd 50 MiB resident instead of 30; with half-window adjusts, 16-64 MiB
# were slower than 8, sshd at 90% of a core), while a fixed 16 MiB made an
# `ssh` client sending to us on loopback buffer so much that its allocator
# stormed (1.7M page faults per GiB, a third of the speed). Growing to 8 MiB
# still set it off at times (4k-383k faults per GiB, 547-852 MB/s against
# 880 with no growth, bench.tunnel_throughput), so an `ssh` client gets what
# sshd gives it, 2 MiB, and the 8 MiB are for downloads from sshd. A hashike
# sender buffers no more for a bigger window: a hashike peer gets up to 64 MiB.
# All of them only as far as the path's round trip needs (proto/window.py): on
# loopback a download from sshd grew to 8 MiB and stormed sshd's allocator.
START_WINDOW = 2 * 1024 * 1024
OPENSSH_MAX_WINDOW = 8 * 1024 * 1024
OPENSSH_CLIENT_MAX_WINDOW = START_WINDOW
HASHIKE_MAX_PACKET = MAX_PAYLOAD - 64  # room for the channel data header


_P = ParamSpec("_P")
_C = TypeVar("_C", bound="_Connection")


def _unless_closed(command: Callable[Concatenate[_C, _P], None]) -> Callable[Concatenate[_C, _P], None]:
    """A command that does nothing once the connection is closed (see Lifecycle above)."""

    def guarded(self: _C, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        if not self.closed:
            command(self, *args, **kwargs)

    functools.update_wrapper(guarded, command)
    return guarded


class _Connection:
    def __init__(self, transport_factory: Callable[[list[Event]], Transport]) -> None:
        self._events: list[Event] = []
        self._transport = transport_factory(self._events)
        self._channels: Channels | None = None
        # Created before the channels so that it collects round-trip samples.
        self._tuning = WindowTuning()

    @property
    def authenticated(self) -> bool:
        raise NotImplementedError

    @property
    def channels(self) -> Channels:
        """The RFC 4254 channel table; usable once authenticated."""
        if self._channels is None:
            if not self.authenticated:
                raise LocalProtocolError("channels are available only after authentication")
            t = self._transport
            hashike_peer = EXT_MAX_PACKET in t.peer_extensions
            openssh_max = OPENSSH_MAX_WINDOW if t.is_client else OPENSSH_CLIENT_MAX_WINDOW
            self._tuning.max_window = MAX_CHANNEL_WINDOW if hashike_peer else openssh_max
            self._channels = Channels(
                t.send,
                self._events,
                window=START_WINDOW,
                tuning=self._tuning,
                max_packet=HASHIKE_MAX_PACKET if hashike_peer else OPENSSH_MAX_PACKET,
                peer_max_packet=t.peer_max_packet,
                closed=lambda: self.closed,
                direct=t,
            )
            t.data_handler = self._channels.handle_data
            t.accept_bulk_packets()
        return self._channels

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def state(self) -> State:
        """Where the connection is; it ends in CLOSED, or in ERROR when a
        protocol error ended it (see Lifecycle above)."""
        return self._transport.state

    @property
    def closed(self) -> bool:
        """True once the state is CLOSED or ERROR: every command is then a no-op."""
        return self._transport.state in ENDED

    @_unless_closed
    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the socket. Protocol errors end in a Disconnected event."""
        self._transport.receive_data(data)
        self._input_ended()

    def receive_buffer(self) -> memoryview:
        """Free space to receive into (``recv_into``); valid until the next
        call. Pair each with :meth:`receive_into` (asyncio's BufferedProtocol)."""
        return self._transport.receive_buffer()

    def receive_into(self, n: int) -> None:
        """``n`` bytes were written at the start of the last :meth:`receive_buffer`."""
        self._transport.receive_into(n)
        self._input_ended()

    def _input_ended(self) -> None:
        # Window auto-tuning judges the batch (proto/window.py); before the
        # channels exist no channel was fed, and it does nothing.
        self._tuning.input_ended(self._transport.input_buffered == 0)
        self._after_input()

    def expect_rtt(self) -> None:
        """The runtime has sent a request to time the path's round trip:
        channel windows do not grow until :meth:`observe_rtt` has a sample
        (a runtime that never says this lets them grow to their maximum)."""
        self._tuning.expect_rtt()

    def observe_rtt(self, seconds: float) -> None:
        """The runtime's sample of the path's round trip, in seconds (the
        time an SSH request took to be answered): channel windows grow no
        further than the bandwidth-delay product it implies (proto/window.py)."""
        self._tuning.observe_rtt(seconds)

    @_unless_closed
    def receive_eof(self) -> None:
        self._transport.receive_eof()

    @property
    def input_held(self) -> bool:
        """True while the core holds input back because more than
        ``MAX_UNSENT_BYTES`` of its output wait (a peer that does not read):
        take :meth:`data_to_send`, then call ``receive_data(b"")`` to go on.
        A runtime should stop reading its socket meanwhile; a peer that sends
        ``MAX_HELD_INPUT`` bytes more is disconnected."""
        return self._transport.input_held

    def events_received(self) -> list[Event]:
        events, self._events[:] = list(self._events), []
        if self._channels is not None:
            self._channels.recycle()  # the runtime now knows which ids closed
        return events

    def data_to_send(self) -> bytes | memoryview:
        """Everything the core wants on the wire, coalesced into one write.
        A view is not overwritten while it is held (proto/packet.py): a
        transport may keep it, at the cost of a new buffer."""
        return self._transport.data_to_send()

    @_unless_closed
    def close(self, description: str = "disconnected by user") -> None:
        self._transport.disconnect(DisconnectReason.BY_APPLICATION, description)

    @_unless_closed
    def start_rekey(self) -> None:
        self._transport.start_rekey()

    @_unless_closed
    def handle_timer(self, now: float) -> None:
        self._transport.handle_timer(now)

    def _after_input(self) -> None:
        """Hook for work that waits on events, run after each batch of input."""

    def _deliver(self, msg: int, payload: memoryview) -> None:
        try:
            if msg in CHANNEL_MESSAGES and self.authenticated:
                # The data path: the payload view goes to the channel table
                # uncopied; it copies only the data it hands on.
                self.channels.handle(msg, payload)
                return
            self._handle(msg, bytes(payload))
        except SSHError as exc:
            self._transport.fail(exc)

    def _handle(self, msg: int, payload: bytes) -> None:
        raise NotImplementedError

    def _on_connection_message(self, msg: int, payload: bytes) -> None:
        """RFC 4250 §4.1.2: 83-89 and 101-127 are unassigned numbers of the
        connection protocol, so answer UNIMPLEMENTED (RFC 4253 §11.4), as
        OpenSSH does."""
        self._transport.send_unimplemented()


class ClientConnection(_Connection):
    """The client's core. After the host key is accepted it requests the
    ``ssh-userauth`` service and reports :class:`ServiceAccepted`; then the
    ``auth_*`` commands each send one authentication request (RFC 4252), and
    :class:`AuthFailed`, :class:`PublicKeyAccepted`, :class:`AuthPrompts` or
    :class:`AuthSucceeded` answers it. Which method and key to try, in which
    order, is the runtime's choice."""

    def __init__(self, config: TransportConfig, *, rng: Callable[[int], bytes]) -> None:
        super().__init__(
            lambda events: Transport(config, is_client=True, rng=rng, deliver=self._deliver, events=events)
        )
        self._host_key_accepted = False
        self._service_requested = False
        self.service_accepted = False
        self._auth = ClientAuth(self._transport, self._events)

    @_unless_closed
    def accept_host_key(self) -> None:
        if self._transport.server_host_key is None:
            raise LocalProtocolError("no host key has been received")
        self._host_key_accepted = True
        self._after_input()

    @_unless_closed
    def reject_host_key(self) -> None:
        self._transport.disconnect(DisconnectReason.HOST_KEY_NOT_VERIFIABLE, "Host key verification failed.")

    # ------------------------------------------------ user authentication

    @property
    def authenticated(self) -> bool:
        return self._auth.authenticated

    @property
    def server_sig_algs(self) -> tuple[str, ...] | None:
        """RFC 8308 §3.1: the signature algorithms the server accepts for
        public key authentication, or None if it did not say."""
        value = self._transport.peer_extensions.get("server-sig-algs")
        if value is None:
            return None
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return ()
        return tuple(name for name in text.split(",") if name)

    def auth_none(self, username: str) -> None:
        """RFC 4252 §5.2: ask for the methods that can continue."""
        self._auth.none(username)

    def auth_publickey_query(self, username: str, public_key: PublicKey, algorithm: str) -> None:
        """RFC 4252 §7: would ``public_key`` do? :class:`PublicKeyAccepted` or
        :class:`AuthFailed` answers; nothing is signed."""
        self._auth.publickey_query(username, public_key, algorithm)

    def auth_publickey_sign(self, username: str, public_key: PublicKey, algorithm: str) -> bytes:
        """RFC 4252 §7: return the exact data to sign with ``public_key``'s
        private half (locally or through ssh-agent); then call
        :meth:`auth_publickey_signed` with the signature blob."""
        return self._auth.publickey_sign(username, public_key, algorithm)

    def auth_publickey_signed(self, signature: bytes) -> None:
        """Send the request :meth:`auth_publickey_sign` prepared, with
        ``signature`` (an RFC 4253 §6.6 blob: string algorithm, string sig)."""
        self._auth.publickey_signed(signature)

    def auth_password(self, username: str, password: str) -> None:
        """RFC 4252 §8 (at most 1 KiB of UTF-8)."""
        self._auth.password(username, password)

    def auth_keyboard_interactive(self, username: str, submethods: str = "") -> None:
        """RFC 4256: prompts arrive as :class:`AuthPrompts`."""
        self._auth.keyboard_interactive(username, submethods)

    @_unless_closed
    def answer_prompts(self, responses: Sequence[str]) -> None:
        """Answer the last :class:`AuthPrompts`: one response per prompt."""
        self._auth.answer_prompts(responses)

    # ------------------------------------------------------------- input

    def _after_input(self) -> None:
        t = self._transport
        if (
            self._host_key_accepted
            and not self._service_requested
            and t.session_id is not None
            and t.state not in ENDED
        ):
            self._service_requested = True
            t.send(encode_byte(MsgType.SERVICE_REQUEST) + encode_string(USERAUTH))

    def _handle(self, msg: int, payload: bytes) -> None:
        if msg == MsgType.SERVICE_ACCEPT and self._service_requested and not self.service_accepted:
            r = Reader(payload, 1)
            name = r.ascii(64)
            r.check_end()
            if name != USERAUTH:
                raise RemoteProtocolError(f"server accepted a service we did not request: {name}")
            self.service_accepted = True
            self._auth.start()
            self._events.append(ServiceAccepted(service=name))
        elif msg in _AUTH_MESSAGES:
            self._auth.receive(msg, payload)
        elif msg in _CONNECTION_MESSAGES and self._auth.authenticated:
            self._on_connection_message(msg, payload)
        elif msg in (MsgType.SERVICE_REQUEST, MsgType.SERVICE_ACCEPT) or msg in _CONNECTION_MESSAGES:
            raise RemoteProtocolError(f"unexpected message {msg} before authentication")
        else:
            self._transport.send_unimplemented()


class ServerConnection(_Connection):
    """The server's core: accepts the ``ssh-userauth`` service and answers
    authentication requests (RFC 4252). What only the runtime knows (is this
    key in authorized_keys, is this the password) arrives as
    :class:`PublicKeyAuthRequested` / :class:`PasswordAuthRequested`, answered
    with :meth:`accept_auth` or :meth:`reject_auth`.

    ``auth_methods`` are the methods offered (of "publickey", "password",
    "keyboard-interactive"); ``max_auth_tries`` is sshd's MaxAuthTries;
    ``banner`` is sent once, before the reply to the first request;
    ``host_certificates`` are offered for the host keys they certify."""

    def __init__(
        self,
        config: TransportConfig,
        *,
        host_keys: Sequence[HostKeySigner],
        rng: Callable[[int], bytes],
        auth_methods: tuple[str, ...] = ("publickey",),
        max_auth_tries: int = 6,
        banner: str | None = None,
        host_certificates: Sequence[Certificate] = (),
    ) -> None:
        super().__init__(
            lambda events: Transport(
                config,
                is_client=False,
                rng=rng,
                deliver=self._deliver,
                events=events,
                host_keys=host_keys,
                host_certificates=host_certificates,
            )
        )
        self._auth = ServerAuth(
            self._transport, self._events, methods=auth_methods, max_tries=max_auth_tries, banner=banner
        )
        self.service_accepted = False

    @property
    def authenticated(self) -> bool:
        return self._auth.authenticated

    @property
    def auth_username(self) -> str | None:
        """The user name of the latest request; once authenticated, the user's."""
        return self._auth.username

    @property
    def auth_policy(self) -> AuthPolicy | None:
        """What the runtime passed to :meth:`accept_auth` when authentication
        succeeded, for the connection layer (permitopen and the like); None
        means no restrictions."""
        return self._auth.policy

    @property
    def auth_failures(self) -> int:
        """Failed attempts so far, as counted for MaxAuthTries."""
        return self._auth.failures

    @_unless_closed
    def accept_auth(self, policy: AuthPolicy | None = None) -> None:
        """Accept the request of the last PublicKeyAuthRequested /
        PasswordAuthRequested: SSH_MSG_USERAUTH_PK_OK for an unsigned public key
        query, otherwise USERAUTH_SUCCESS and :class:`AuthSucceeded`, with
        ``policy`` kept as :attr:`auth_policy`. A no-op once the connection is
        closed; LocalProtocolError if no request awaits a decision."""
        self._auth.accept(policy)

    def replace_host_keys(self, signers: Sequence[HostKeySigner]) -> None:
        """Sign the exchange hashes of later key exchanges (RFC 4253 §9) with
        ``signers``: stand-ins for the same host keys, for a runtime that
        gives the private keys away (hashiked's PrivilegeSeparation). The core
        then holds no reference to the keys it was built with. KeyError if
        one of them has no stand-in (same public key)."""
        self._transport.replace_host_keys(signers)

    @_unless_closed
    def reject_auth(self) -> None:
        """Refuse the pending request: USERAUTH_FAILURE listing the methods
        offered, or DISCONNECT once the failures reach ``max_auth_tries``."""
        self._auth.reject()

    def _handle(self, msg: int, payload: bytes) -> None:
        if msg == MsgType.SERVICE_REQUEST:
            r = Reader(payload, 1)
            name = r.ascii(64)
            r.check_end()
            if name != USERAUTH or self.service_accepted:
                self._transport.disconnect(
                    DisconnectReason.SERVICE_NOT_AVAILABLE, f"service not available: {name[:64]}"
                )
                return
            self.service_accepted = True
            self._auth.start()
            self._transport.send(encode_byte(MsgType.SERVICE_ACCEPT) + encode_string(USERAUTH))
        elif msg in _AUTH_MESSAGES:
            # Before SERVICE_ACCEPT, and for messages only a server may send
            # (CVE-2018-10933, CVE-2018-1000805), the auth table has no entry:
            # the connection ends.
            self._auth.receive(msg, payload)
        elif msg in _CONNECTION_MESSAGES:
            if not self._auth.authenticated:
                # CVE-2018-7750, CVE-2025-32433: nothing of the connection
                # protocol before authentication succeeded.
                raise RemoteProtocolError(f"unexpected message {msg} before authentication")
            self._on_connection_message(msg, payload)
        elif msg == MsgType.SERVICE_ACCEPT:
            raise RemoteProtocolError("client sent SERVICE_ACCEPT, which only a server may send")
        else:
            self._transport.send_unimplemented()
