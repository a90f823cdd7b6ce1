"""The client's choice of authentication methods, as ssh(1) makes it.

The core only sends what it is told to; this module decides what to try and
in what order: ``none`` first (to learn the methods), then public keys
(query first, sign only once the server accepts the key, RFC 4252 §7), then
keyboard-interactive, then password. Private keys are loaded (and their
passphrase asked for) only when the server has accepted the public half.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hashike.keys.keypair import KeyFileError, PassphraseRequired, load_private_key, load_public_key_file
from hashike.keys.textfile import read_bounded
from hashike.proto.certs import Certificate, plain_algorithm
from hashike.proto.connection import ClientConnection
from hashike.proto.errors import AuthenticationFailed
from hashike.proto.events import AuthFailed, AuthPrompts, AuthSucceeded, Event, PublicKeyAccepted
from hashike.proto.hostkey import MAX_KEY_LINE, KeyFormatError, PrivateKey, PublicKey
from hashike.proto.text import TERMINAL_CONTROLS, escape_text

from .agent import AgentClient, AgentError

__all__ = [
    "AuthSettings",
    "Identity",
    "Prompt",
    "authenticate",
    "certificate_identities",
    "file_identity",
    "signature_algorithm",
]

# (prompt text, echo) -> the answer, or None when there is nobody to ask.
Prompt = Callable[[str, bool], "Awaitable[str | None] | str | None"]


@dataclass(frozen=True, slots=True)
class Identity:
    """A key to offer. ``private`` loads the private half when it is needed
    (and may ask for a passphrase); None means the agent holds it."""

    public_key: PublicKey
    source: str  # a path, or "agent: comment", for messages
    private: Callable[[], Awaitable[PrivateKey | None]] | None = None


@dataclass(slots=True, kw_only=True)
class AuthSettings:
    """What the client may try. Not frozen: the host key check may still
    narrow ``methods`` (ssh drops password methods for a changed host key
    under StrictHostKeyChecking=no) before authentication starts."""

    username: str
    identities: Sequence[Identity] = ()
    agent: AgentClient | None = None
    prompt: Prompt | None = None  # None: BatchMode, never ask
    methods: tuple[str, ...] = ("publickey", "keyboard-interactive", "password")
    password_prompts: int = 3  # NumberOfPasswordPrompts
    host_label: str = "host"  # the host name shown in prompts and errors, as ssh shows it
    log: Callable[[str], None] = field(default=lambda _line: None)  # debug lines (-v)
    notice: Callable[[str], None] = field(default=lambda _line: None)  # lines ssh always prints


def signature_algorithm(key: PublicKey, server_sig_algs: tuple[str, ...] | None) -> str:
    """RFC 8332 §3.3: RSA signs with the best SHA-2 algorithm the server lists
    in server-sig-algs (rsa-sha2-512 when it lists nothing); never ssh-rsa.
    An RSA certificate is chosen the same way, by the plain names the server
    lists, and goes under the matching certificate name, as ssh does."""
    plain_type = key.key.key_type if isinstance(key, Certificate) else key.key_type
    if plain_type != "ssh-rsa":
        return key.key_type
    algorithm = "rsa-sha2-512"
    if server_sig_algs and "rsa-sha2-512" not in server_sig_algs and "rsa-sha2-256" in server_sig_algs:
        algorithm = "rsa-sha2-256"
    return f"{algorithm}-cert-v01@openssh.com" if isinstance(key, Certificate) else algorithm


class _Session:
    def __init__(
        self, core: ClientConnection, events: asyncio.Queue[Event], flush: Callable[[], None]
    ) -> None:
        self.core = core
        self.events = events
        self.flush = flush

    async def outcome(self) -> Event:
        self.flush()
        while True:
            event = await self.events.get()
            if isinstance(event, (AuthFailed, AuthSucceeded, PublicKeyAccepted, AuthPrompts)):
                return event


async def _ask(prompt: Prompt, text: str, echo: bool) -> str | None:
    answer = prompt(text, echo)
    return await answer if inspect.isawaitable(answer) else answer


async def authenticate(
    core: ClientConnection, events: asyncio.Queue[Event], flush: Callable[[], None], settings: AuthSettings
) -> str:
    """Run user authentication to the end; return the method that succeeded.

    Raises AuthenticationFailed with OpenSSH's ``Permission denied (...).``"""
    s = _Session(core, events, flush)
    user = settings.username
    core.auth_none(user)
    result = await s.outcome()
    if isinstance(result, AuthSucceeded):
        return "none"
    assert isinstance(result, AuthFailed)
    allowed = result.methods
    tried: set[str] = set()
    while True:
        method = next((m for m in settings.methods if m in allowed and m not in tried), None)
        if method is None:
            raise AuthenticationFailed(
                f"{user}@{settings.host_label}: Permission denied ({','.join(allowed)})."
            )
        tried.add(method)
        settings.log(f"Next authentication method: {method}")
        if method == "publickey":
            outcome = await _publickey(s, settings)
        elif method == "keyboard-interactive":
            outcome = await _keyboard_interactive(s, settings)
        else:
            outcome = await _password(s, settings)
        if isinstance(outcome, AuthSucceeded):
            settings.log(f"Authentication succeeded ({method}).")
            return method
        if outcome is not None:
            allowed = outcome.methods
            if method in allowed and outcome.partial_success:
                tried.discard(method)


async def _publickey(s: _Session, settings: AuthSettings) -> AuthFailed | AuthSucceeded | None:
    last: AuthFailed | None = None
    seen: set[PublicKey] = set()
    for identity in settings.identities:
        key = identity.public_key
        if key in seen:
            continue
        seen.add(key)
        algorithm = signature_algorithm(key, s.core.server_sig_algs)
        settings.log(f"Offering public key: {identity.source} {key.key_type} {key.fingerprint()}")
        s.core.auth_publickey_query(settings.username, key, algorithm)
        answer = await s.outcome()
        if isinstance(answer, AuthFailed):
            last = answer
            if "publickey" not in answer.methods:
                return answer
            continue
        if not isinstance(answer, PublicKeyAccepted):
            return answer if isinstance(answer, AuthSucceeded) else last
        settings.log(f"Server accepts key: {identity.source} {key.key_type} {key.fingerprint()}")
        data = s.core.auth_publickey_sign(settings.username, key, algorithm)
        signature = await _sign(identity, settings, data, algorithm)
        if signature is None:
            continue  # no passphrase, or the agent refused: try the next key
        s.core.auth_publickey_signed(signature)
        result = await s.outcome()
        if isinstance(result, AuthSucceeded):
            return result
        if isinstance(result, AuthFailed):
            last = result
    return last


async def _sign(identity: Identity, settings: AuthSettings, data: bytes, algorithm: str) -> bytes | None:
    if identity.private is not None:
        private = await identity.private()
        # A certificate's key signs with the plain algorithm (PROTOCOL.certkeys).
        return private.sign(data, plain_algorithm(algorithm)) if private is not None else None
    if settings.agent is None:
        return None
    try:
        return await settings.agent.sign(identity.public_key, data, algorithm)
    except AgentError as exc:
        settings.log(f"agent: {exc}")
        return None


async def _keyboard_interactive(s: _Session, settings: AuthSettings) -> AuthFailed | AuthSucceeded | None:
    if settings.prompt is None:
        return None
    last: AuthFailed | None = None
    for _ in range(settings.password_prompts):
        s.core.auth_keyboard_interactive(settings.username)
        while True:
            answer = await s.outcome()
            if not isinstance(answer, AuthPrompts):
                break
            # The server's words reach the terminal as ssh lets them: name and
            # instruction with their newlines, no other control (utf8.c).
            for said in (answer.name, answer.instruction):
                if said:
                    settings.notice(escape_text(said, keep=TERMINAL_CONTROLS))
            responses = []
            for text, echo in answer.prompts:
                shown = escape_text(text, keep=TERMINAL_CONTROLS)
                label = f"({settings.username}@{settings.host_label})"
                reply = await _ask(settings.prompt, f"{label} {shown}", echo)
                if reply is None:
                    return last
                responses.append(reply)
            s.core.answer_prompts(responses)
        if isinstance(answer, AuthSucceeded):
            return answer
        if isinstance(answer, AuthFailed):
            last = answer
            if "keyboard-interactive" not in answer.methods:
                return answer
    return last


async def _password(s: _Session, settings: AuthSettings) -> AuthFailed | AuthSucceeded | None:
    if settings.prompt is None:
        return None
    last: AuthFailed | None = None
    for attempt in range(settings.password_prompts):
        if attempt:
            settings.notice("Permission denied, please try again.")
        password = await _ask(
            settings.prompt, f"{settings.username}@{settings.host_label}'s password: ", False
        )
        if password is None:
            return last
        s.core.auth_password(settings.username, password)
        answer = await s.outcome()
        if isinstance(answer, AuthSucceeded):
            return answer
        if isinstance(answer, AuthFailed):
            last = answer
            if "password" not in answer.methods:
                return answer
    return last


PassphrasePrompt = Callable[[str], Awaitable[str | None]]


async def file_identity(path: str, ask_passphrase: PassphrasePrompt | None) -> Identity | None:
    """An identity from a private key file. The public half comes from
    ``path.pub`` when it exists, so an encrypted key's passphrase is asked for
    only if the server accepts the key, as ssh does. None when the file is
    missing; KeyFileError for a file that exists but cannot be used."""
    if not os.path.exists(path):
        return None
    loaded: list[PrivateKey] = []

    async def private() -> PrivateKey | None:
        if loaded:
            return loaded[0]
        key = await _load_with_passphrase(path, ask_passphrase)
        if key is not None:
            loaded.append(key)
        return key

    try:
        public = load_public_key_file(f"{path}.pub")
    except KeyFileError:
        key = await private()
        if key is None:
            return None
        public = key.public_key
    return Identity(public, path, private)


def certificate_identities(identity: Identity, paths: Sequence[str]) -> list[Identity]:
    """The certificates in ``paths`` (``-cert.pub`` files) that certify
    ``identity``'s key, each an identity that signs as ``identity`` does: ssh
    offers ``id_ed25519-cert.pub`` next to ``id_ed25519``, and a
    CertificateFile with whichever identity holds its key. Missing files and
    other keys' certificates are skipped."""
    found: list[Identity] = []
    for path in paths:
        try:
            data, more = read_bounded(path, MAX_KEY_LINE)
            cert = Certificate.from_openssh_line(data.decode("ascii")) if not more else None
        except (OSError, UnicodeDecodeError, KeyFormatError):
            continue
        if cert is not None and cert.key == identity.public_key:
            found.append(Identity(cert, identity.source, identity.private))
    return found


async def _load_with_passphrase(path: str, ask: PassphrasePrompt | None) -> PrivateKey | None:
    try:
        return load_private_key(path)
    except PassphraseRequired:
        if ask is None:
            return None
    for _ in range(3):  # ssh asks three times too
        passphrase = await ask(f"Enter passphrase for key '{path}': ")
        if passphrase is None:
            return None
        try:
            return load_private_key(path, passphrase.encode("utf-8"))
        except KeyFileError as exc:
            if "incorrect passphrase" not in str(exc):
                raise
    return None
