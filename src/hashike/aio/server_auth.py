"""User authentication on the server: who may log in, with which key or password.

Theory of operation. The core (:class:`~hashike.proto.connection.ServerConnection`)
checks all it can alone (the method is offered, MaxAuthTries) and asks the
rest with a :class:`PublicKeyAuthRequested` or :class:`PasswordAuthRequested`
event; a signed public key request's signature is verified only once its key
is accepted here. :class:`ConnectionAuth` answers those
events for one connection, with what :class:`UserAuthenticator` knows about
users, shared by every connection of a server.

One account. hashiked runs as one ordinary OS user and never changes user. A
login name is a label that ``AllowUsers`` admits (by default only the name of
that user), and every admitted name maps to that one account: in
``AuthorizedKeysFile``, ``%h`` is the account's home directory, ``%U`` its uid
and ``%u`` the login name. So ``/etc/hashike/keys/%u`` gives each login name
keys of its own, while the default ``.ssh/authorized_keys`` lets every admitted
name in with the account's keys. Names that could leave a directory through
``%u`` (a ``/``, a leading ``.``, control characters) are never admitted.

Many accounts (``PrivilegeSeparation``, see :mod:`hashike.aio.privsep`). A
login name is the OS account of that name: ``%h`` and ``%U`` are that
account's, and by default every name with an account may log in, except
root's (uid 0), which never may. A name without an account, or root's,
fails as a name AllowUsers does not admit.

No user enumeration. The reply to a request depends only on its outcome, never
on why it failed. A password attempt for a name that is not admitted, or that
has no line in the PasswordFile, still runs bcrypt, against a dummy hash of the
same cost, so it takes as long as a wrong password; a public key request
for such a name reads the account's authorized_keys files all the same. bcrypt runs in a thread
(``asyncio.to_thread``), so one slow check never stalls other connections;
the core waits in its DECIDING state meanwhile.

Nothing here logs a password, and every name a peer chose is logged through
:func:`~hashike.proto.text.escape_text`. Log lines follow sshd's wording, at INFO:
``Accepted publickey for alice from 127.0.0.1 port 5555 ssh2: ED25519 SHA256:...``,
``Failed password for alice from ...``, ``Invalid user bob from ...``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pwd
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import bcrypt

from hashike.keys.authorized_keys import (
    KeyOptions,
    expand_authorized_keys_path,
    load_authorized_keys,
    parse_authorized_keys,
)
from hashike.keys.cert_authority import grant_from_authorized_keys, grant_from_trusted_cas
from hashike.keys.patterns import match_pattern
from hashike.keys.revoked_keys import RevocationCheckError, is_revoked
from hashike.keys.textfile import read_bounded
from hashike.proto.certs import Certificate
from hashike.proto.connection import ServerConnection
from hashike.proto.events import PasswordAuthRequested, PublicKeyAuthRequested
from hashike.proto.hostkey import PublicKey
from hashike.proto.text import escape_text

from .keys_command import KeysCommand, run_keys_command

__all__ = [
    "DEFAULT_AUTHORIZED_KEYS_FILES",
    "MAX_PASSWORD_FILE_SIZE",
    "Account",
    "ConnectionAuth",
    "PasswordFileError",
    "UserAuthenticator",
    "login_key_options",
    "load_password_file",
]

log = logging.getLogger("hashike.server")

DEFAULT_AUTHORIZED_KEYS_FILES: tuple[str, ...] = (".ssh/authorized_keys",)
MAX_PASSWORD_FILE_SIZE = 1 << 20
MAX_LOGIN_NAME = 256  # longer than any OS allows; a path component is at most 255 bytes
_BCRYPT_MAX = 72  # bcrypt reads at most 72 bytes of a password
_DEFAULT_COST = 12  # bcrypt.gensalt()'s, which hashike-keygen -P uses
_BCRYPT_HASH = re.compile(rb"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
# sshd's names for key types in its log lines.
_LOG_KEY_TYPES = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA"}


class PasswordFileError(OSError):
    """The PasswordFile cannot be read; the message is one line."""


@dataclass(frozen=True, slots=True)
class Account:
    """An OS account: the one the server runs as, which every login maps to,
    or with many accounts the one of a login's name."""

    name: str
    home: str
    uid: int

    @classmethod
    def current(cls) -> Account:
        entry = pwd.getpwuid(os.getuid())
        return cls(entry.pw_name, entry.pw_dir, entry.pw_uid)

    @classmethod
    def named(cls, name: str) -> Account | None:
        """The account called ``name``, None if there is none."""
        try:
            entry = pwd.getpwnam(name)
        except (KeyError, ValueError):  # ValueError: a NUL, which no name has
            return None
        return cls(entry.pw_name, entry.pw_dir, entry.pw_uid)


def load_password_file(
    path: str | os.PathLike[str], warnings: list[tuple[int, str]] | None = None
) -> dict[str, bytes]:
    """Read a PasswordFile: ``user:bcrypt-hash`` lines, blank and ``#`` lines
    ignored, the first line of a user winning. Lines that are not of that
    shape are skipped and reported to ``warnings`` as ``(line, message)``.

    Raises :class:`PasswordFileError` if the file cannot be read or is larger
    than MAX_PASSWORD_FILE_SIZE."""
    try:
        data, more = read_bounded(path, MAX_PASSWORD_FILE_SIZE)
    except OSError as exc:
        raise PasswordFileError(f"PasswordFile {os.fspath(path)}: {exc.strerror or exc}") from None
    if more:
        raise PasswordFileError(f"PasswordFile {os.fspath(path)}: larger than {MAX_PASSWORD_FILE_SIZE} bytes")
    entries: dict[str, bytes] = {}
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        line = raw.strip(b" \t\r")
        if not line or line.startswith(b"#"):
            continue
        user, sep, hashed = line.partition(b":")
        problem = None
        if not sep or not user:
            problem = "not of the form user:hash"
        elif not _BCRYPT_HASH.fullmatch(hashed):
            problem = "not a bcrypt hash ($2b$...)"
        else:
            try:
                name = user.decode("utf-8")
            except UnicodeDecodeError:
                problem = "user name is not valid UTF-8"
            else:
                entries.setdefault(name, hashed)
        if problem is not None and warnings is not None:
            warnings.append((lineno, problem))
    return entries


@functools.cache
def _dummy_hash(cost: int) -> bytes:
    """A bcrypt hash of a random secret nobody knows, of the given cost: what
    attempts for unknown users are checked against (and always fail)."""
    return bcrypt.hashpw(os.urandom(16).hex().encode("ascii"), bcrypt.gensalt(cost))


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


def _safe_login_name(name: str) -> bool:
    """May this name be admitted at all? It reaches file names through %u."""
    return (
        0 < len(name) <= MAX_LOGIN_NAME
        and "/" not in name
        and not name.startswith(".")
        and name.isprintable()
    )


def _user(name: str) -> str:
    """A login name, as the peer chose it, made safe for one log line."""
    return escape_text(name, limit=MAX_LOGIN_NAME)


def _key_kind(key: PublicKey) -> str:
    """``ED25519``, ``ECDSA``, ``RSA-CERT``: sshd's name for a key type."""
    plain = key.key if isinstance(key, Certificate) else key
    kind = _LOG_KEY_TYPES.get(
        plain.key_type, "ECDSA" if plain.key_type.startswith("ecdsa-") else plain.key_type
    )
    return f"{kind}-CERT" if isinstance(key, Certificate) else kind


def _key_description(key: PublicKey) -> str:
    """``ED25519 SHA256:...``, as sshd logs a key; for a certificate
    ``ED25519-CERT SHA256:... ID key-id (serial N) CA ED25519 SHA256:...``."""
    text = f"{_key_kind(key)} {key.fingerprint()}"
    if isinstance(key, Certificate):
        ca = key.signature_key
        key_id = escape_text(key.fields.key_id, limit=256)
        text += f" ID {key_id} (serial {key.fields.serial}) CA {_key_kind(ca)} {ca.fingerprint()}"
    return text


class UserAuthenticator:
    """What the server knows about users: who may log in, with which keys and
    which passwords. Files are read at each attempt, as sshd reads them, so
    edits apply without a restart.

    ``allow_users`` are AllowUsers patterns (None: only ``account``'s name,
    or with ``many_accounts`` every name);
    ``authorized_keys_files`` are AuthorizedKeysFile patterns;
    ``password_file`` is the PasswordFile path (None: no passwords);
    ``many_accounts``: each name is the OS account of that name (see above)."""

    def __init__(
        self,
        *,
        allow_users: Sequence[str] | None = None,
        authorized_keys_files: Sequence[str] = DEFAULT_AUTHORIZED_KEYS_FILES,
        password_file: str | os.PathLike[str] | None = None,
        trusted_user_ca_keys: str | None = None,
        authorized_principals_file: str | None = None,
        account: Account | None = None,
        revoked_keys: str | None = None,
        keys_command: KeysCommand | None = None,
        many_accounts: bool = False,
    ) -> None:
        self.account = account or Account.current()
        self.many_accounts = many_accounts
        default = "*" if many_accounts else self.account.name
        self.allow_users = tuple(allow_users) if allow_users is not None else (default,)
        self.authorized_keys_files = tuple(authorized_keys_files)
        self.password_file = password_file
        self.trusted_user_ca_keys = trusted_user_ca_keys
        self.authorized_principals_file = authorized_principals_file
        self.revoked_keys = revoked_keys  # RevokedKeys
        self.keys_command = keys_command  # AuthorizedKeysCommand
        for pattern in self.authorized_keys_files:
            expand_authorized_keys_path(pattern, "user", "/", 0)  # ValueError for a bad token, now

    def allowed(self, username: str, address: str) -> bool:
        """AllowUsers: does a pattern admit ``username`` connecting from
        ``address``? ``USER@HOST`` (split at the last ``@``) also matches the
        address against HOST, a pattern list that may hold CIDR blocks."""
        if not _safe_login_name(username):
            return False
        if self.many_accounts:
            account = Account.named(username)
            if account is None or account.uid == 0:
                return False
        for pattern in self.allow_users:
            user_pattern, at, host_pattern = pattern.rpartition("@")
            if not at:
                user_pattern = host_pattern
            if not match_pattern(username, user_pattern):
                continue
            # from= in authorized_keys matches addresses exactly as sshd's
            # AllowUsers HOST part does (wildcards, CIDR, negation).
            if at and not KeyOptions(from_patterns=host_pattern).allows_from(address):
                continue
            return True
        return False

    def account_of(self, username: str) -> Account:
        """The account ``username`` maps to (the server's for a name that has
        none: a failing lookup then reads the same kind of files)."""
        return (Account.named(username) if self.many_accounts else None) or self.account

    def key_files(self, username: str) -> list[str]:
        """The authorized_keys files for ``username``, tokens expanded."""
        account = self.account_of(username)
        return [
            expand_authorized_keys_path(pattern, username, account.home, account.uid)
            for pattern in self.authorized_keys_files
        ]

    def find_key(
        self, username: str, key: PublicKey, address: str, now: datetime | None = None
    ) -> tuple[KeyOptions | None, str | None]:
        """The options under which ``key`` may log in as ``username`` from
        ``address``, or None and (if a line holds the key but refuses it)
        why. The caller has checked that ``username`` is allowed."""
        moment = now or datetime.now(UTC)
        if self._revoked(key):
            return None, None
        return self._find_key(username, key, address, moment)

    async def find_key_with_command(
        self, username: str, key: PublicKey, address: str
    ) -> tuple[KeyOptions | None, str | None]:
        """:meth:`find_key`, then, for a plain key no file holds, the lines
        the AuthorizedKeysCommand prints (see :mod:`hashike.aio.keys_command`)."""
        moment = datetime.now(UTC)
        if self._revoked(key):
            return None, None
        options, refusal = self._find_key(username, key, address, moment)
        command = self.keys_command
        if options is not None or command is None or isinstance(key, Certificate):
            return options, refusal
        output = await run_keys_command(
            command,
            user=username,
            home=self.account_of(username).home,
            key=key,
            log=lambda line: log.error("%s", line),
        )
        if output is None:
            return None, refusal
        for entry in parse_authorized_keys(output)[0]:
            if entry.key == key:
                why = entry.refusal(address, moment)
                if why is None:
                    return entry.options, None
                refusal = refusal or f"AuthorizedKeysCommand line {entry.line}: {why}"
        return None, refusal

    def _find_key(
        self, username: str, key: PublicKey, address: str, moment: datetime
    ) -> tuple[KeyOptions | None, str | None]:
        if isinstance(key, Certificate):
            return self._find_certificate(username, key, address, int(moment.timestamp()))
        refusal = None
        for path in self.key_files(username):
            warnings: list[tuple[int, str]] = []
            entries = load_authorized_keys(path, warnings)
            for lineno, message in warnings:
                log.debug("%s line %d: %s", path, lineno, message)
            for entry in entries:
                if entry.key != key:
                    continue
                why = entry.refusal(address, moment)
                if why is None:
                    return entry.options, None
                refusal = refusal or f"{path} line {entry.line}: {why}"
        return None, refusal

    def _revoked(self, key: PublicKey) -> bool:
        """RevokedKeys, with sshd's log lines (auth_key_is_revoked); a file
        that cannot be checked revokes every key."""
        path = self.revoked_keys
        if path is None:
            return False
        kind = f"{_key_kind(key)} {key.fingerprint()}"
        try:
            revoked = is_revoked(path, key)
        except RevocationCheckError as exc:
            log.error("Error checking authentication key %s in revoked keys file %s: %s", kind, path, exc)
            return True
        if revoked:
            log.error("Authentication key %s revoked by file %s", kind, path)
        return revoked

    def _find_certificate(
        self, username: str, cert: Certificate, address: str, now: int
    ) -> tuple[KeyOptions | None, str | None]:
        """sshd's order: cert-authority lines in authorized_keys, then
        TrustedUserCAKeys. Each refusal is logged as sshd logs it (error)."""
        errors: list[str] = []
        grant = grant_from_authorized_keys(cert, username, self.key_files(username), address, now, errors)
        if grant is None and self.trusted_user_ca_keys is not None:
            account = self.account_of(username)
            grant = grant_from_trusted_cas(
                cert, username,
                ca_file=self.trusted_user_ca_keys, principals_file=self.authorized_principals_file,
                home=account.home, uid=account.uid, address=address, now=now, errors=errors,
            )  # fmt: skip
        for reason in errors:
            log.error("%s", escape_text(reason))
        if grant is None:
            return None, None
        ca = cert.signature_key
        log.info(
            'Accepted certificate ID "%s" (serial %d) signed by %s CA %s via %s',
            escape_text(cert.fields.key_id, limit=256), cert.fields.serial,
            _key_kind(ca), ca.fingerprint(), grant.via,
        )  # fmt: skip
        return grant.options, None

    def check_password(self, username: str, password: str, *, allowed: bool) -> bool:
        """Is ``password`` right for ``username``? Blocking (bcrypt): run it in
        a thread. A name that is not ``allowed``, or not in the file, is
        checked against a dummy hash so that it costs the same time."""
        entries: dict[str, bytes] = {}
        if self.password_file is not None:
            try:
                entries = load_password_file(self.password_file)
            except PasswordFileError as exc:
                log.error("%s", exc)
        stored = entries.get(username) if allowed else None
        secret = password.encode("utf-8")
        if len(secret) > _BCRYPT_MAX:
            # hashike-keygen never hashes such a password; don't let bcrypt
            # truncate it into a match.
            stored = None
        cost = _cost(stored) if stored is not None else next(map(_cost, entries.values()), _DEFAULT_COST)
        try:
            match = bcrypt.checkpw(secret[:_BCRYPT_MAX], stored if stored is not None else _dummy_hash(cost))
        except ValueError:
            match = False
        return match and stored is not None


def login_key_options(core: ServerConnection) -> KeyOptions | None:
    """The authorized_keys options of the key the user logged in with; None
    for no restrictions (a password login, or not logged in yet). The core
    keeps them as :attr:`~ServerConnection.auth_policy` without knowing their
    type; :class:`ConnectionAuth` is what hands them over, always as
    KeyOptions, so anything else is a bug here."""
    options = core.auth_policy
    if options is not None and not isinstance(options, KeyOptions):
        raise TypeError(f"auth_policy is a {type(options).__name__}, not KeyOptions")
    return options


class ConnectionAuth:
    """Answers one connection's authentication events, for the server pump.

    Public key requests are answered at once (authorized_keys files are
    small and capped), or, with an AuthorizedKeysCommand, once it is done;
    password requests once bcrypt, in a thread, is done. A late answer is
    flushed by ``process``."""

    def __init__(self, users: UserAuthenticator, core: ServerConnection, process: Callable[[], None]) -> None:
        self._users = users
        self._core = core
        self._process = process
        self._task: asyncio.Task[None] | None = None
        self._invalid_reported: set[str] = set()
        self.login: tuple[str, PublicKey] | None = None  # who logged in with which key

    def handle(self, event: PublicKeyAuthRequested | PasswordAuthRequested, peer: tuple[str, int]) -> None:
        if isinstance(event, PublicKeyAuthRequested):
            self._publickey(event, peer)
        else:
            self._task = asyncio.get_running_loop().create_task(self._password(event, peer))

    def close(self) -> None:
        """The connection is gone: drop a check in progress."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _allowed(self, username: str, peer: tuple[str, int]) -> bool:
        host, port = peer
        if self._users.allowed(username, host):
            return True
        if username not in self._invalid_reported:
            self._invalid_reported.add(username)
            log.info("Invalid user %s from %s port %s", _user(username), host, port)
        return False

    def _publickey(self, event: PublicKeyAuthRequested, peer: tuple[str, int]) -> None:
        allowed = self._allowed(event.username, peer)
        # The same lookup for every name, so that how long a failure takes
        # does not tell which names exist: a name that is not admitted reads
        # the account's own files (its name is always safe in a path) and the
        # answer is thrown away.
        lookup = event.username if allowed else self._users.account.name
        if self._users.keys_command is not None:  # a program to wait for, off the event loop's back
            self._task = asyncio.get_running_loop().create_task(
                self._publickey_command(event, peer, allowed, lookup)
            )
            return
        self._publickey_answer(event, peer, allowed, *self._users.find_key(lookup, event.key, peer[0]))

    async def _publickey_command(
        self, event: PublicKeyAuthRequested, peer: tuple[str, int], allowed: bool, lookup: str
    ) -> None:
        try:
            options, refusal = await self._users.find_key_with_command(lookup, event.key, peer[0])
        except Exception:  # whatever went wrong, nobody gets in through it
            log.exception("AuthorizedKeysCommand for %s failed", _user(event.username))
            options, refusal = None, None
        self._task = None
        if self._core.closed:
            return  # the client left, or LoginGraceTime ran out, while the command ran
        self._publickey_answer(event, peer, allowed, options, refusal)
        self._process()

    def _publickey_answer(
        self,
        event: PublicKeyAuthRequested,
        peer: tuple[str, int],
        allowed: bool,
        options: KeyOptions | None,
        refusal: str | None,
    ) -> None:
        if options is None or not allowed:
            self._reject_publickey(event, allowed, refusal if allowed else None, peer)
            return
        self._core.accept_auth(options)  # a signed request's signature is verified now
        host, port = peer
        user, key = _user(event.username), _key_description(event.key)
        if not event.signed:
            log.debug("Key %s for %s is in authorized keys", key, user)
        elif self._core.authenticated:
            self.login = (event.username, event.key)
            log.info("Accepted publickey for %s from %s port %s ssh2: %s", user, host, port, key)
        else:
            log.info("Failed publickey for %s from %s port %s ssh2: %s", user, host, port, key)

    def _reject_publickey(
        self, event: PublicKeyAuthRequested, allowed: bool, refusal: str | None, peer: tuple[str, int]
    ) -> None:
        host, port = peer
        user = _user(event.username)
        if refusal is not None:
            log.info("Refused key %s for %s from %s: %s", _key_description(event.key), user, host, refusal)
        if event.signed:
            invalid = "" if allowed else "invalid user "
            log.info(
                "Failed publickey for %s%s from %s port %s ssh2: %s",
                invalid, user, host, port, _key_description(event.key),
            )  # fmt: skip
        else:
            log.debug("Key %s for %s is not accepted", _key_description(event.key), user)
        self._core.reject_auth()

    async def _password(self, event: PasswordAuthRequested, peer: tuple[str, int]) -> None:
        host, port = peer
        allowed = self._allowed(event.username, peer)
        try:
            ok = await asyncio.to_thread(
                self._users.check_password, event.username, event.password, allowed=allowed
            )
        except Exception:
            log.exception("password check for %s failed", _user(event.username))
            ok = False
        self._task = None
        if self._core.closed:
            return  # the client left, or LoginGraceTime ran out, while bcrypt ran
        user = _user(event.username)
        if ok:
            log.info("Accepted %s for %s from %s port %s ssh2", event.method, user, host, port)
            self._core.accept_auth(None)
        else:
            invalid = "" if allowed else "invalid user "
            log.info("Failed %s for %s%s from %s port %s ssh2", event.method, invalid, user, host, port)
            self._core.reject_auth()
        self._process()
