"""The server's user authentication state machine (RFC 4252, RFC 4256), driven
by a hand-built client (RawClient) so every field can be bent."""

from __future__ import annotations

import pytest

from hashike.keys.authorized_keys import KeyOptions
from hashike.proto.auth import publickey_signed_data
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.errors import LocalProtocolError
from hashike.proto.events import AuthSucceeded, Disconnected, PasswordAuthRequested, PublicKeyAuthRequested
from hashike.proto.hostkey import PublicKey
from hashike.proto.wire import Reader, encode_bool, encode_byte, encode_string, encode_uint32
from tests.proto.authkit import (
    RawClient,
    failure,
    info_response,
    kbdint_request,
    password_request,
    publickey_request,
    request,
    signed_publickey_request,
    user_key,
)

ALL = ("publickey", "password", "keyboard-interactive")
SUCCESS = encode_byte(MsgType.USERAUTH_SUCCESS)

# (key type, signature algorithm) for every algorithm the server accepts.
KEY_ALGORITHMS = [
    ("ssh-ed25519", "ssh-ed25519"),
    ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256"),
    ("ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384"),
    ("ecdsa-sha2-nistp521", "ecdsa-sha2-nistp521"),
    ("ssh-rsa", "rsa-sha2-256"),
    ("ssh-rsa", "rsa-sha2-512"),
]


def accept_signed(c: RawClient, payload: bytes) -> list[bytes]:
    """Send a signed public key request, accept its key as a runtime that has
    it would, and return the server's reply: the signature is verified only
    then (issue 13)."""
    assert c.send(payload) == []
    [event] = c.take_events()
    assert isinstance(event, PublicKeyAuthRequested) and event.signed
    c.server.accept_auth()
    return c.pump()


def pk_ok(algorithm: str, key: PublicKey) -> bytes:
    return encode_byte(60) + encode_string(algorithm) + encode_string(key.blob)


def password_prompt() -> bytes:
    """The INFO_REQUEST the core sends for keyboard-interactive."""
    return (
        encode_byte(MsgType.USERAUTH_INFO_REQUEST)
        + encode_string(b"")
        + encode_string(b"")
        + encode_string(b"")
        + encode_uint32(1)
        + encode_string("Password: ")
        + encode_bool(False)
    )


# ---------------------------------------------------------------- none


def test_none_lists_methods_without_event_or_count() -> None:
    # Only as the first request (issue 13 changed this: see test_auth_hardening).
    c = RawClient(auth_methods=ALL, max_auth_tries=2)
    assert c.send(request("alice", "none")) == [failure(ALL)]
    assert c.take_events() == []
    assert c.server.auth_failures == 0
    assert not c.server.closed


def test_none_with_trailing_bytes_is_a_protocol_error() -> None:
    c = RawClient()
    c.send(request("alice", "none", b"\x00"))
    assert c.server.closed
    assert c.disconnected().reason == DisconnectReason.PROTOCOL_ERROR


def test_method_not_offered_fails_without_event_and_counts() -> None:
    c = RawClient(auth_methods=("publickey",))
    assert c.send(password_request("alice", "secret")) == [failure(("publickey",))]
    assert c.send(request("alice", "hostbased", b"whatever")) == [failure(("publickey",))]
    assert c.take_events() == []
    assert c.server.auth_failures == 2


def test_methods_are_listed_in_configured_order() -> None:
    c = RawClient(auth_methods=("keyboard-interactive", "publickey"))
    assert c.send(request("alice", "none")) == [failure(("keyboard-interactive", "publickey"))]


@pytest.mark.parametrize(
    "options",
    [{"auth_methods": ("publickey", "gssapi-with-mic")}, {"max_auth_tries": 0}],
)
def test_bad_server_configuration_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RawClient(**options)  # type: ignore[arg-type]


# ---------------------------------------------------------- publickey


@pytest.mark.parametrize(("key_type", "algorithm"), KEY_ALGORITHMS)
def test_publickey_query_then_signed(key_type: str, algorithm: str) -> None:
    c = RawClient()
    key = user_key(key_type)
    assert c.send(publickey_request("alice", key.public_key, algorithm)) == []
    [event] = c.take_events()
    assert event == PublicKeyAuthRequested(
        username="alice", key=key.public_key, algorithm=algorithm, signed=False
    )
    c.server.accept_auth()
    # RFC 4252 §7: PK_OK echoes the algorithm and the key blob.
    assert c.pump() == [pk_ok(algorithm, key.public_key)]
    assert not c.server.authenticated
    assert c.server.auth_failures == 0  # an accepted query is no failure

    assert c.send(signed_publickey_request(c.session_id, "alice", key, algorithm)) == []
    [event] = c.take_events()
    assert event == PublicKeyAuthRequested(
        username="alice", key=key.public_key, algorithm=algorithm, signed=True
    )
    policy = KeyOptions(command="/bin/true")
    c.server.accept_auth(policy)
    assert c.pump() == [SUCCESS]
    assert c.take_events() == [AuthSucceeded(username="alice", method="publickey", policy=policy)]
    assert c.server.authenticated
    assert c.server.auth_policy is policy
    assert c.server.auth_username == "alice"


def test_publickey_query_rejected_is_a_counted_failure() -> None:
    # OpenSSH counts a refused query against MaxAuthTries (a client with many
    # agent keys meets "Too many authentication failures").
    c = RawClient()
    c.send(publickey_request("alice", user_key().public_key, "ssh-ed25519"))
    c.server.reject_auth()
    assert c.pump() == [failure(("publickey",))]
    assert c.server.auth_failures == 1


def test_signed_request_without_query_first() -> None:
    c = RawClient()
    key = user_key("ecdsa-sha2-nistp256")
    c.send(signed_publickey_request(c.session_id, "bob", key, "ecdsa-sha2-nistp256"))
    [event] = c.take_events()
    assert isinstance(event, PublicKeyAuthRequested) and event.signed
    c.server.reject_auth()
    assert c.pump() == [failure(("publickey",))]
    assert not c.server.authenticated


@pytest.mark.parametrize("where", ["signature", "data"])
def test_bad_signature_is_a_plain_failure_without_event(where: str) -> None:
    c = RawClient()
    key = user_key()
    good = signed_publickey_request(c.session_id, "alice", key, "ssh-ed25519")
    if where == "signature":
        bad = good[:-1] + bytes([good[-1] ^ 1])  # flip a bit of the signature
    else:
        bad = signed_publickey_request(c.session_id, "alice", key, "ssh-ed25519", sign_as="root")
    assert accept_signed(c, bad) == [failure(("publickey",))]
    assert c.take_events() == []
    assert c.server.auth_failures == 1
    assert not c.server.closed and not c.server.authenticated


def test_signature_by_another_key_fails() -> None:
    c = RawClient()
    signer, claimed = user_key(slot=0), user_key(slot=1)
    data = publickey_signed_data(c.session_id, "alice", "ssh-ed25519", claimed.public_key.blob)
    forged = publickey_request("alice", claimed.public_key, "ssh-ed25519", signer.sign(data, "ssh-ed25519"))
    assert accept_signed(c, forged) == [failure(("publickey",))]
    assert c.take_events() == []


def test_signature_from_another_session_fails() -> None:
    c = RawClient()
    other = RawClient()
    key = user_key()
    replayed = signed_publickey_request(other.session_id, "alice", key, "ssh-ed25519")
    assert accept_signed(c, replayed) == [failure(("publickey",))]
    assert c.take_events() == []


def test_ssh_rsa_sha1_is_never_accepted() -> None:
    # RFC 8332: "ssh-rsa" signatures use SHA-1 and are refused outright.
    c = RawClient()
    key = user_key("ssh-rsa")
    assert c.send(publickey_request("alice", key.public_key, "ssh-rsa")) == [failure(("publickey",))]
    # A signed request whose signature blob claims ssh-rsa.
    sig = encode_string("ssh-rsa") + encode_string(b"\x00" * 384)
    assert c.send(publickey_request("alice", key.public_key, "ssh-rsa", sig)) == [failure(("publickey",))]
    # rsa-sha2-256 in the request, but the blob's signature says rsa-sha2-512.
    data = publickey_signed_data(c.session_id, "alice", "rsa-sha2-256", key.public_key.blob)
    sig512 = key.sign(data, "rsa-sha2-512")
    assert accept_signed(c, publickey_request("alice", key.public_key, "rsa-sha2-256", sig512)) == [
        failure(("publickey",))
    ]
    assert c.take_events() == []


@pytest.mark.parametrize(
    ("key_type", "algorithm"),
    [("ssh-ed25519", "ecdsa-sha2-nistp256"), ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384"),
     ("ssh-rsa", "ssh-ed25519"), ("ssh-ed25519", "rsa-sha2-256"), ("ssh-ed25519", "ssh-dss")],
)  # fmt: skip
def test_algorithm_must_match_key_type(key_type: str, algorithm: str) -> None:
    c = RawClient()
    assert c.send(publickey_request("alice", user_key(key_type).public_key, algorithm)) == [
        failure(("publickey",))
    ]
    assert c.take_events() == []


def test_malformed_key_blob_is_a_failure_not_a_disconnect() -> None:
    c = RawClient()
    blob = encode_string("ssh-ed25519") + encode_string(b"\x01" * 31)
    assert c.send(publickey_request("alice", blob, "ssh-ed25519")) == [failure(("publickey",))]
    assert not c.server.closed


def test_truncated_publickey_request_is_a_protocol_error() -> None:
    c = RawClient()
    c.send(request("alice", "publickey", encode_bool(True) + encode_string("ssh-ed25519")))
    assert c.disconnected().reason == DisconnectReason.PROTOCOL_ERROR


# ------------------------------------------------------------ password


def password_client(**options: object) -> RawClient:
    return RawClient(auth_methods=("password", "publickey"), **options)  # type: ignore[arg-type]


def test_password_accepted() -> None:
    c = password_client()
    assert c.send(password_request("alice", "pässword")) == []
    [event] = c.take_events()
    assert event == PasswordAuthRequested(username="alice", password="pässword", method="password")
    assert "pässword" not in repr(event)
    c.server.accept_auth(KeyOptions())
    assert c.pump() == [SUCCESS]
    assert c.take_events() == [AuthSucceeded(username="alice", method="password", policy=KeyOptions())]


def test_password_rejected() -> None:
    c = password_client()
    c.send(password_request("alice", "wrong"))
    c.server.reject_auth()
    assert c.pump() == [failure(("password", "publickey"))]
    assert c.server.auth_failures == 1
    assert not c.server.authenticated


@pytest.mark.parametrize(
    "payload",
    [
        password_request("alice", b"x" * 1025),  # over 1 KiB
        password_request("alice", b"\xff\xfe"),  # not UTF-8
        password_request("alice", "old", "new"),  # change request: not supported
    ],
    ids=["too-long", "not-utf8", "change"],
)
def test_bad_password_requests_fail_without_event(payload: bytes) -> None:
    c = password_client()
    assert c.send(payload) == [failure(("password", "publickey"))]
    assert c.take_events() == []
    assert c.server.auth_failures == 1


def test_password_of_exactly_1_kib_is_asked() -> None:
    c = password_client()
    c.send(password_request("alice", "é" * 512))
    [event] = c.take_events()
    assert isinstance(event, PasswordAuthRequested) and len(event.password.encode()) == 1024


# ------------------------------------------------ keyboard-interactive


def kbdint_client(**options: object) -> RawClient:
    return RawClient(auth_methods=("keyboard-interactive",), **options)  # type: ignore[arg-type]


def test_keyboard_interactive_asks_password_and_decides() -> None:
    c = kbdint_client()
    assert c.send(kbdint_request("alice", "pam")) == [password_prompt()]
    assert c.take_events() == []
    assert c.send(info_response("secret")) == []
    [event] = c.take_events()
    assert event == PasswordAuthRequested(username="alice", password="secret", method="keyboard-interactive")
    c.server.accept_auth()
    assert c.pump() == [SUCCESS]
    assert c.take_events() == [AuthSucceeded(username="alice", method="keyboard-interactive")]


def test_keyboard_interactive_rejected() -> None:
    c = kbdint_client()
    c.send(kbdint_request("alice"))
    c.send(info_response("wrong"))
    c.server.reject_auth()
    assert c.pump() == [failure(("keyboard-interactive",))]
    assert c.server.auth_failures == 1


@pytest.mark.parametrize("answers", [(), ("a", "b")], ids=["none", "two"])
def test_keyboard_interactive_wrong_response_count_fails(answers: tuple[str, ...]) -> None:
    # RFC 4256 §3.4: num-responses must match num-prompts, else failure.
    c = kbdint_client()
    c.send(kbdint_request("alice"))
    assert c.send(info_response(*answers)) == [failure(("keyboard-interactive",))]
    assert c.take_events() == []
    assert c.server.auth_failures == 1


def test_keyboard_interactive_too_many_responses_is_a_protocol_error() -> None:
    c = kbdint_client()
    c.send(kbdint_request("alice"))
    c.send(info_response("x", count=65))
    assert c.disconnected().reason == DisconnectReason.PROTOCOL_ERROR


def test_keyboard_interactive_long_response_fails() -> None:
    c = kbdint_client()
    c.send(kbdint_request("alice"))
    assert c.send(info_response(b"x" * 1025)) == [failure(("keyboard-interactive",))]
    assert c.take_events() == []


def test_info_response_without_prompt_is_a_protocol_error() -> None:
    c = kbdint_client()
    c.send(info_response("secret"))
    assert c.server.closed
    assert c.take_events()[-1].reason == DisconnectReason.PROTOCOL_ERROR  # type: ignore[union-attr]


def test_new_request_abandons_keyboard_interactive() -> None:
    c = RawClient(auth_methods=("keyboard-interactive", "password"))
    c.send(kbdint_request("alice"))
    c.send(password_request("alice", "secret"))
    [event] = c.take_events()
    assert event == PasswordAuthRequested(username="alice", password="secret")
    c.server.reject_auth()
    c.pump()
    c.take_events()
    # The prompt is gone: an INFO_RESPONSE now is out of place.
    c.send(info_response("secret"))
    assert c.server.closed


# ----------------------------------------------------------- decisions


def test_decision_without_pending_request_is_a_local_error() -> None:
    c = RawClient()
    with pytest.raises(LocalProtocolError):
        c.server.accept_auth()
    with pytest.raises(LocalProtocolError):
        c.server.reject_auth()
    c.send(publickey_request("alice", user_key().public_key, "ssh-ed25519"))
    c.server.reject_auth()
    with pytest.raises(LocalProtocolError):
        c.server.reject_auth()  # answered already


def test_decision_after_the_client_left_is_ignored() -> None:
    c = password_client()
    c.send(password_request("alice", "secret"))
    c.server.receive_eof()
    c.server.accept_auth()
    assert not c.server.authenticated
    assert c.server.data_to_send() == b""


def test_second_request_while_deciding_is_a_protocol_error() -> None:
    c = password_client()
    c.send(password_request("alice", "one"), password_request("alice", "two"))
    events = c.take_events()
    assert isinstance(events[0], PasswordAuthRequested)
    assert c.server.closed
    assert events[-1].reason == DisconnectReason.PROTOCOL_ERROR  # type: ignore[union-attr]
    c.server.accept_auth()  # too late: a no-op
    assert not c.server.authenticated


def test_wrong_service_disconnects() -> None:
    c = RawClient()
    c.send(request("alice", "none", service="ssh-userauth"))
    assert c.disconnected().reason == DisconnectReason.SERVICE_NOT_AVAILABLE


@pytest.mark.parametrize("user", [b"u" * 1025, b"\xc3("], ids=["too-long", "not-utf8"])
def test_bad_user_name_is_a_protocol_error(user: bytes) -> None:
    c = RawClient()
    c.send(request(user, "none"))
    assert c.disconnected().reason == DisconnectReason.PROTOCOL_ERROR


def test_user_name_of_1024_bytes_is_fine() -> None:
    c = RawClient()
    assert c.send(request("u" * 1024, "none")) == [failure(("publickey",))]


# -------------------------------------------------------- MaxAuthTries


def test_max_auth_tries_disconnects() -> None:
    c = password_client(max_auth_tries=3)
    for attempt in range(1, 4):
        replies = c.send(password_request("alice", f"guess{attempt}"))
        assert replies == []
        c.server.reject_auth()
        if attempt < 3:
            assert c.pump() == [failure(("password", "publickey"))]
    # The third failure is answered by DISCONNECT, not USERAUTH_FAILURE.
    d = c.disconnected()
    assert d.reason == DisconnectReason.PROTOCOL_ERROR
    assert d.description == "Too many authentication failures"
    assert not d.by_peer
    assert c.server.closed


def test_max_auth_tries_counts_bad_signatures_and_refused_queries_not_none_nor_accepted_queries() -> None:
    # "none" only as the first request (issue 13: see test_auth_hardening).
    c = RawClient(max_auth_tries=3)
    key = user_key()
    c.send(request("alice", "none"))
    for _ in range(5):
        c.send(publickey_request("alice", key.public_key, "ssh-ed25519"))
        c.server.accept_auth()  # PK_OK: no failure
    assert c.server.auth_failures == 0
    c.send(publickey_request("alice", key.public_key, "ssh-ed25519"))
    c.server.reject_auth()
    c.pump()
    c.take_events()
    bad = signed_publickey_request(c.session_id, "alice", key, "ssh-ed25519", sign_as="x")
    accept_signed(c, bad)
    assert c.server.auth_failures == 2 and not c.server.closed
    accept_signed(c, bad)
    assert c.disconnected().reason == DisconnectReason.PROTOCOL_ERROR


# --------------------------------------------------------- user change


def test_user_change_resets_state_but_keeps_the_failure_count() -> None:
    c = RawClient(auth_methods=("keyboard-interactive", "password"), max_auth_tries=3)
    c.send(password_request("alice", "a"))
    c.server.reject_auth()
    c.send(kbdint_request("alice"))  # alice is prompted for a password...
    c.take_events()
    assert c.server.auth_username == "alice"
    c.send(password_request("bob", "b"))  # ...and bob takes over
    [event] = c.take_events()
    assert event == PasswordAuthRequested(username="bob", password="b")
    assert c.server.auth_username == "bob"
    c.server.reject_auth()
    c.pump()
    c.take_events()
    assert c.server.auth_failures == 2  # alice's failure still counts
    c.send(info_response("a"))  # alice's prompt was flushed
    assert c.disconnected().reason == DisconnectReason.PROTOCOL_ERROR


def test_user_change_then_success_reports_the_new_user() -> None:
    c = password_client()
    c.send(password_request("alice", "a"))
    c.server.reject_auth()
    c.send(password_request("bob", "b"))
    c.server.accept_auth()
    c.pump()
    assert c.take_events()[-1] == AuthSucceeded(username="bob", method="password")
    assert c.server.auth_username == "bob"


# -------------------------------------------------------------- banner


def test_banner_goes_once_before_the_first_reply() -> None:
    c = RawClient(banner="Authorized use only\r\n")
    banner = (
        encode_byte(MsgType.USERAUTH_BANNER) + encode_string("Authorized use only\r\n") + encode_string(b"")
    )
    assert c.send(request("alice", "none")) == [banner, failure(("publickey",))]
    assert c.send(request("alice", "none")) == [failure(("publickey",))]


def test_banner_before_a_decision() -> None:
    c = RawClient(banner="hi")
    replies = c.send(publickey_request("alice", user_key().public_key, "ssh-ed25519"))
    assert [r[0] for r in replies] == [MsgType.USERAUTH_BANNER]
    c.server.reject_auth()
    assert c.pump() == [failure(("publickey",))]


# ----------------------------------------------------- after success


def authenticated_client() -> RawClient:
    c = password_client()
    c.send(password_request("alice", "right"))
    c.server.accept_auth()
    assert c.pump() == [SUCCESS]
    c.take_events()
    return c


def test_requests_after_success_are_ignored() -> None:
    # RFC 4252 §5.1: "SHOULD be silently ignored".
    c = authenticated_client()
    assert c.send(password_request("root", "x"), request("root", "none")) == []
    assert c.take_events() == []
    assert c.server.auth_username == "alice"
    with pytest.raises(LocalProtocolError):
        c.server.accept_auth()


@pytest.mark.parametrize("msg", [MsgType.USERAUTH_SUCCESS, MsgType.USERAUTH_INFO_RESPONSE, 70])
def test_other_auth_messages_after_success_are_protocol_errors(msg: int) -> None:
    c = authenticated_client()
    c.raw.send(bytes([msg]))
    c.server.receive_data(c.raw.data_to_send())
    assert c.server.closed
    # The server's last words are one DISCONNECT (RFC 4253 §11.1) ...
    c.raw.receive_data(c.server.data_to_send())
    (sent,) = c.raw.inbox
    assert sent[0] == MsgType.DISCONNECT
    assert Reader(sent, 1).uint32() == DisconnectReason.PROTOCOL_ERROR
    (event,) = c.server.events_received()
    assert isinstance(event, Disconnected) and not event.by_peer
    assert event.reason == DisconnectReason.PROTOCOL_ERROR
    # ... and nothing follows it, whatever the client goes on sending.
    c.raw.send(password_request("alice", "right"))
    c.server.receive_data(c.raw.data_to_send())
    assert c.server.data_to_send() == b""
    assert c.server.events_received() == []


def test_connection_messages_after_success_reach_the_channel_layer() -> None:
    c = authenticated_client()
    # RFC 4254 §4: an unknown global request with want_reply gets REQUEST_FAILURE
    # once the runtime answers; without want_reply nothing is sent back.
    assert c.send(encode_byte(MsgType.GLOBAL_REQUEST) + encode_string("x") + encode_bool(False)) == []
    # Reserved connection-layer numbers are UNIMPLEMENTED (RFC 4253 §11.4).
    replies = c.send(encode_byte(101))
    assert [r[0] for r in replies] == [MsgType.UNIMPLEMENTED]
    assert not c.server.closed
