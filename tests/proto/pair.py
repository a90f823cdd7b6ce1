"""ConnectionPair: a client core wired to a server core in memory, no sockets."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TypeVar

from hashike.keys.keypair import generate_private_key
from hashike.proto.certs import Certificate
from hashike.proto.config import TransportConfig
from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.events import Event, HostKeyReceived
from hashike.proto.hostkey import PrivateKey

_KEYS: dict[str, PrivateKey] = {}
_E = TypeVar("_E")

# One key of each type a server can hold; RSA serves both rsa-sha2-512 and rsa-sha2-256.
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)


def host_key(key_type: str = "ssh-ed25519") -> PrivateKey:
    """One cached key per type: RSA generation is slow."""
    if key_type not in _KEYS:
        _KEYS[key_type] = generate_private_key(key_type)
    return _KEYS[key_type]


def all_host_keys() -> tuple[PrivateKey, ...]:
    """One cached host key of every supported type."""
    return tuple(host_key(t) for t in HOST_KEY_TYPES)


def events_of(events: Iterable[object], kind: type[_E]) -> list[_E]:
    """The events of one type, in order."""
    return [e for e in events if isinstance(e, kind)]


class ConnectionPair:
    def __init__(
        self,
        client_config: TransportConfig | None = None,
        server_config: TransportConfig | None = None,
        host_keys: tuple[PrivateKey, ...] | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        accept_host_key: bool = True,
        host_certificates: tuple[Certificate, ...] = (),
    ) -> None:
        self.client = ClientConnection(client_config or TransportConfig(), rng=rng)
        self.server = ServerConnection(
            server_config or TransportConfig(),
            host_keys=host_keys or (host_key(),),
            rng=rng,
            host_certificates=host_certificates,
        )
        self.accept = accept_host_key
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []

    def pump(self, rounds: int = 50) -> None:
        """Move bytes both ways until both sides are quiet."""
        for _ in range(rounds):
            c2s = self.client.data_to_send()
            s2c = self.server.data_to_send()
            if not c2s and not s2c:
                return
            if c2s:
                self.server.receive_data(c2s)
            if s2c:
                self.client.receive_data(s2c)
            self._collect()
        raise AssertionError("connection pair did not settle")

    def _collect(self) -> None:
        for event in self.client.events_received():
            self.client_events.append(event)
            if isinstance(event, HostKeyReceived) and self.accept:
                self.client.accept_host_key()
        self.server_events.extend(self.server.events_received())
