"""Helpers for the user authentication tests: peers that have reached ssh-userauth.

:class:`RawClient` is a hand-driven client (a RawPeer) talking to a real
ServerConnection; :class:`RawServer` is a hand-driven server talking to a real
ClientConnection; :func:`auth_pair` is a ConnectionPair whose server takes
authentication options. All three stop right after SERVICE_ACCEPT, with
their inboxes and event lists emptied. The ``*_request`` functions build
RFC 4252 messages by hand, so tests can bend any field.
"""

from __future__ import annotations

import os
from typing import Any

from hashike.keys.keypair import generate_private_key
from hashike.proto.auth import publickey_signed_data
from hashike.proto.config import TransportConfig
from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import MsgType
from hashike.proto.events import Disconnected, Event, ServiceAccepted
from hashike.proto.hostkey import PrivateKey, PublicKey
from hashike.proto.wire import encode_bool, encode_byte, encode_namelist, encode_string, encode_uint32
from tests.proto.pair import ConnectionPair, events_of, host_key
from tests.proto.rawpeer import RawPeer, pump

__all__ = [
    "RawClient",
    "RawServer",
    "auth_pair",
    "logged_in",
    "failure",
    "info_request",
    "info_response",
    "kbdint_request",
    "password_request",
    "publickey_request",
    "request",
    "service_request",
    "signed_publickey_request",
    "user_key",
]

_USER_KEYS: dict[str, PrivateKey] = {}


def user_key(key_type: str = "ssh-ed25519", slot: int = 0) -> PrivateKey:
    """Cached user keys, distinct from the host keys; ``slot`` gives more of a type."""
    name = f"{key_type}/{slot}"
    if name not in _USER_KEYS:
        _USER_KEYS[name] = generate_private_key(key_type)
    return _USER_KEYS[name]


# ------------------------------------------------------------------ messages


def service_request(name: str = "ssh-userauth") -> bytes:
    return encode_byte(MsgType.SERVICE_REQUEST) + encode_string(name)


def request(user: str | bytes, method: str, fields: bytes = b"", service: str = "ssh-connection") -> bytes:
    """RFC 4252 §5 SSH_MSG_USERAUTH_REQUEST."""
    return (
        encode_byte(MsgType.USERAUTH_REQUEST)
        + encode_string(user)
        + encode_string(service)
        + encode_string(method)
        + fields
    )


def publickey_request(
    user: str, key: PublicKey | bytes, algorithm: str, signature: bytes | None = None
) -> bytes:
    """RFC 4252 §7, with or without a signature blob."""
    blob = key.blob if isinstance(key, PublicKey) else key
    fields = encode_bool(signature is not None) + encode_string(algorithm) + encode_string(blob)
    if signature is not None:
        fields += encode_string(signature)
    return request(user, "publickey", fields)


def signed_publickey_request(
    session_id: bytes, user: str, key: PrivateKey, algorithm: str, *, sign_as: str | None = None
) -> bytes:
    """A correctly signed request; ``sign_as`` signs for another user name."""
    data = publickey_signed_data(session_id, sign_as or user, algorithm, key.public_key.blob)
    return publickey_request(user, key.public_key, algorithm, key.sign(data, algorithm))


def password_request(user: str, password: str | bytes, new_password: str | bytes | None = None) -> bytes:
    fields = encode_bool(new_password is not None) + encode_string(password)
    if new_password is not None:
        fields += encode_string(new_password)
    return request(user, "password", fields)


def kbdint_request(user: str, submethods: str = "") -> bytes:
    return request(user, "keyboard-interactive", encode_string(b"") + encode_string(submethods))


def info_response(*answers: str | bytes, count: int | None = None) -> bytes:
    """RFC 4256 §3.4; ``count`` overrides num-responses."""
    n = len(answers) if count is None else count
    return (
        encode_byte(MsgType.USERAUTH_INFO_RESPONSE)
        + encode_uint32(n)
        + b"".join(encode_string(a) for a in answers)
    )


def info_request(
    prompts: tuple[tuple[str, bool], ...], name: str = "", instruction: str = "", count: int | None = None
) -> bytes:
    """RFC 4256 §3.2, sent by a raw server."""
    n = len(prompts) if count is None else count
    return (
        encode_byte(MsgType.USERAUTH_INFO_REQUEST)
        + encode_string(name)
        + encode_string(instruction)
        + encode_string(b"")
        + encode_uint32(n)
        + b"".join(encode_string(p) + encode_bool(e) for p, e in prompts)
    )


def failure(methods: tuple[str, ...] = ("publickey",), partial: bool = False) -> bytes:
    return encode_byte(MsgType.USERAUTH_FAILURE) + encode_namelist(methods) + encode_bool(partial)


# --------------------------------------------------------------------- peers


class RawClient:
    """A RawPeer client that has been granted ssh-userauth by a real server."""

    def __init__(self, *, service: bool = True, **server_options: Any) -> None:
        self.server = ServerConnection(
            TransportConfig(), host_keys=(host_key(),), rng=os.urandom, **server_options
        )
        self.raw = RawPeer(is_client=True)
        self.events: list[Event] = []
        pump(self.raw, self.server, self.events)
        if service:
            self.raw.send(service_request())
            pump(self.raw, self.server, self.events)
            assert self.raw.inbox[-1] == encode_byte(MsgType.SERVICE_ACCEPT) + encode_string("ssh-userauth")
        self.raw.inbox.clear()
        self.events.clear()

    @property
    def session_id(self) -> bytes:
        assert self.raw.session_id is not None
        return self.raw.session_id

    def send(self, *payloads: bytes) -> list[bytes]:
        """Send payloads in one write, pump, and return what the server sent back."""
        for payload in payloads:
            self.raw.send(payload)
        return self.pump()

    def pump(self) -> list[bytes]:
        pump(self.raw, self.server, self.events)
        replies, self.raw.inbox[:] = list(self.raw.inbox), []
        return replies

    def take_events(self) -> list[Event]:
        events, self.events[:] = list(self.events), []
        return events

    def disconnected(self) -> Disconnected:
        """The server's Disconnected event (it must have ended the connection)."""
        self.pump()
        found = events_of(self.events, Disconnected)
        assert found, self.events
        return found[-1]


class RawServer:
    """A RawPeer server that has granted ssh-userauth to a real client."""

    def __init__(self, **raw_options: Any) -> None:
        self.client = ClientConnection(TransportConfig(), rng=os.urandom)
        self.raw = RawPeer(is_client=False, host_key=host_key(), **raw_options)
        self.events: list[Event] = []
        pump(self.raw, self.client, self.events)
        assert self.raw.inbox[-1] == service_request(), self.raw.inbox
        self.raw.send(encode_byte(MsgType.SERVICE_ACCEPT) + encode_string("ssh-userauth"))
        pump(self.raw, self.client, self.events)
        assert events_of(self.events, ServiceAccepted), self.events
        self.raw.inbox.clear()
        self.events.clear()

    def pump(self) -> list[bytes]:
        """Pump, and return what the client sent."""
        pump(self.raw, self.client, self.events)
        sent, self.raw.inbox[:] = list(self.raw.inbox), []
        return sent

    def send(self, *payloads: bytes) -> list[Event]:
        """Send payloads from the server and return the client's new events."""
        for payload in payloads:
            self.raw.send(payload)
        pump(self.raw, self.client, self.events)
        return self.take_events()

    def take_events(self) -> list[Event]:
        events, self.events[:] = list(self.events), []
        return events


def auth_pair(**server_options: Any) -> ConnectionPair:
    """A ConnectionPair through SERVICE_ACCEPT, its server built with ``server_options``."""
    pair = ConnectionPair()
    pair.server = ServerConnection(
        TransportConfig(), host_keys=(host_key(),), rng=os.urandom, **server_options
    )
    pair.pump()
    assert events_of(pair.client_events, ServiceAccepted), pair.client_events
    pair.client_events.clear()
    pair.server_events.clear()
    return pair


def logged_in() -> ConnectionPair:
    """A ConnectionPair with the client authenticated (by password) and no events left."""
    pair = auth_pair(auth_methods=("password",))
    pair.client.auth_password("alice", "pw")
    pair.pump()
    pair.server.accept_auth()
    pair.pump()
    assert pair.client.authenticated and pair.server.authenticated
    pair.client_events.clear()
    pair.server_events.clear()
    return pair
