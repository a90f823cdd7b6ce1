"""User authentication (RFC 4252, RFC 4256) as two sans-IO state machines.

Theory of operation. The ``ssh-userauth`` service starts once the server has
accepted it (RFC 4253 §10); from then on every message numbered 50-79 goes to
:class:`ClientAuth` or :class:`ServerAuth`, which dispatch on the pair
(state, message number) through a table. A pair that is not in the table is a
protocol error. That single rule refuses a USERAUTH_SUCCESS sent by a client
(CVE-2018-10933, CVE-2018-1000805), a request before the service was
accepted, and a SUCCESS that answers no request.

The client is driven by commands. Each ``auth_*`` command sends one
USERAUTH_REQUEST and moves to a state that waits for its answer, so message
60 is read as PK_OK, PASSWD_CHANGEREQ or INFO_REQUEST according to that state
(RFC 4250 §4.1.2). Which method to try next, and with which key, is the
runtime's choice, made on :class:`AuthFailed`. Public key authentication
queries first and signs only on acceptance (RFC 4252 §7): ``publickey_query``
asks whether a key would do, ``publickey_sign`` returns the exact bytes to
sign (so the runtime can sign locally or through ssh-agent) and
``publickey_signed`` sends the signature.

The server decodes a request and checks what it can alone: the service name,
whether the method is offered, the signature algorithm. The rest (does this
key or password belong to this user?) it asks the runtime with an event,
answered by ``accept()`` or ``reject()``. While the answer is pending the state
is DECIDING, and another request is a protocol error. A signed public key
request is asked first too, and its signature is verified only when the
runtime accepts the key: a peer cannot make us verify signatures (an RSA
verification is a modular exponentiation with the peer's own numbers) for a
key nobody would accept. A signature that does not verify then fails as a
rejection would. The reply on the wire depends only on the outcome, never on
the user name, so an unknown user and a wrong key or password look the same
to the client. Failed attempts are counted as OpenSSH counts them (a refused
query counts; an accepted one does not, nor does ``none`` as the very first
request: later ones count), and reaching MaxAuthTries ends the connection.

Client states::

    WAIT_SERVICE -> IDLE -> NONE/QUERY/PASSWORD/KBDINT_SENT -> IDLE | AUTHENTICATED
                      |                           KBDINT_SENT <-> KBDINT_PROMPTED
                      +-> SIGNING -> PUBLICKEY_SENT -> IDLE | AUTHENTICATED

Server states::

    WAIT_SERVICE -> IDLE -> DECIDING -> IDLE | AUTHENTICATED
                      +-> KBDINT_PROMPTED -> DECIDING
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hashike.proto.certs import CERT_ALGORITHMS, public_key_from_blob
from hashike.proto.constants import DisconnectReason, MsgType
from hashike.proto.errors import LocalProtocolError, RemoteProtocolError
from hashike.proto.events import (
    AuthBanner,
    AuthFailed,
    AuthPolicy,
    AuthPrompts,
    AuthSucceeded,
    Event,
    PasswordAuthRequested,
    PublicKeyAccepted,
    PublicKeyAuthRequested,
)
from hashike.proto.hostkey import KeyFormatError, PublicKey
from hashike.proto.transport import ENDED, Transport
from hashike.proto.wire import Reader, encode_bool, encode_byte, encode_namelist, encode_string, encode_uint32

__all__ = [
    "CONNECTION_SERVICE",
    "MAX_PASSWORD",
    "MAX_PROMPTS",
    "MAX_USERNAME",
    "PUBLICKEY_ALGORITHMS",
    "SERVER_METHODS",
    "ClientAuth",
    "ClientState",
    "ServerAuth",
    "ServerState",
    "publickey_signed_data",
]

CONNECTION_SERVICE = "ssh-connection"  # RFC 4252 §5: the service we authenticate for
SERVER_METHODS = ("publickey", "password", "keyboard-interactive")

# Signature algorithm -> the key type that makes it (RFC 8709, RFC 5656, RFC 8332).
# "ssh-rsa" (RSA with SHA-1) is absent on purpose: never offered nor accepted.
PUBLICKEY_ALGORITHMS: dict[str, str] = {
    "ssh-ed25519": "ssh-ed25519",
    "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521",
    "rsa-sha2-512": "ssh-rsa",
    "rsa-sha2-256": "ssh-rsa",
    # PROTOCOL.certkeys: a certificate authenticates under its own names.
    **{name: cert_type for name, (cert_type, _) in CERT_ALGORITHMS.items()},
}

MAX_USERNAME = 1024  # bytes of UTF-8
MAX_NAME = 64  # service, method and algorithm names
MAX_PASSWORD = 1024  # bytes of UTF-8, either side
MAX_PROMPTS = 64  # keyboard-interactive prompts in one INFO_REQUEST
MAX_KEY_BLOB = 16 * 1024
MAX_SIGNATURE = 16 * 1024
MAX_TEXT = 64 * 1024  # banner, instruction, prompt, password-change prompt
MAX_LANGUAGE = 256  # RFC 3066 language tags
_PASSWORD_PROMPT = "Password: "
# RFC 4250 §4.1.2: message 60 has three names; the method in progress picks one.
USERAUTH_PK_OK = USERAUTH_PASSWD_CHANGEREQ = MsgType.USERAUTH_INFO_REQUEST


def publickey_signed_data(session_id: bytes, username: str, algorithm: str, key_blob: bytes) -> bytes:
    """RFC 4252 §7: what a public key request's signature covers."""
    return (
        encode_string(session_id)
        + encode_byte(MsgType.USERAUTH_REQUEST)
        + encode_string(username)
        + encode_string(CONNECTION_SERVICE)
        + encode_string("publickey")
        + encode_bool(True)
        + encode_string(algorithm)
        + encode_string(key_blob)
    )


def _request(username: str, method: str, fields: bytes) -> bytes:
    """RFC 4252 §5: SSH_MSG_USERAUTH_REQUEST for the ssh-connection service."""
    return (
        encode_byte(MsgType.USERAUTH_REQUEST)
        + encode_string(username)
        + encode_string(CONNECTION_SERVICE)
        + encode_string(method)
        + fields
    )


def _utf8(text: str, what: str, limit: int) -> bytes:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{what} is not valid Unicode") from exc
    if len(data) > limit:
        raise LocalProtocolError(f"{what} is longer than {limit} bytes")
    return data


# ============================================================== client side


class ClientState(enum.Enum):
    WAIT_SERVICE = "wait-service"  # ssh-userauth not accepted yet
    IDLE = "idle"  # no request outstanding: a command may send one
    SIGNING = "signing"  # publickey_sign() gave the data; the signature is awaited
    NONE_SENT = "none-sent"
    QUERY_SENT = "query-sent"  # public key query without signature
    PUBLICKEY_SENT = "publickey-sent"  # signed public key request
    PASSWORD_SENT = "password-sent"
    KBDINT_SENT = "kbdint-sent"  # request or INFO_RESPONSE sent
    KBDINT_PROMPTED = "kbdint-prompted"  # INFO_REQUEST received; answer_prompts() awaited
    AUTHENTICATED = "authenticated"


# States in which one request is on the wire and its answer is due.
_CLIENT_WAITING = frozenset(
    {
        ClientState.NONE_SENT,
        ClientState.QUERY_SENT,
        ClientState.PUBLICKEY_SENT,
        ClientState.PASSWORD_SENT,
        ClientState.KBDINT_SENT,
    }
)


class ClientAuth:
    """The client's side of ssh-userauth, owned by a ClientConnection."""

    def __init__(self, transport: Transport, events: list[Event]) -> None:
        self._transport = transport
        self._events = events
        self.state = ClientState.WAIT_SERVICE
        self._username = ""
        self._method = ""
        self._key: PublicKey | None = None
        self._algorithm = ""
        self._to_sign = b""
        self._prompts = 0

    @property
    def authenticated(self) -> bool:
        return self.state is ClientState.AUTHENTICATED

    def start(self) -> None:
        """The server accepted ssh-userauth: requests may be sent."""
        if self.state is ClientState.WAIT_SERVICE:
            self.state = ClientState.IDLE

    # ----------------------------------------------------------- commands

    def none(self, username: str) -> None:
        """RFC 4252 §5.2: the "none" method, which lists the methods that can continue."""
        self._check_ready()
        self._send_request(username, "none", b"", ClientState.NONE_SENT)

    def publickey_query(self, username: str, key: PublicKey, algorithm: str) -> None:
        """RFC 4252 §7: would the server accept a signature by ``key``?"""
        self._check_ready()
        self._check_key(key, algorithm)
        fields = encode_bool(False) + encode_string(algorithm) + encode_string(key.blob)
        self._send_request(username, "publickey", fields, ClientState.QUERY_SENT)
        self._key, self._algorithm = key, algorithm

    def publickey_sign(self, username: str, key: PublicKey, algorithm: str) -> bytes:
        """RFC 4252 §7: the data to sign for a public key request; nothing is sent yet."""
        self._check_ready()
        self._check_key(key, algorithm)
        _utf8(username, "user name", MAX_USERNAME)
        session_id = self._transport.session_id
        assert session_id is not None  # the service was accepted, so the first kex is done
        self._to_sign = publickey_signed_data(session_id, username, algorithm, key.blob)
        self._username, self._method, self._key, self._algorithm = username, "publickey", key, algorithm
        self.state = ClientState.SIGNING
        return self._to_sign

    def publickey_signed(self, signature: bytes) -> None:
        """Send the request ``publickey_sign()`` prepared, with its signature blob."""
        if self.state is not ClientState.SIGNING:
            raise LocalProtocolError("auth_publickey_signed() without a preceding auth_publickey_sign()")
        self._check_open()
        key, data = self._key, self._to_sign
        assert key is not None
        # An agent that ignores the RSA SHA-2 flags answers with an ssh-rsa
        # signature; say so here rather than let the server refuse it.
        if not key.verify(signature, data, (self._algorithm,)):
            raise LocalProtocolError(f"the signature is not a valid {self._algorithm} signature by this key")
        session_id = self._transport.session_id
        assert session_id is not None
        # The request is the signed data without its leading session id.
        self._transport.send(data[4 + len(session_id) :] + encode_string(signature))
        self._to_sign = b""
        self.state = ClientState.PUBLICKEY_SENT

    def password(self, username: str, password: str) -> None:
        """RFC 4252 §8: a plain password request."""
        self._check_ready()
        secret = _utf8(password, "password", MAX_PASSWORD)
        self._send_request(
            username, "password", encode_bool(False) + encode_string(secret), ClientState.PASSWORD_SENT
        )

    def keyboard_interactive(self, username: str, submethods: str = "") -> None:
        """RFC 4256 §3.1: language tag (deprecated, empty) and submethods."""
        self._check_ready()
        fields = encode_string(b"") + encode_string(_utf8(submethods, "submethods", MAX_TEXT))
        self._send_request(username, "keyboard-interactive", fields, ClientState.KBDINT_SENT)

    def answer_prompts(self, responses: Sequence[str]) -> None:
        """RFC 4256 §3.4: one response per prompt of the last AuthPrompts."""
        if self.state is not ClientState.KBDINT_PROMPTED:
            raise LocalProtocolError("no keyboard-interactive prompts are waiting for answers")
        if isinstance(responses, str) or len(responses) != self._prompts:
            raise LocalProtocolError(f"{self._prompts} responses are needed, got {len(responses)}")
        self._check_open()
        encoded = [encode_string(_utf8(r, "response", MAX_TEXT)) for r in responses]
        self._transport.send(
            encode_byte(MsgType.USERAUTH_INFO_RESPONSE) + encode_uint32(len(encoded)) + b"".join(encoded)
        )
        self.state = ClientState.KBDINT_SENT

    def _check_open(self) -> None:
        if self._transport.state in ENDED:
            raise LocalProtocolError("connection is closed")

    def _check_ready(self) -> None:
        self._check_open()
        state = self.state
        if state in (ClientState.IDLE, ClientState.SIGNING):
            return  # SIGNING: the runtime may give up on a signature and try something else
        if state is ClientState.WAIT_SERVICE:
            raise LocalProtocolError("authentication cannot start before the server accepts ssh-userauth")
        if state is ClientState.AUTHENTICATED:
            raise LocalProtocolError("already authenticated")
        if state is ClientState.KBDINT_PROMPTED:
            raise LocalProtocolError("keyboard-interactive prompts are waiting for answer_prompts()")
        raise LocalProtocolError(f"a {self._method} request is still waiting for the server's answer")

    @staticmethod
    def _check_key(key: PublicKey, algorithm: str) -> None:
        if PUBLICKEY_ALGORITHMS.get(algorithm) != key.key_type:
            raise LocalProtocolError(f"a {key.key_type} key cannot authenticate with {algorithm!r}")

    def _send_request(self, username: str, method: str, fields: bytes, state: ClientState) -> None:
        """Send one request; the caller has checked that one may go now."""
        _utf8(username, "user name", MAX_USERNAME)
        self._transport.send(_request(username, method, fields))
        self._username, self._method, self._to_sign = username, method, b""
        self.state = state

    # -------------------------------------------------------------- input

    def receive(self, msg: int, payload: bytes) -> None:
        """A message numbered 50-79 from the server."""
        handler = _CLIENT_TABLE.get((self.state, msg))
        if handler is None:
            raise RemoteProtocolError(self._unexpected(msg))
        handler(self, payload)

    def _unexpected(self, msg: int) -> str:
        if msg in (MsgType.USERAUTH_REQUEST, MsgType.USERAUTH_INFO_RESPONSE):
            return f"server sent message {msg}, which only a client may send"
        if self.state is ClientState.WAIT_SERVICE:
            return f"authentication message {msg} before the ssh-userauth service was accepted"
        if msg == MsgType.USERAUTH_SUCCESS:
            return "USERAUTH_SUCCESS while no authentication request was outstanding"
        return f"unexpected authentication message {msg} in state {self.state.value}"

    def _on_banner(self, payload: bytes) -> None:
        # RFC 4252 §5.4: allowed at any time before authentication succeeds.
        r = Reader(payload, 1)
        message = r.text(MAX_TEXT)
        r.string(MAX_LANGUAGE)
        r.check_end()
        self._events.append(AuthBanner(message=message))

    def _on_failure(self, payload: bytes) -> None:
        # RFC 4252 §5.1
        r = Reader(payload, 1)
        methods = r.namelist()
        partial = r.boolean()
        r.check_end()
        self.state = ClientState.IDLE
        self._events.append(AuthFailed(methods=methods, partial_success=partial))

    def _on_success(self, payload: bytes) -> None:
        Reader(payload, 1).check_end()
        self.state = ClientState.AUTHENTICATED
        self._events.append(AuthSucceeded(username=self._username, method=self._method))

    def _on_pk_ok(self, payload: bytes) -> None:
        # RFC 4252 §7: SSH_MSG_USERAUTH_PK_OK echoes the algorithm and key blob.
        r = Reader(payload, 1)
        algorithm = r.ascii(MAX_NAME)
        blob = r.string(MAX_KEY_BLOB)
        r.check_end()
        key = self._key
        assert key is not None
        if algorithm != self._algorithm or blob != key.blob:
            raise RemoteProtocolError("USERAUTH_PK_OK names another key or algorithm than our query")
        self.state = ClientState.IDLE
        self._events.append(PublicKeyAccepted(key=key, algorithm=algorithm))

    def _on_passwd_changereq(self, payload: bytes) -> None:
        # RFC 4252 §8: SSH_MSG_USERAUTH_PASSWD_CHANGEREQ. Changing passwords is
        # not supported: report a failure that says why.
        r = Reader(payload, 1)
        prompt = r.text(MAX_TEXT)
        r.string(MAX_LANGUAGE)
        r.check_end()
        self.state = ClientState.IDLE
        self._events.append(
            AuthFailed(methods=(), partial_success=False, password_change_requested=True, prompt=prompt)
        )

    def _on_info_request(self, payload: bytes) -> None:
        # RFC 4256 §3.2: SSH_MSG_USERAUTH_INFO_REQUEST.
        r = Reader(payload, 1)
        name = r.text(MAX_TEXT)
        instruction = r.text(MAX_TEXT)
        r.string(MAX_LANGUAGE)
        count = r.uint32()
        if count > MAX_PROMPTS:
            raise RemoteProtocolError(f"keyboard-interactive request with {count} prompts")
        prompts = tuple((r.text(MAX_TEXT), r.boolean()) for _ in range(count))
        r.check_end()
        self._prompts = count
        self.state = ClientState.KBDINT_PROMPTED
        self._events.append(AuthPrompts(name=name, instruction=instruction, prompts=prompts))


_ClientHandler = Callable[[ClientAuth, bytes], None]
# (state, message) -> handler. Message 60 means what the outstanding request makes it mean.
_CLIENT_TABLE: dict[tuple[ClientState, int], _ClientHandler] = {
    **{
        (state, MsgType.USERAUTH_BANNER): ClientAuth._on_banner
        for state in ClientState
        if state not in (ClientState.WAIT_SERVICE, ClientState.AUTHENTICATED)
    },
    **{(state, MsgType.USERAUTH_FAILURE): ClientAuth._on_failure for state in _CLIENT_WAITING},
    **{(state, MsgType.USERAUTH_SUCCESS): ClientAuth._on_success for state in _CLIENT_WAITING},
    (ClientState.QUERY_SENT, MsgType.USERAUTH_INFO_REQUEST): ClientAuth._on_pk_ok,
    (ClientState.PASSWORD_SENT, MsgType.USERAUTH_INFO_REQUEST): ClientAuth._on_passwd_changereq,
    (ClientState.KBDINT_SENT, MsgType.USERAUTH_INFO_REQUEST): ClientAuth._on_info_request,
}


# ============================================================== server side


class ServerState(enum.Enum):
    WAIT_SERVICE = "wait-service"  # ssh-userauth not accepted yet
    IDLE = "idle"  # waiting for a request
    DECIDING = "deciding"  # an event was emitted; accept() or reject() is awaited
    KBDINT_PROMPTED = "kbdint-prompted"  # INFO_REQUEST sent; INFO_RESPONSE awaited
    AUTHENTICATED = "authenticated"


@dataclass(slots=True)
class _Pending:
    """The request the runtime is deciding on."""

    username: str
    method: str
    key: PublicKey | None = None
    algorithm: str = ""
    query: bool = False  # unsigned public key request: accepting sends PK_OK
    signature: bytes = b""  # signed public key request: verified on acceptance


class ServerAuth:
    """The server's side of ssh-userauth, owned by a ServerConnection."""

    def __init__(
        self,
        transport: Transport,
        events: list[Event],
        *,
        methods: tuple[str, ...],
        max_tries: int,
        banner: str | None,
    ) -> None:
        unknown = [m for m in methods if m not in SERVER_METHODS]
        if unknown:
            raise ValueError(f"unsupported authentication methods: {', '.join(unknown)}")
        if max_tries < 1:
            raise ValueError("max_auth_tries must be at least 1")
        self._transport = transport
        self._events = events
        self.methods = tuple(dict.fromkeys(methods))
        self.max_tries = max_tries
        self._banner = banner
        self.state = ServerState.WAIT_SERVICE
        self.failures = 0
        self._requests = 0  # USERAUTH_REQUESTs so far: only the first "none" is free
        self.username: str | None = None  # the user of the attempts so far
        self.method = ""  # the method that succeeded
        self.policy: AuthPolicy | None = None
        self._pending: _Pending | None = None

    @property
    def authenticated(self) -> bool:
        return self.state is ServerState.AUTHENTICATED

    def start(self) -> None:
        """We accepted ssh-userauth: requests may arrive."""
        if self.state is ServerState.WAIT_SERVICE:
            self.state = ServerState.IDLE

    # ------------------------------------------------ the runtime's decision

    def accept(self, policy: AuthPolicy | None = None) -> None:
        """Accept the pending request: PK_OK for a query, USERAUTH_SUCCESS
        otherwise; for a signed public key request whose signature does not
        verify, USERAUTH_FAILURE (counted) instead."""
        pending = self._take_pending()
        if pending is None:
            return
        if pending.method == "publickey" and not pending.query and not self._verify(pending):
            self.state = ServerState.IDLE
            self._fail()
            return
        if pending.query:
            assert pending.key is not None
            self.state = ServerState.IDLE
            self._transport.send(
                encode_byte(USERAUTH_PK_OK)
                + encode_string(pending.algorithm)
                + encode_string(pending.key.blob)
            )
            return
        self._transport.send(encode_byte(MsgType.USERAUTH_SUCCESS))
        self.state = ServerState.AUTHENTICATED
        self.method, self.policy = pending.method, policy
        self._events.append(AuthSucceeded(username=pending.username, method=pending.method, policy=policy))

    def _verify(self, pending: _Pending) -> bool:
        # RFC 4252 §7: the signature covers the session id and the request.
        key, session_id = pending.key, self._transport.session_id
        assert key is not None and session_id is not None
        data = publickey_signed_data(session_id, pending.username, pending.algorithm, key.blob)
        return key.verify(pending.signature, data, (pending.algorithm,))

    def reject(self) -> None:
        """Refuse the pending request: USERAUTH_FAILURE (or, at MaxAuthTries, DISCONNECT)."""
        if self._take_pending() is not None:
            self.state = ServerState.IDLE
            self._fail()

    def _take_pending(self) -> _Pending | None:
        if self._transport.state in ENDED:
            return None  # the client left while the runtime was deciding
        pending, self._pending = self._pending, None
        if pending is None or self.state is not ServerState.DECIDING:
            raise LocalProtocolError("no authentication request is waiting for a decision")
        return pending

    # -------------------------------------------------------------- input

    def receive(self, msg: int, payload: bytes) -> None:
        """A message numbered 50-79 from the client."""
        handler = _SERVER_TABLE.get((self.state, msg))
        if handler is None:
            raise RemoteProtocolError(self._unexpected(msg))
        handler(self, payload)

    def _unexpected(self, msg: int) -> str:
        if msg in _SERVER_SENDS:
            # CVE-2018-10933, CVE-2018-1000805: a client "sending" SUCCESS.
            return f"client sent message {msg}, which only a server may send"
        if self.state is ServerState.WAIT_SERVICE:
            return f"authentication message {msg} before the ssh-userauth service was accepted"
        if self.state is ServerState.DECIDING and msg == MsgType.USERAUTH_REQUEST:
            return "authentication request while the previous one is still being decided"
        return f"unexpected authentication message {msg} in state {self.state.value}"

    def _ignore(self, payload: bytes) -> None:
        """RFC 4252 §5.1: requests after success SHOULD be silently ignored."""

    def _on_request(self, payload: bytes) -> None:
        # RFC 4252 §5. A new request abandons a keyboard-interactive exchange.
        self.state = ServerState.IDLE
        r = Reader(payload, 1)
        username = r.text(MAX_USERNAME)
        service = r.ascii(MAX_NAME)
        method = r.ascii(MAX_NAME)
        if service != CONNECTION_SERVICE:
            # RFC 4252 §5: the server MAY disconnect at once; it is RECOMMENDED
            # to say why.
            self._transport.disconnect(
                DisconnectReason.SERVICE_NOT_AVAILABLE, f"service not available: {service}"
            )
            return
        if self._banner is not None:
            # RFC 4252 §5.4: before the first reply, once.
            banner, self._banner = self._banner, None
            self._transport.send(
                encode_byte(MsgType.USERAUTH_BANNER) + encode_string(banner) + encode_string(b"")
            )
        # RFC 4252 §5: a change of user flushes whatever the previous user's
        # attempts accumulated. The failure count is per connection and stays.
        self.username = username
        self._requests += 1
        if method == "none":
            r.check_end()
            # OpenSSH (auth2.c) exempts "none" only as the first attempt; later
            # ones count, or a client could ask forever.
            self._fail(counted=self._requests > 1)
        elif method in self.methods:
            _SERVER_METHODS[method](self, r, username)
        else:
            self._fail()  # OpenSSH counts a method it does not offer as a failure

    def _on_publickey(self, r: Reader, username: str) -> None:
        # RFC 4252 §7
        signed = r.boolean()
        algorithm = r.ascii(MAX_NAME)
        blob = r.string(MAX_KEY_BLOB)
        signature = r.string(MAX_SIGNATURE) if signed else b""
        r.check_end()
        try:
            key: PublicKey | None = public_key_from_blob(blob)
        except KeyFormatError:
            key = None
        if key is None or PUBLICKEY_ALGORITHMS.get(algorithm) != key.key_type:
            self._fail()
            return
        # The key is looked up first; accept() verifies the signature.
        self._ask(
            _Pending(username, "publickey", key, algorithm, query=not signed, signature=signature),
            PublicKeyAuthRequested(username=username, key=key, algorithm=algorithm, signed=signed),
        )

    def _on_password(self, r: Reader, username: str) -> None:
        # RFC 4252 §8
        change = r.boolean()
        secret = r.string()
        if change:
            r.string()  # the new password: changing passwords is not supported
        r.check_end()
        password = None if change else _decode_password(secret)
        if password is None:
            self._fail()
            return
        self._ask(_Pending(username, "password"), PasswordAuthRequested(username=username, password=password))

    def _on_keyboard_interactive(self, r: Reader, username: str) -> None:
        # RFC 4256 §3.1: language tag and submethods are hints; we ignore them
        # and ask one question, the password, as OpenSSH's "Password: " does.
        r.string(MAX_LANGUAGE)
        r.string(MAX_TEXT)
        r.check_end()
        self._transport.send(
            encode_byte(MsgType.USERAUTH_INFO_REQUEST)
            + encode_string(b"")  # name
            + encode_string(b"")  # instruction
            + encode_string(b"")  # language tag
            + encode_uint32(1)
            + encode_string(_PASSWORD_PROMPT)
            + encode_bool(False)  # no echo
        )
        self.state = ServerState.KBDINT_PROMPTED

    def _on_info_response(self, payload: bytes) -> None:
        # RFC 4256 §3.4
        r = Reader(payload, 1)
        count = r.uint32()
        if count > MAX_PROMPTS:
            raise RemoteProtocolError(f"keyboard-interactive response with {count} answers")
        responses = [r.string() for _ in range(count)]
        r.check_end()
        self.state = ServerState.IDLE
        # RFC 4256 §3.4: a count that does not match the prompts MUST fail.
        password = _decode_password(responses[0]) if count == 1 else None
        username = self.username
        assert username is not None
        if password is None:
            self._fail()
            return
        self._ask(
            _Pending(username, "keyboard-interactive"),
            PasswordAuthRequested(username=username, password=password, method="keyboard-interactive"),
        )

    def _ask(self, pending: _Pending, event: Event) -> None:
        self._pending = pending
        self.state = ServerState.DECIDING
        self._events.append(event)

    def _fail(self, counted: bool = True) -> None:
        """USERAUTH_FAILURE, or DISCONNECT once the failures reach MaxAuthTries."""
        if counted:
            self.failures += 1
            if self.failures >= self.max_tries:
                # sshd ends it with PROTOCOL_ERROR (2), and ssh users know the
                # line "Received disconnect from ...:2: Too many authentication
                # failures"; RFC 4253 §11.1 leaves the code to us.
                self._transport.disconnect(
                    DisconnectReason.PROTOCOL_ERROR, "Too many authentication failures"
                )
                return
        self._transport.send(
            encode_byte(MsgType.USERAUTH_FAILURE) + encode_namelist(self.methods) + encode_bool(False)
        )


def _decode_password(secret: bytes) -> str | None:
    """RFC 4252 §8: UTF-8 text; too long or undecodable is a plain failure."""
    if len(secret) > MAX_PASSWORD:
        return None
    try:
        return secret.decode("utf-8")
    except UnicodeDecodeError:
        return None


# Messages only a server sends (message 60 is PK_OK / PASSWD_CHANGEREQ / INFO_REQUEST).
_SERVER_SENDS = frozenset(
    {
        MsgType.USERAUTH_FAILURE,
        MsgType.USERAUTH_SUCCESS,
        MsgType.USERAUTH_BANNER,
        MsgType.USERAUTH_INFO_REQUEST,
    }
)

_SERVER_METHODS: dict[str, Callable[[ServerAuth, Reader, str], None]] = {
    "publickey": ServerAuth._on_publickey,
    "password": ServerAuth._on_password,
    "keyboard-interactive": ServerAuth._on_keyboard_interactive,
}

_ServerHandler = Callable[[ServerAuth, bytes], None]
# (state, message) -> handler. Everything else, including any message only a
# server may send, is a protocol error.
_SERVER_TABLE: dict[tuple[ServerState, int], _ServerHandler] = {
    (ServerState.IDLE, MsgType.USERAUTH_REQUEST): ServerAuth._on_request,
    (ServerState.KBDINT_PROMPTED, MsgType.USERAUTH_REQUEST): ServerAuth._on_request,
    (ServerState.KBDINT_PROMPTED, MsgType.USERAUTH_INFO_RESPONSE): ServerAuth._on_info_response,
    (ServerState.AUTHENTICATED, MsgType.USERAUTH_REQUEST): ServerAuth._ignore,
}
