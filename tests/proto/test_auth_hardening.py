"""Pre-authentication hardening of the server core, one regression test per CVE
of another SSH implementation, and the no-user-enumeration property."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.events import (
    AuthSucceeded,
    Disconnected,
    Event,
    PasswordAuthRequested,
    PublicKeyAuthRequested,
)
from hashike.proto.hostkey import KeyFormatError, PrivateKey, PublicKey
from hashike.proto.wire import Reader, encode_bool, encode_byte, encode_mpint, encode_string, encode_uint32
from tests.proto.authkit import (
    RawClient,
    failure,
    info_response,
    kbdint_request,
    password_request,
    publickey_request,
    request,
    service_request,
    signed_publickey_request,
    user_key,
)
from tests.proto.pair import events_of

SUCCESS = encode_byte(MsgType.USERAUTH_SUCCESS)
ALL = ("publickey", "password", "keyboard-interactive")


def channel_open_session() -> bytes:
    # RFC 4254 §6.1
    return (
        encode_byte(MsgType.CHANNEL_OPEN)
        + encode_string("session")
        + encode_uint32(0)
        + encode_uint32(2**21)
        + encode_uint32(32768)
    )


def channel_request_exec(command: str = "touch /tmp/pwned") -> bytes:
    # RFC 4254 §6.5
    return (
        encode_byte(MsgType.CHANNEL_REQUEST)
        + encode_uint32(0)
        + encode_string("exec")
        + encode_bool(True)
        + encode_string(command)
    )


def assert_refused(c: RawClient, replies: list[bytes]) -> None:
    """The server ended the connection with a protocol error and let nobody in."""
    d = c.disconnected()
    assert d.reason == DisconnectReason.PROTOCOL_ERROR and not d.by_peer
    assert c.server.closed and not c.server.authenticated
    assert SUCCESS not in replies
    assert not events_of(c.events, AuthSucceeded)


# ------------------------------------------------------------ CVEs


@pytest.mark.parametrize("stage", ["before-service", "after-service", "after-failure"])
def test_cve_2018_10933_client_sending_userauth_success(stage: str) -> None:
    # libssh: a client that sent USERAUTH_SUCCESS instead of a request was in.
    c = RawClient(service=stage != "before-service")
    if stage == "after-failure":
        c.send(request("root", "none"))
    replies = c.send(SUCCESS, channel_open_session(), channel_request_exec())
    assert_refused(c, replies)


@pytest.mark.parametrize(
    "payload",
    [
        SUCCESS,
        encode_byte(MsgType.USERAUTH_FAILURE) + encode_string("publickey") + encode_bool(False),
        encode_byte(MsgType.USERAUTH_BANNER) + encode_string("hi") + encode_string(b""),
        encode_byte(60) + encode_string("ssh-ed25519") + encode_string(b"blob"),  # PK_OK
        encode_byte(MsgType.SERVICE_ACCEPT) + encode_string("ssh-userauth"),
    ],
    ids=["SUCCESS", "FAILURE", "BANNER", "PK_OK", "SERVICE_ACCEPT"],
)
def test_cve_2018_1000805_server_messages_from_a_client(payload: bytes) -> None:
    # Paramiko: the server side also ran the client's handlers, so a client's
    # USERAUTH_SUCCESS authenticated it.
    c = RawClient(auth_methods=ALL)
    replies = c.send(payload, channel_open_session())
    assert_refused(c, replies)


def test_cve_2018_1000805_while_a_decision_is_pending() -> None:
    c = RawClient()
    c.send(publickey_request("root", user_key().public_key, "ssh-ed25519"))
    replies = c.send(SUCCESS)
    assert_refused(c, replies)
    c.server.accept_auth()  # the runtime answers late: nothing happens
    assert not c.server.authenticated


@pytest.mark.parametrize(
    "stage", ["before-service", "after-service", "after-failure", "deciding", "prompted"]
)
def test_cve_2018_7750_channel_open_before_authentication(stage: str) -> None:
    # Paramiko: the server processed CHANNEL_OPEN from an unauthenticated client.
    c = RawClient(service=stage != "before-service", auth_methods=ALL)
    if stage == "after-failure":
        c.send(password_request("root", "guess"))
        c.server.reject_auth()
        c.pump()
    elif stage == "deciding":
        c.send(password_request("root", "guess"))
    elif stage == "prompted":
        c.send(kbdint_request("root"))
    replies = c.send(channel_open_session())
    assert_refused(c, replies)


@pytest.mark.parametrize("msg", range(80, 128))
def test_cve_2025_32433_connection_protocol_before_authentication(msg: int) -> None:
    # Erlang/OTP ssh: CHANNEL_OPEN + CHANNEL_REQUEST "exec" before
    # authentication ran the command. Every connection-layer number is refused.
    c = RawClient()
    c.send(request("root", "none"))
    replies = c.send(bytes([msg]) + encode_uint32(0) * 4, channel_open_session(), channel_request_exec())
    assert_refused(c, replies)


def test_cve_2025_32433_exec_right_after_kex() -> None:
    c = RawClient(service=False)
    replies = c.send(channel_open_session(), channel_request_exec())
    assert_refused(c, replies)


def test_userauth_request_before_service_accept() -> None:
    c = RawClient(service=False)
    replies = c.send(request("root", "none"))
    assert_refused(c, replies)
    assert replies == []


def test_skipping_userauth_by_asking_for_ssh_connection() -> None:
    c = RawClient(service=False)
    c.send(service_request("ssh-connection"))
    assert c.disconnected().reason == DisconnectReason.SERVICE_NOT_AVAILABLE
    assert not c.server.authenticated


def test_second_service_request() -> None:
    c = RawClient()
    c.send(service_request())
    assert c.disconnected().reason == DisconnectReason.SERVICE_NOT_AVAILABLE


def test_info_response_pretending_a_prompt() -> None:
    c = RawClient(auth_methods=ALL)
    replies = c.send(info_response("password"))
    assert_refused(c, replies)


# ------------------------------------------------ no user enumeration

ALICE_KEY = "ssh-ed25519"


def alice_key() -> PrivateKey:
    return user_key(ALICE_KEY, slot=0)


def wrong_key() -> PrivateKey:
    return user_key(ALICE_KEY, slot=1)


def runtime(event: Event) -> bool | None:
    """A server runtime with one user: alice, her key and password "right"."""
    if isinstance(event, PublicKeyAuthRequested):
        return event.username == "alice" and event.key == alice_key().public_key
    if isinstance(event, PasswordAuthRequested):
        return event.username == "alice" and event.password == "right"
    return None


def run(user: str, attempts: Callable[[RawClient, str], list[bytes]]) -> tuple[list[bytes], list[Event]]:
    """Play ``attempts`` as ``user`` with ``runtime`` deciding; return what the
    server sent (decrypted payloads) and its Disconnected events."""
    c = RawClient(auth_methods=ALL, banner="Authorized use only")
    replies: list[bytes] = []
    ends: list[Event] = []
    for payload in attempts(c, user):
        if c.server.closed:
            break
        replies += c.send(payload)
        for event in c.take_events():
            decision = runtime(event)
            if decision is not None:
                c.server.accept_auth() if decision else c.server.reject_auth()
        replies += c.pump()
        ends += events_of(c.take_events(), Disconnected)
    assert not c.server.authenticated
    return replies, ends


def query_wrong_key(c: RawClient, user: str) -> list[bytes]:
    return [publickey_request(user, wrong_key().public_key, ALICE_KEY)] * 3


def signed_wrong_key(c: RawClient, user: str) -> list[bytes]:
    return [signed_publickey_request(c.session_id, user, wrong_key(), ALICE_KEY)] * 3


def wrong_password(c: RawClient, user: str) -> list[bytes]:
    return [password_request(user, "wrong")] * 3


def wrong_kbdint(c: RawClient, user: str) -> list[bytes]:
    return [kbdint_request(user), info_response("wrong")] * 3


def bad_signature(c: RawClient, user: str) -> list[bytes]:
    good = signed_publickey_request(c.session_id, user, alice_key(), ALICE_KEY)
    return [good[:-1] + bytes([good[-1] ^ 1])] * 3


def everything_until_disconnect(c: RawClient, user: str) -> list[bytes]:
    return [
        request(user, "none"),
        *query_wrong_key(c, user),
        *signed_wrong_key(c, user),
        *wrong_password(c, user),
        *wrong_kbdint(c, user),
    ]


@pytest.mark.parametrize(
    "attempts",
    [
        query_wrong_key,
        signed_wrong_key,
        wrong_password,
        wrong_kbdint,
        bad_signature,
        everything_until_disconnect,
    ],
)
def test_unknown_user_and_wrong_credential_look_the_same(
    attempts: Callable[[RawClient, str], list[bytes]],
) -> None:
    unknown = run("mallory", attempts)
    known = run("alice", attempts)
    assert unknown == known
    assert unknown[0]  # the server did answer


def test_enumeration_fixture_lets_alice_in() -> None:
    # The comparison above means something only if the right key works.
    c = RawClient(auth_methods=ALL)
    c.send(signed_publickey_request(c.session_id, "alice", alice_key(), ALICE_KEY))
    [event] = c.take_events()
    assert runtime(event) is True


# ---------------------------------------------- no way in without a yes

_KEY = user_key()
_MESSAGES = st.one_of(
    st.sampled_from(
        [
            request("root", "none"),
            request("root", "none", service="ssh-userauth"),
            password_request("root", "x"),
            kbdint_request("root"),
            info_response("x"),
            info_response(),
            publickey_request("root", _KEY.public_key, "ssh-ed25519"),
            publickey_request("root", _KEY.public_key, "ssh-ed25519", b"\x00" * 8),
            SUCCESS,
            channel_open_session(),
            service_request(),
        ]
    ),
    st.builds(lambda n, body: bytes([n]) + body, st.integers(50, 127), st.binary(max_size=40)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_MESSAGES, max_size=12), st.booleans())
def test_no_sequence_of_messages_authenticates_without_the_runtime(
    messages: list[bytes], accept_queries: bool
) -> None:
    c = RawClient(auth_methods=ALL)
    replies: list[bytes] = []
    for payload in messages:
        if c.server.closed:
            break
        replies += c.send(payload)
        for event in c.take_events():
            assert isinstance(event, PublicKeyAuthRequested | PasswordAuthRequested | Disconnected), event
            if isinstance(event, PublicKeyAuthRequested) and not event.signed and accept_queries:
                c.server.accept_auth()
            elif not isinstance(event, Disconnected):
                c.server.reject_auth()
        replies += c.pump()
    assert SUCCESS not in replies
    assert not c.server.authenticated


# ------------------------------------------ issue 13: floods and CPU cost


def test_auth_flood_of_none_requests_reaches_max_auth_tries() -> None:
    # 200 "none" requests on one connection were all answered. OpenSSH
    # (auth2.c) exempts only the first attempt; every later "none" counts.
    c = RawClient(auth_methods=ALL, max_auth_tries=6)
    answered = 0
    for _ in range(200):
        if c.server.closed:
            break
        answered += len(c.send(request("root", "none")))
    assert c.disconnected().reason == DisconnectReason.PROTOCOL_ERROR
    assert answered == 6  # the free first one, then five counted failures


def test_cpu_exhaustion_signature_is_verified_only_for_an_accepted_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A signed request for a key nobody accepts must cost no verification
    # (an RSA verify is a modular exponentiation with the peer's numbers).
    calls: list[str] = []
    original = PublicKey.verify

    def counting(self: PublicKey, *args: object, **kwargs: object) -> bool:
        calls.append(self.key_type)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    c = RawClient(auth_methods=ALL)
    forged = bad_signature(c, "mallory")[0]
    monkeypatch.setattr(PublicKey, "verify", counting)  # after the key exchange's own
    assert c.send(forged) == []
    [event] = c.take_events()
    assert isinstance(event, PublicKeyAuthRequested) and event.signed
    c.server.reject_auth()  # not in authorized_keys
    c.pump()
    assert calls == []
    c.send(forged)
    c.take_events()
    c.server.accept_auth()  # the key would do: now, and only now, verify
    assert c.pump() == [failure(ALL)]  # as the refusal would have been
    assert calls == [ALICE_KEY]
    assert not c.server.authenticated


def rsa_blob(e: int, n: int) -> bytes:
    return encode_string("ssh-rsa") + encode_mpint(e) + encode_mpint(n)


@pytest.mark.parametrize("e", [2**3071 + 1, 1, 65536], ids=["3071-bit", "one", "even"])
def test_cpu_exhaustion_rsa_public_exponent_out_of_bounds_is_refused(e: int) -> None:
    # A 3071-bit exponent made each verification cost 7 ms instead of 0.4 ms.
    r = Reader(user_key("ssh-rsa").public_key.blob)  # a real modulus, to isolate e
    r.string()
    r.mpint()
    modulus = r.mpint()
    with pytest.raises(KeyFormatError, match="exponent"):
        PublicKey.from_blob(rsa_blob(e, modulus))
    c = RawClient(auth_methods=ALL)
    assert c.send(publickey_request("alice", rsa_blob(e, modulus), "rsa-sha2-256", b"x")) == [failure(ALL)]
    assert c.take_events() == []
