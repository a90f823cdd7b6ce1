"""ClientConnection / ServerConnection: the public face of the sans-IO core.

The runtime feeds bytes in with ``receive_data()``, collects events with
``events_received()`` and writes ``data_to_send()`` to the socket. Decisions
the core cannot make alone arrive as events and are answered with a method
(``accept_host_key()`` / ``reject_host_key()``), never with a callback.

Above the transport sit the service request (RFC 4253 §10) and the user
authentication service (RFC 4252). Until authentication succeeds, nothing
from the connection protocol (message numbers 80-127) is processed: such a
message ends the connection (CVE-2018-7750, CVE-2025-32433).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hashike.keys.keypair import PrivateKey
from hashike.proto.config import TransportConfig
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.errors import LocalProtocolError, RemoteProtocolError, SSHError
from hashike.proto.events import Event, ServiceAccepted
from hashike.proto.transport import State, Transport
from hashike.proto.wire import Reader, encode_bool, encode_byte, encode_namelist, encode_string

__all__ = ["ClientConnection", "ServerConnection"]

USERAUTH = "ssh-userauth"
_SERVER_ONLY = frozenset(
    {
        MsgType.SERVICE_ACCEPT,
        MsgType.USERAUTH_FAILURE,
        MsgType.USERAUTH_SUCCESS,
        MsgType.USERAUTH_BANNER,
        MsgType.USERAUTH_INFO_REQUEST,
    }
)


class _Connection:
    def __init__(self, transport_factory: Callable[[list[Event]], Transport]) -> None:
        self._events: list[Event] = []
        self._transport = transport_factory(self._events)

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def closed(self) -> bool:
        return self._transport.state is State.CLOSED

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the socket. Protocol errors end in a Disconnected event."""
        self._transport.receive_data(data)
        self._after_input()

    def receive_eof(self) -> None:
        self._transport.receive_eof()

    def events_received(self) -> list[Event]:
        events, self._events[:] = list(self._events), []
        return events

    def data_to_send(self) -> bytes:
        """Everything the core wants on the wire, coalesced into one write."""
        return self._transport.data_to_send()

    def close(self, description: str = "disconnected by user") -> None:
        self._transport.disconnect(DisconnectReason.BY_APPLICATION, description)

    def start_rekey(self) -> None:
        self._transport.start_rekey()

    def handle_timer(self, now: float) -> None:
        self._transport.handle_timer(now)

    def _after_input(self) -> None:
        """Hook for work that waits on events, run after each batch of input."""

    def _deliver(self, msg: int, payload: memoryview) -> None:
        try:
            self._handle(msg, bytes(payload))
        except SSHError as exc:
            self._transport.fail(exc)

    def _handle(self, msg: int, payload: bytes) -> None:
        raise NotImplementedError


class ClientConnection(_Connection):
    """The client's core. After the host key is accepted it requests the
    ``ssh-userauth`` service and reports :class:`ServiceAccepted`."""

    def __init__(self, config: TransportConfig, *, rng: Callable[[int], bytes]) -> None:
        super().__init__(
            lambda events: Transport(config, is_client=True, rng=rng, deliver=self._deliver, events=events)
        )
        self._host_key_accepted = False
        self._service_requested = False
        self.service_accepted = False

    def accept_host_key(self) -> None:
        if self._transport.server_host_key is None:
            raise LocalProtocolError("no host key has been received")
        self._host_key_accepted = True
        self._after_input()

    def reject_host_key(self) -> None:
        self._transport.disconnect(DisconnectReason.HOST_KEY_NOT_VERIFIABLE, "Host key verification failed.")

    def _after_input(self) -> None:
        t = self._transport
        if (
            self._host_key_accepted
            and not self._service_requested
            and t.session_id is not None
            and t.state is not State.CLOSED
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
            self._events.append(ServiceAccepted(service=name))
        elif msg == MsgType.SERVICE_REQUEST or 80 <= msg <= 127 or msg in _SERVER_ONLY:
            # Nothing of this is valid before we authenticated.
            raise RemoteProtocolError(f"unexpected message {msg} before authentication")
        else:
            self._transport.send_unimplemented()


class ServerConnection(_Connection):
    """The server's core: accepts the ``ssh-userauth`` service and answers
    authentication requests."""

    def __init__(
        self,
        config: TransportConfig,
        *,
        host_keys: Sequence[PrivateKey],
        rng: Callable[[int], bytes],
        auth_methods: tuple[str, ...] = ("publickey",),
    ) -> None:
        super().__init__(
            lambda events: Transport(
                config, is_client=False, rng=rng, deliver=self._deliver, events=events, host_keys=host_keys
            )
        )
        self._auth_methods = auth_methods
        self.service_accepted = False

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
            self._transport.send(encode_byte(MsgType.SERVICE_ACCEPT) + encode_string(USERAUTH))
        elif msg == MsgType.USERAUTH_REQUEST and self.service_accepted:
            self._on_userauth_request(payload)
        elif 50 <= msg <= 127 or msg in _SERVER_ONLY:
            # Connection-layer messages before authentication (CVE-2018-7750,
            # CVE-2025-32433) and messages only a server may send
            # (CVE-2018-10933) end the connection.
            raise RemoteProtocolError(f"unexpected message {msg} before authentication")
        else:
            self._transport.send_unimplemented()

    def _on_userauth_request(self, payload: bytes) -> None:
        # RFC 4252 §5: decode the common fields; every method is refused
        # until an authentication method is configured.
        r = Reader(payload, 1)
        r.text(1024)  # user name
        r.ascii(64)  # service name
        r.ascii(64)  # method name
        self._transport.send(
            encode_byte(MsgType.USERAUTH_FAILURE) + encode_namelist(self._auth_methods) + encode_bool(False)
        )
