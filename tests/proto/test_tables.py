"""Every (state, message number) pair of the core's dispatch tables, walked.

A :class:`Target` is one state of one table: ``drive`` builds a fresh core,
brings it into that state, and has a raw peer send it one payload. The
verdict is the same for every table:

- nothing but an :class:`SSHError` is ever raised inside the core, so nothing
  escapes ``receive_data``;
- a pair the table does not list ends in DISCONNECT, PROTOCOL_ERROR, with the
  reason that state gives for that message;
- a listed pair is handled: the connection goes on, or the handler ends it
  (an undecodable payload, say) with a reason of its own;
- whenever the core ends the connection, the DISCONNECT it sent carries the
  reason and description of its Disconnected event.

Targets: the transport's table in each phase and state a peer can reach
(:mod:`hashike.proto.transport`), and the client's and server's user
authentication tables (:mod:`hashike.proto.auth`). Each walks all 256 message
numbers once with a bare payload, then random payloads with hypothesis. A
table for another layer (the channel states, say) joins by adding its targets
to :data:`TARGETS`.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashike.proto.auth import _CLIENT_TABLE, _SERVER_TABLE, ClientState, ServerState
from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.events import Disconnected, Event, PasswordAuthRequested
from hashike.proto.transport import _TABLES
from hashike.proto.transport_states import Phase, State
from hashike.proto.wire import Reader, encode_byte
from tests.proto.authkit import (
    RawClient,
    RawServer,
    info_request,
    kbdint_request,
    password_request,
    user_key,
)
from tests.proto.pair import events_of
from tests.proto.rawpeer import RawPeer, new_client, new_server, pump, raw_for

Connection = ClientConnection | ServerConnection
ROLES = ("client", "server")
RANDOM = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Outcome(NamedTuple):
    events: list[Event]  # the core's, from the start
    received: list[bytes]  # every payload the raw peer got from the core


@dataclass(frozen=True)
class Target:
    """One state of one table."""

    name: str
    drive: Callable[[bytes], Outcome]  # a fresh core in this state, sent one payload
    routes: range  # the message numbers that reach this table
    listed: Callable[[int], bool]  # is (this state, message) in the table?
    refusal: Callable[[int], str]  # the DISCONNECT description for a pair not in it


def _listed(table: Container[tuple[object, int]], state: object, msg: int) -> bool:
    return (state, msg) in table


def exchange(raw: RawPeer, conn: Connection, events: list[Event]) -> Outcome:
    """Move bytes both ways until both are quiet; the core's DISCONNECT too
    reaches the raw peer, so that the test can read it."""
    return Outcome(pump(raw, conn, events, feed_disconnect=True), raw.received)


def _disconnect_sent(payload: bytes) -> tuple[int, str]:
    r = Reader(payload, 1)
    reason = r.uint32()
    description = r.string().decode()
    r.string()
    r.check_end()
    return reason, description


def judge(target: Target, msg: int, outcome: Outcome) -> None:
    ours = [e for e in events_of(outcome.events, Disconnected) if not e.by_peer]
    sent = [_disconnect_sent(p) for p in outcome.received if p[0] == MsgType.DISCONNECT]
    if ours:
        (disconnected,) = ours
        assert disconnected.description
        assert disconnected.reason in DisconnectReason.__members__.values()
        assert sent == [(disconnected.reason, disconnected.description)]
    else:
        assert not sent
    if msg in target.routes and not target.listed(msg):
        assert ours, f"{target.name}: message {msg} is not in the table but was not refused"
        assert (ours[0].reason, ours[0].description) == (DisconnectReason.PROTOCOL_ERROR, target.refusal(msg))


# ============================================================== transport

KEX_STATES = (State.KEXINIT_SENT, State.AWAIT_ECDH, State.AWAIT_NEWKEYS)
GENERIC = (MsgType.IGNORE, MsgType.DEBUG, MsgType.UNIMPLEMENTED)  # RFC 4253 §11


def transport_rule(is_client: bool, phase: Phase, state: State, msg: int) -> bool:
    """What RFC 4253 §7.1 and §11, RFC 8308 and PROTOCOL §1.9-1.10 let the
    peer send, restated from the RFCs rather than from the table."""
    open_ = phase is Phase.ESTABLISHED and state is State.OPEN
    if msg == MsgType.DISCONNECT:
        return state in KEX_STATES or open_
    if 20 <= msg <= 49:
        if open_:
            return msg == MsgType.KEXINIT  # the peer starts a rekey
        # The server takes every kex-method message in AWAIT_ECDH: after a
        # wrong guess the first one is skipped (RFC 4253 §7).
        awaited = {
            State.KEXINIT_SENT: {MsgType.KEXINIT},
            State.AWAIT_ECDH: {MsgType.KEX_ECDH_REPLY} if is_client else set(range(30, 50)),
            State.AWAIT_NEWKEYS: {MsgType.NEWKEYS},
        }
        return msg in awaited.get(state, set())
    if phase is Phase.ESTABLISHED:
        # A rekey we started: the peer may not have seen our KEXINIT yet.
        if open_ or state is State.KEXINIT_SENT:
            return True
        # The peer is inside its own exchange. §7.1 allows it only 1-49, but
        # OpenSSH's kex takes over only those and lets the connection layer
        # have the rest, and PuTTY relies on it (CHANNEL_CLOSE between its
        # KEX_ECDH_INIT and NEWKEYS). What stays refused: SERVICE_REQUEST and
        # SERVICE_ACCEPT, which §7.1 forbids even among 1-19, and EXT_INFO,
        # which RFC 8308 §2.4 allows only right after a first NEWKEYS or
        # before USERAUTH_SUCCESS.
        inside = (MsgType.SERVICE_REQUEST, MsgType.SERVICE_ACCEPT, MsgType.EXT_INFO)
        return state in KEX_STATES and msg not in inside
    return phase is Phase.INITIAL and state in KEX_STATES and msg in GENERIC


@pytest.mark.parametrize("is_client", [True, False], ids=ROLES)
@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.value)
def test_transport_table_is_the_rules(is_client: bool, phase: Phase) -> None:
    table = _TABLES[is_client, phase]
    for state in State:
        for msg in range(256):
            assert ((state, msg) in table) == transport_rule(is_client, phase, state, msg), (state, msg)
    assert all(0 <= msg <= 255 for _, msg in table)


def transport_refusal(phase: Phase, state: State, msg: int) -> str:
    if 20 <= msg <= 49:
        if state is State.OPEN:
            return f"unexpected key exchange message {msg}"
        return f"unexpected key exchange message {msg} in state {state.value}"
    if phase is Phase.STRICT:
        return f"strict kex: unexpected message {msg} during initial key exchange"
    if phase is Phase.INITIAL:
        return f"unexpected message {msg} before the first key exchange completed"
    return f"unexpected message {msg} during key exchange"


def _at(conn: Connection, phase: Phase, state: State) -> None:
    assert (conn.transport._phase, conn.transport.state) == (phase, state)


def _send_now(raw: RawPeer, conn: Connection, payload: bytes, phase: Phase, state: State) -> None:
    """Deliver what the raw peer has written so far, then ``payload`` on its own."""
    conn.receive_data(raw.data_to_send())
    _at(conn, phase, state)
    raw.send(payload)
    conn.receive_data(raw.data_to_send())


def _drive_transport(role: str, phase: Phase, state: State, payload: bytes) -> Outcome:
    conn = new_client() if role == "client" else new_server()
    raw = raw_for(conn, strict=phase is not Phase.INITIAL)
    events: list[Event] = []
    if phase is Phase.ESTABLISHED:
        pump(raw, conn, events)
        _at(conn, phase, State.OPEN)
    if state is State.AWAIT_NEWKEYS:
        # The payload goes out right before the raw peer's NEWKEYS, so it
        # arrives once the core has sent its own and waits for the peer's.
        def before_newkeys() -> None:
            _send_now(raw, conn, payload, phase, state)

        raw.before_newkeys = before_newkeys
        if phase is Phase.ESTABLISHED:
            raw.send_kexinit()
        return exchange(raw, conn, events)
    if state is State.KEXINIT_SENT:
        if phase is Phase.ESTABLISHED:
            conn.start_rekey()  # and the peer has not answered yet
        else:
            raw.auto_kexinit = False  # its version line only
    elif state is State.AWAIT_ECDH:
        raw.hold_ecdh = True  # a raw client; a raw server answers only ECDH_INIT
        if phase is Phase.ESTABLISHED:
            raw.send_kexinit()
        else:
            raw.receive_data(conn.data_to_send())  # our version and KEXINIT: it sends its own
    _send_now(raw, conn, payload, phase, state)
    return exchange(raw, conn, events)


def _transport_targets() -> list[Target]:
    reachable = [
        (Phase.INITIAL, State.KEXINIT_SENT),
        (Phase.INITIAL, State.AWAIT_ECDH),
        (Phase.INITIAL, State.AWAIT_NEWKEYS),
        (Phase.STRICT, State.AWAIT_ECDH),  # strict is known from the peer's KEXINIT on
        (Phase.STRICT, State.AWAIT_NEWKEYS),
        (Phase.ESTABLISHED, State.OPEN),
        (Phase.ESTABLISHED, State.KEXINIT_SENT),
        (Phase.ESTABLISHED, State.AWAIT_ECDH),
        (Phase.ESTABLISHED, State.AWAIT_NEWKEYS),
    ]
    return [
        Target(
            name=f"transport/{role}/{phase.value}/{state.value}",
            drive=partial(_drive_transport, role, phase, state),
            routes=range(256),
            listed=partial(_listed, _TABLES[role == "client", phase], state),
            refusal=partial(transport_refusal, phase, state),
        )
        for role in ROLES
        for phase, state in reachable
    ]


# ======================================================== user authentication

AUTH_MESSAGES = range(50, 80)  # RFC 4250 §4.1.2
KEY = user_key()


def client_auth_refusal(state: ClientState, msg: int) -> str:
    if msg in (MsgType.USERAUTH_REQUEST, MsgType.USERAUTH_INFO_RESPONSE):
        return f"server sent message {msg}, which only a client may send"
    if state is ClientState.WAIT_SERVICE:
        return f"authentication message {msg} before the ssh-userauth service was accepted"
    if msg == MsgType.USERAUTH_SUCCESS:
        return "USERAUTH_SUCCESS while no authentication request was outstanding"
    return f"unexpected authentication message {msg} in state {state.value}"


def server_auth_refusal(state: ServerState, msg: int) -> str:
    if msg in (51, 52, 53, 60):  # RFC 4252 §5-7: only a server sends these
        return f"client sent message {msg}, which only a server may send"
    if state is ServerState.WAIT_SERVICE:
        return f"authentication message {msg} before the ssh-userauth service was accepted"
    if state is ServerState.DECIDING and msg == MsgType.USERAUTH_REQUEST:
        return "authentication request while the previous one is still being decided"
    return f"unexpected authentication message {msg} in state {state.value}"


def _client_in(state: ClientState) -> tuple[ClientConnection, RawPeer, list[Event]]:
    """A client core in ``state``, facing a raw server."""
    if state is ClientState.WAIT_SERVICE:
        conn = new_client()
        raw = raw_for(conn)
        events = pump(raw, conn)  # it asked for ssh-userauth; no answer yet
        return conn, raw, events
    peer = RawServer()
    client, raw = peer.client, peer.raw
    public, alg = KEY.public_key, "ssh-ed25519"
    if state is ClientState.SIGNING:
        client.auth_publickey_sign("alice", public, alg)
    elif state is ClientState.NONE_SENT:
        client.auth_none("alice")
    elif state is ClientState.QUERY_SENT:
        client.auth_publickey_query("alice", public, alg)
    elif state is ClientState.PUBLICKEY_SENT:
        client.auth_publickey_signed(KEY.sign(client.auth_publickey_sign("alice", public, alg), alg))
    elif state is ClientState.PASSWORD_SENT:
        client.auth_password("alice", "secret")
    elif state in (ClientState.KBDINT_SENT, ClientState.KBDINT_PROMPTED):
        client.auth_keyboard_interactive("alice")
        if state is ClientState.KBDINT_PROMPTED:
            peer.send(info_request((("Password: ", False),)))
    elif state is ClientState.AUTHENTICATED:
        client.auth_password("alice", "secret")
        peer.send(encode_byte(MsgType.USERAUTH_SUCCESS))
    peer.pump()
    return client, raw, peer.events


def _server_in(state: ServerState) -> tuple[ServerConnection, RawPeer, list[Event]]:
    """A server core in ``state``, facing a raw client."""
    peer = RawClient(
        service=state is not ServerState.WAIT_SERVICE, auth_methods=("password", "keyboard-interactive")
    )
    if state in (ServerState.DECIDING, ServerState.AUTHENTICATED):
        peer.send(password_request("alice", "secret"))
        assert events_of(peer.events, PasswordAuthRequested)
        if state is ServerState.AUTHENTICATED:
            peer.server.accept_auth()
            peer.pump()
    elif state is ServerState.KBDINT_PROMPTED:
        peer.send(kbdint_request("alice"))
    return peer.server, peer.raw, peer.events


def _drive_client_auth(state: ClientState, payload: bytes) -> Outcome:
    conn, raw, events = _client_in(state)
    assert conn._auth.state is state
    raw.send(payload)
    return exchange(raw, conn, events)


def _drive_server_auth(state: ServerState, payload: bytes) -> Outcome:
    conn, raw, events = _server_in(state)
    assert conn._auth.state is state
    raw.send(payload)
    return exchange(raw, conn, events)


def _auth_targets() -> list[Target]:
    client = [
        Target(
            name=f"auth/client/{state.value}",
            drive=partial(_drive_client_auth, state),
            routes=AUTH_MESSAGES,
            listed=partial(_listed, _CLIENT_TABLE, state),
            refusal=partial(client_auth_refusal, state),
        )
        for state in ClientState
    ]
    server = [
        Target(
            name=f"auth/server/{state.value}",
            drive=partial(_drive_server_auth, state),
            routes=AUTH_MESSAGES,
            listed=partial(_listed, _SERVER_TABLE, state),
            refusal=partial(server_auth_refusal, state),
        )
        for state in ServerState
    ]
    return client + server


# ================================================================== the walk

# Another table joins with a function like _auth_targets(): one Target per
# state, with the message numbers that reach that table.
TARGETS = [*_transport_targets(), *_auth_targets()]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_every_message_number(target: Target) -> None:
    for msg in range(256):
        judge(target, msg, target.drive(bytes([msg])))


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
@RANDOM
@given(msg=st.integers(0, 255), body=st.binary(max_size=96))
def test_random_payloads(target: Target, msg: int, body: bytes) -> None:
    judge(target, msg, target.drive(bytes([msg]) + body))
