"""The client's user authentication state machine (RFC 4252, RFC 4256): against
a real ServerConnection (auth_pair) and a hand-driven server (RawServer)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashike.keys.authorized_keys import KeyOptions
from hashike.proto.auth import publickey_signed_data
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.errors import LocalProtocolError
from hashike.proto.events import (
    AuthBanner,
    AuthFailed,
    AuthPrompts,
    AuthSucceeded,
    Disconnected,
    PasswordAuthRequested,
    PublicKeyAccepted,
    PublicKeyAuthRequested,
)
from hashike.proto.wire import Reader, encode_bool, encode_byte, encode_string, encode_uint32
from tests.proto.authkit import (
    RawServer,
    auth_pair,
    failure,
    info_request,
    password_request,
    request,
    user_key,
)
from tests.proto.pair import ConnectionPair, events_of

SUCCESS = encode_byte(MsgType.USERAUTH_SUCCESS)
ALL = ("publickey", "password", "keyboard-interactive")

KEY_ALGORITHMS = [
    ("ssh-ed25519", "ssh-ed25519"),
    ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256"),
    ("ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384"),
    ("ecdsa-sha2-nistp521", "ecdsa-sha2-nistp521"),
    ("ssh-rsa", "rsa-sha2-256"),
    ("ssh-rsa", "rsa-sha2-512"),
]


def last_server_event(pair: ConnectionPair) -> object:
    assert pair.server_events, "the server asked nothing"
    return pair.server_events.pop()


def disconnect_of(events: list[object]) -> Disconnected:
    found = events_of(events, Disconnected)
    assert found, events
    return found[-1]


# ------------------------------------------------------- wrong moments


def test_commands_before_the_service_is_accepted_are_refused() -> None:
    pair = ConnectionPair(accept_host_key=False)
    with pytest.raises(LocalProtocolError, match="ssh-userauth"):
        pair.client.auth_none("alice")
    pair.pump()  # kex done, host key not accepted: no service request yet
    assert pair.client.transport.session_id is not None
    for command in (
        lambda: pair.client.auth_none("alice"),
        lambda: pair.client.auth_password("alice", "x"),
        lambda: pair.client.auth_keyboard_interactive("alice"),
        lambda: pair.client.auth_publickey_query("alice", user_key().public_key, "ssh-ed25519"),
        lambda: pair.client.auth_publickey_sign("alice", user_key().public_key, "ssh-ed25519"),
    ):
        with pytest.raises(LocalProtocolError, match="ssh-userauth"):
            command()
    assert pair.client.data_to_send() == b""


def test_command_while_a_request_is_outstanding_is_refused() -> None:
    pair = auth_pair()
    pair.client.auth_none("alice")
    with pytest.raises(LocalProtocolError, match="waiting"):
        pair.client.auth_password("alice", "x")
    with pytest.raises(LocalProtocolError):
        pair.client.answer_prompts([])
    with pytest.raises(LocalProtocolError):
        pair.client.auth_publickey_signed(b"sig")
    pair.pump()
    assert pair.client_events == [AuthFailed(methods=("publickey",), partial_success=False)]
    pair.client.auth_none("alice")  # answered: the next request may go


def test_commands_after_close_are_refused() -> None:
    pair = auth_pair()
    pair.client.close()
    with pytest.raises(LocalProtocolError, match="closed"):
        pair.client.auth_none("alice")


def test_local_limits() -> None:
    pair = auth_pair(auth_methods=ALL)
    with pytest.raises(LocalProtocolError, match="1024"):
        pair.client.auth_password("alice", "x" * 1025)
    with pytest.raises(LocalProtocolError):
        pair.client.auth_none("u" * 1025)
    with pytest.raises(LocalProtocolError):
        pair.client.auth_password("alice", "\udcff")  # lone surrogate: not encodable
    assert pair.client.data_to_send() == b""
    pair.client.auth_password("alice", "é" * 512)  # exactly 1 KiB is fine


# ------------------------------------------------------------- none


def test_none_reports_methods() -> None:
    pair = auth_pair(auth_methods=ALL)
    pair.client.auth_none("alice")
    pair.pump()
    assert pair.client_events == [AuthFailed(methods=ALL, partial_success=False)]
    assert not pair.client.authenticated


def test_none_accepted_by_a_raw_server() -> None:
    s = RawServer()
    s.client.auth_none("guest")
    assert s.pump() == [request("guest", "none")]
    assert s.send(SUCCESS) == [AuthSucceeded(username="guest", method="none")]
    assert s.client.authenticated


# -------------------------------------------------------- publickey


@pytest.mark.parametrize(("key_type", "algorithm"), KEY_ALGORITHMS)
def test_publickey_query_then_sign(key_type: str, algorithm: str) -> None:
    pair = auth_pair()
    key = user_key(key_type)
    pair.client.auth_publickey_query("alice", key.public_key, algorithm)
    pair.pump()
    assert last_server_event(pair) == PublicKeyAuthRequested(
        username="alice", key=key.public_key, algorithm=algorithm, signed=False
    )
    pair.server.accept_auth()
    pair.pump()
    assert pair.client_events == [PublicKeyAccepted(key=key.public_key, algorithm=algorithm)]
    pair.client_events.clear()

    data = pair.client.auth_publickey_sign("alice", key.public_key, algorithm)
    pair.client.auth_publickey_signed(key.sign(data, algorithm))
    pair.pump()
    assert last_server_event(pair) == PublicKeyAuthRequested(
        username="alice", key=key.public_key, algorithm=algorithm, signed=True
    )
    policy = KeyOptions(restrict=True, port_forwarding=False)
    pair.server.accept_auth(policy)
    pair.pump()
    assert pair.client_events == [AuthSucceeded(username="alice", method="publickey")]
    assert pair.client.authenticated and pair.server.authenticated
    assert pair.server.auth_policy is policy
    assert pair.server_events == [AuthSucceeded(username="alice", method="publickey", policy=policy)]


def test_signed_data_is_rfc4252_section_7() -> None:
    pair = auth_pair()
    key = user_key()
    data = pair.client.auth_publickey_sign("alice", key.public_key, "ssh-ed25519")
    sid = pair.client.transport.session_id
    assert sid is not None
    r = Reader(data)
    assert r.string() == sid
    assert r.byte() == 50
    assert r.string() == b"alice"
    assert r.string() == b"ssh-connection"
    assert r.string() == b"publickey"
    assert r.byte() == 1
    assert r.string() == b"ssh-ed25519"
    assert r.string() == key.public_key.blob
    r.check_end()
    assert data == publickey_signed_data(sid, "alice", "ssh-ed25519", key.public_key.blob)
    assert pair.client.data_to_send() == b""  # nothing is sent before the signature


def test_signed_request_on_the_wire() -> None:
    s = RawServer()
    key = user_key()
    data = s.client.auth_publickey_sign("alice", key.public_key, "ssh-ed25519")
    signature = key.sign(data, "ssh-ed25519")
    s.client.auth_publickey_signed(signature)
    sid = s.raw.session_id
    assert sid is not None
    assert s.pump() == [data[4 + len(sid) :] + encode_string(signature)]


def test_publickey_rejected_signed() -> None:
    pair = auth_pair()
    key = user_key()
    data = pair.client.auth_publickey_sign("alice", key.public_key, "ssh-ed25519")
    pair.client.auth_publickey_signed(key.sign(data, "ssh-ed25519"))
    pair.pump()
    pair.server.reject_auth()
    pair.pump()
    assert pair.client_events == [AuthFailed(methods=("publickey",), partial_success=False)]


def test_the_signing_step_can_be_abandoned() -> None:
    # The agent may refuse to sign: the runtime tries something else.
    pair = auth_pair()
    pair.client.auth_publickey_sign("alice", user_key().public_key, "ssh-ed25519")
    pair.client.auth_none("alice")
    pair.pump()
    assert pair.client_events == [AuthFailed(methods=("publickey",), partial_success=False)]
    with pytest.raises(LocalProtocolError):
        pair.client.auth_publickey_signed(b"late")


def test_signed_without_sign_is_refused() -> None:
    pair = auth_pair()
    with pytest.raises(LocalProtocolError, match="auth_publickey_sign"):
        pair.client.auth_publickey_signed(b"sig")


def test_bad_local_signature_is_caught_before_sending() -> None:
    pair = auth_pair()
    key = user_key()
    data = pair.client.auth_publickey_sign("alice", key.public_key, "ssh-ed25519")
    good = key.sign(data, "ssh-ed25519")
    flipped = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(LocalProtocolError, match="not a valid"):
        pair.client.auth_publickey_signed(flipped)
    assert pair.client.data_to_send() == b""
    pair.client.auth_publickey_signed(good)  # still in the signing step


def test_signature_of_another_rsa_algorithm_is_refused() -> None:
    # An agent that ignores the SHA-2 flags signs with another algorithm.
    pair = auth_pair()
    key = user_key("ssh-rsa")
    data = pair.client.auth_publickey_sign("alice", key.public_key, "rsa-sha2-256")
    with pytest.raises(LocalProtocolError):
        pair.client.auth_publickey_signed(key.sign(data, "rsa-sha2-512"))


@pytest.mark.parametrize(
    ("key_type", "algorithm"),
    [("ssh-rsa", "ssh-rsa"), ("ssh-ed25519", "rsa-sha2-256"), ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384")],
)
def test_algorithm_must_suit_the_key(key_type: str, algorithm: str) -> None:
    pair = auth_pair()
    key = user_key(key_type).public_key
    with pytest.raises(LocalProtocolError):
        pair.client.auth_publickey_query("alice", key, algorithm)
    with pytest.raises(LocalProtocolError):
        pair.client.auth_publickey_sign("alice", key, algorithm)
    assert pair.client.data_to_send() == b""


@pytest.mark.parametrize("what", ["algorithm", "key"])
def test_pk_ok_must_echo_our_query(what: str) -> None:
    s = RawServer()
    key, other = user_key(slot=0), user_key(slot=1)
    s.client.auth_publickey_query("alice", key.public_key, "ssh-ed25519")
    s.pump()
    algorithm, blob = "ssh-ed25519", key.public_key.blob
    if what == "algorithm":
        algorithm = "ecdsa-sha2-nistp256"
    else:
        blob = other.public_key.blob
    events = s.send(encode_byte(60) + encode_string(algorithm) + encode_string(blob))
    assert disconnect_of(list(events)).reason == DisconnectReason.PROTOCOL_ERROR
    assert not events_of(events, PublicKeyAccepted)


def test_pk_ok_echo_accepted() -> None:
    s = RawServer()
    key = user_key()
    s.client.auth_publickey_query("alice", key.public_key, "ssh-ed25519")
    s.pump()
    events = s.send(encode_byte(60) + encode_string("ssh-ed25519") + encode_string(key.public_key.blob))
    assert events == [PublicKeyAccepted(key=key.public_key, algorithm="ssh-ed25519")]


def test_server_sig_algs() -> None:
    pair = auth_pair()
    algs = pair.client.server_sig_algs
    assert algs is not None
    assert "ssh-ed25519" in algs and "rsa-sha2-512" in algs and "ssh-rsa" not in algs
    assert RawServer(ext_info=False).client.server_sig_algs is None


# --------------------------------------------------------- password


def test_password_accepted() -> None:
    pair = auth_pair(auth_methods=("password",))
    pair.client.auth_password("alice", "right")
    pair.pump()
    assert last_server_event(pair) == PasswordAuthRequested(username="alice", password="right")
    pair.server.accept_auth()
    pair.pump()
    assert pair.client_events == [AuthSucceeded(username="alice", method="password")]


def test_password_rejected() -> None:
    pair = auth_pair(auth_methods=("password", "publickey"))
    pair.client.auth_password("alice", "wrong")
    pair.pump()
    pair.server.reject_auth()
    pair.pump()
    assert pair.client_events == [AuthFailed(methods=("password", "publickey"), partial_success=False)]


def test_password_on_the_wire() -> None:
    s = RawServer()
    s.client.auth_password("alice", "pässword")
    assert s.pump() == [password_request("alice", "pässword")]


def test_password_change_request_is_a_flagged_failure() -> None:
    s = RawServer()
    s.client.auth_password("alice", "old")
    s.pump()
    changereq = encode_byte(60) + encode_string("Password expired") + encode_string(b"")
    assert s.send(changereq) == [
        AuthFailed(
            methods=(), partial_success=False, password_change_requested=True, prompt="Password expired"
        )
    ]
    s.client.auth_none("alice")  # the client may go on


# ---------------------------------------------- keyboard-interactive


def test_keyboard_interactive_with_the_server_core() -> None:
    pair = auth_pair(auth_methods=("keyboard-interactive",))
    pair.client.auth_keyboard_interactive("alice")
    pair.pump()
    assert pair.client_events == [AuthPrompts(name="", instruction="", prompts=(("Password: ", False),))]
    with pytest.raises(LocalProtocolError, match="1 responses"):
        pair.client.answer_prompts([])
    with pytest.raises(LocalProtocolError):
        pair.client.auth_none("alice")  # the prompts come first
    pair.client.answer_prompts(["secret"])
    pair.pump()
    assert last_server_event(pair) == PasswordAuthRequested(
        username="alice", password="secret", method="keyboard-interactive"
    )
    pair.server.accept_auth()
    pair.pump()
    assert pair.client_events[-1] == AuthSucceeded(username="alice", method="keyboard-interactive")


def test_keyboard_interactive_request_on_the_wire() -> None:
    s = RawServer()
    s.client.auth_keyboard_interactive("alice", "pam,skey")
    assert s.pump() == [
        request("alice", "keyboard-interactive", encode_string(b"") + encode_string("pam,skey"))
    ]


def test_several_rounds_of_prompts() -> None:
    s = RawServer()
    s.client.auth_keyboard_interactive("alice")
    s.pump()
    prompts = (("Code: ", True), ("PIN: ", False))
    assert s.send(info_request(prompts, name="2FA", instruction="Enter both")) == [
        AuthPrompts(name="2FA", instruction="Enter both", prompts=prompts)
    ]
    s.client.answer_prompts(["123", "4567"])
    assert s.pump() == [encode_byte(61) + encode_uint32(2) + encode_string("123") + encode_string("4567")]
    # RFC 4256 §3.2: a round with no prompts still wants an (empty) answer.
    assert s.send(info_request(())) == [AuthPrompts(name="", instruction="", prompts=())]
    s.client.answer_prompts([])
    assert s.pump() == [encode_byte(61) + encode_uint32(0)]
    assert s.send(failure(("keyboard-interactive",))) == [
        AuthFailed(methods=("keyboard-interactive",), partial_success=False)
    ]


def test_too_many_prompts_is_a_protocol_error() -> None:
    s = RawServer()
    s.client.auth_keyboard_interactive("alice")
    s.pump()
    events = s.send(info_request((("p", False),) * 65))
    assert disconnect_of(list(events)).reason == DisconnectReason.PROTOCOL_ERROR


def test_64_prompts_are_fine() -> None:
    s = RawServer()
    s.client.auth_keyboard_interactive("alice")
    s.pump()
    [event] = s.send(info_request((("p", False),) * 64))
    assert isinstance(event, AuthPrompts) and len(event.prompts) == 64


def test_prompt_count_beyond_the_data_is_a_protocol_error() -> None:
    s = RawServer()
    s.client.auth_keyboard_interactive("alice")
    s.pump()
    events = s.send(info_request((("p", False),), count=3))
    assert disconnect_of(list(events)).reason == DisconnectReason.PROTOCOL_ERROR


def test_answer_prompts_without_prompts_is_refused() -> None:
    pair = auth_pair()
    with pytest.raises(LocalProtocolError, match="no keyboard-interactive"):
        pair.client.answer_prompts([])


# ----------------------------------------------------------- banner


def test_banner_from_the_server_core() -> None:
    pair = auth_pair(banner="Welcome\n")
    pair.client.auth_none("alice")
    pair.pump()
    assert pair.client_events == [
        AuthBanner(message="Welcome\n"),
        AuthFailed(methods=("publickey",), partial_success=False),
    ]


def banner(text: str) -> bytes:
    return encode_byte(MsgType.USERAUTH_BANNER) + encode_string(text) + encode_string(b"en")


def test_banner_at_any_time_before_success() -> None:
    s = RawServer()
    assert s.send(banner("before any request")) == [AuthBanner(message="before any request")]
    s.client.auth_keyboard_interactive("alice")
    s.pump()
    s.send(info_request((("p", False),)))
    assert s.send(banner("while prompted")) == [AuthBanner(message="while prompted")]
    s.client.answer_prompts(["x"])
    s.pump()
    assert s.send(banner("b"), SUCCESS) == [
        AuthBanner(message="b"),
        AuthSucceeded(username="alice", method="keyboard-interactive"),
    ]
    events = s.send(banner("after success"))
    assert disconnect_of(list(events)).reason == DisconnectReason.PROTOCOL_ERROR


# ------------------------------------------------ what a server may not send


def test_success_without_request_is_a_protocol_error() -> None:
    s = RawServer()
    events = s.send(SUCCESS)
    assert disconnect_of(list(events)).reason == DisconnectReason.PROTOCOL_ERROR
    assert not s.client.authenticated


def test_success_twice_is_a_protocol_error() -> None:
    s = RawServer()
    s.client.auth_none("alice")
    s.pump()
    events = s.send(SUCCESS, SUCCESS)
    assert events[0] == AuthSucceeded(username="alice", method="none")
    assert disconnect_of(list(events)).reason == DisconnectReason.PROTOCOL_ERROR


def test_failure_without_request_is_a_protocol_error() -> None:
    s = RawServer()
    events = s.send(failure())
    assert disconnect_of(list(events)).reason == DisconnectReason.PROTOCOL_ERROR


@pytest.mark.parametrize("method", ["none", "publickey-signed"])
def test_message_60_after_a_request_that_has_none_is_a_protocol_error(method: str) -> None:
    s = RawServer()
    if method == "none":
        s.client.auth_none("alice")
    else:
        key = user_key()
        s.client.auth_publickey_signed(
            key.sign(s.client.auth_publickey_sign("alice", key.public_key, "ssh-ed25519"), "ssh-ed25519")
        )
    s.pump()
    events = s.send(
        encode_byte(60) + encode_string("ssh-ed25519") + encode_string(user_key().public_key.blob)
    )
    assert disconnect_of(list(events)).reason == DisconnectReason.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "payload",
    [
        request("alice", "none"),
        encode_byte(MsgType.USERAUTH_INFO_RESPONSE) + encode_uint32(0),
        encode_byte(70),
    ],
    ids=["USERAUTH_REQUEST", "INFO_RESPONSE", "unassigned-70"],
)
def test_client_only_messages_from_the_server_are_protocol_errors(payload: bytes) -> None:
    s = RawServer()
    s.client.auth_none("alice")
    s.pump()
    events = s.send(payload)
    assert disconnect_of(list(events)).reason == DisconnectReason.PROTOCOL_ERROR


@pytest.mark.parametrize("msg", [MsgType.GLOBAL_REQUEST, MsgType.CHANNEL_OPEN, MsgType.CHANNEL_DATA, 127])
def test_connection_messages_before_success_are_protocol_errors(msg: int) -> None:
    s = RawServer()
    s.client.auth_none("alice")
    s.pump()
    events = s.send(bytes([msg]) + b"\x00" * 8)
    assert disconnect_of(list(events)).reason == DisconnectReason.PROTOCOL_ERROR


# ------------------------------------------------------ after success


def test_after_success() -> None:
    s = RawServer()
    s.client.auth_none("alice")
    s.pump()
    s.send(SUCCESS)
    with pytest.raises(LocalProtocolError, match="already authenticated"):
        s.client.auth_none("alice")
    # Connection-layer messages now reach the channel table (RFC 4254) ...
    events = s.send(encode_byte(MsgType.GLOBAL_REQUEST) + encode_string("x") + encode_bool(False))
    assert [type(e).__name__ for e in events] == ["GlobalRequestReceived"]
    # ... and the reserved rest of the range is answered UNIMPLEMENTED.
    assert s.send(encode_byte(101)) == []
    [reply] = s.pump()
    assert reply[0] == MsgType.UNIMPLEMENTED
    assert not s.client.closed


# ----------------------------------------------------------- totality

_SERVER_MESSAGES = st.one_of(
    st.sampled_from(
        [
            SUCCESS,
            failure(ALL),
            banner("hi"),
            info_request((("p", False),)),
            encode_byte(60) + encode_string("ssh-ed25519") + encode_string(user_key().public_key.blob),
        ]
    ),
    st.builds(lambda n, body: bytes([n]) + body, st.integers(50, 127), st.binary(max_size=40)),
)
_COMMANDS = st.sampled_from(["none", "password", "kbdint", "query", "sign", "answer"])


def _command(s: RawServer, name: str) -> None:
    key = user_key()
    if name == "none":
        s.client.auth_none("alice")
    elif name == "password":
        s.client.auth_password("alice", "pw")
    elif name == "kbdint":
        s.client.auth_keyboard_interactive("alice")
    elif name == "query":
        s.client.auth_publickey_query("alice", key.public_key, "ssh-ed25519")
    elif name == "sign":
        data = s.client.auth_publickey_sign("alice", key.public_key, "ssh-ed25519")
        s.client.auth_publickey_signed(key.sign(data, "ssh-ed25519"))
    else:
        s.client.answer_prompts(["x"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_COMMANDS, _SERVER_MESSAGES), max_size=10))
def test_any_interleaving_ends_in_an_event_or_a_documented_error(steps: list[tuple[str, bytes]]) -> None:
    # Commands at the wrong moment raise LocalProtocolError and change nothing;
    # any server message leaves the client in a state of the table or closed.
    s = RawServer()
    events: list[object] = []
    for name, payload in steps:
        if s.client.closed:
            break
        with contextlib.suppress(LocalProtocolError):
            _command(s, name)
        s.pump()
        events += s.send(payload)
    assert s.client.authenticated == bool(events_of(events, AuthSucceeded))
    assert len(events_of(events, AuthSucceeded)) <= 1


def test_authentication_across_a_rekey() -> None:
    # RFC 4253 §7.1: messages sent while a kex runs wait for it to end.
    pair = auth_pair(auth_methods=("password",))
    pair.client.auth_password("alice", "right")
    pair.pump()
    pair.server.start_rekey()
    pair.server.accept_auth()
    assert pair.server.transport.send_blocked  # USERAUTH_SUCCESS is queued behind the kex
    pair.pump()
    assert pair.client_events[-1] == AuthSucceeded(username="alice", method="password")
    assert pair.client.authenticated
