"""Server-side user authentication in the asyncio runtime: an in-process
``listen()`` server, and a tiny client that drives the core's ClientConnection
over a real socket, so every decision goes through the server pump."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import bcrypt
import pytest

from hashike.aio import server_auth
from hashike.aio.server import Server, ServerOptions, listen
from hashike.aio.server_auth import (
    DEFAULT_AUTHORIZED_KEYS_FILES,
    Account,
    PasswordFileError,
    UserAuthenticator,
    load_password_file,
    login_key_options,
)
from hashike.config.sshd_config import DEFAULT_AUTHORIZED_KEYS_FILE
from hashike.keys.authorized_keys import load_authorized_keys
from hashike.proto.config import TransportConfig
from hashike.proto.connection import ClientConnection, ServerConnection
from hashike.proto.constants import DisconnectReason
from hashike.proto.events import (
    AuthBanner,
    AuthFailed,
    AuthPrompts,
    AuthSucceeded,
    Disconnected,
    Event,
    HostKeyReceived,
    PublicKeyAccepted,
    ServiceAccepted,
)
from hashike.proto.hostkey import PrivateKey
from tests.helpers import eventually
from tests.proto.authkit import user_key
from tests.proto.pair import host_key

E = TypeVar("E")
ALL_METHODS = ("publickey", "password", "keyboard-interactive")
COST = 4  # bcrypt's cheapest cost keeps these tests fast


def bcrypt_hash(password: str, cost: int = COST) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(cost)).decode("ascii")


class TinyClient:
    """A ClientConnection core over an asyncio stream: just enough to log in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.core = ClientConnection(TransportConfig(), rng=os.urandom)
        self.reader, self.writer = reader, writer
        self.pending: list[Event] = []
        self.seen: list[Event] = []

    @classmethod
    async def connect(cls, port: int) -> TinyClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        await client.next(ServiceAccepted)
        return client

    def _flush(self) -> None:
        data = self.core.data_to_send()
        if data:
            self.writer.write(data)

    def _collect(self) -> None:
        for event in self.core.events_received():
            if isinstance(event, HostKeyReceived):
                self.core.accept_host_key()
            self.pending.append(event)

    async def next(self, *kinds: type[Event], timeout: float = 10) -> Event:
        """The next event of one of ``kinds``; the ones skipped go to ``seen``."""
        async with asyncio.timeout(timeout):
            while True:
                self._collect()
                self._flush()
                while self.pending:
                    event = self.pending.pop(0)
                    self.seen.append(event)
                    if isinstance(event, kinds):
                        return event
                data = await self.reader.read(65536)
                if not data:
                    self.core.receive_eof()
                    self._collect()
                    if not self.pending:
                        raise ConnectionError("server closed the connection")
                    continue
                self.core.receive_data(data)

    async def publickey(self, user: str, key: PrivateKey, algorithm: str | None = None) -> Event:
        """Query, then sign on acceptance, as OpenSSH does."""
        algorithm = algorithm or key.signature_algorithms()[0]
        self.core.auth_publickey_query(user, key.public_key, algorithm)
        reply = await self.next(PublicKeyAccepted, AuthFailed, Disconnected)
        if not isinstance(reply, PublicKeyAccepted):
            return reply
        return await self.signed(user, key, algorithm)

    async def signed(self, user: str, key: PrivateKey, algorithm: str | None = None) -> Event:
        """A signed request straight away, with no query first."""
        algorithm = algorithm or key.signature_algorithms()[0]
        data = self.core.auth_publickey_sign(user, key.public_key, algorithm)
        self.core.auth_publickey_signed(key.sign(data, algorithm))
        return await self.next(AuthSucceeded, AuthFailed, Disconnected)

    async def password(self, user: str, password: str) -> Event:
        self.core.auth_password(user, password)
        return await self.next(AuthSucceeded, AuthFailed, Disconnected)

    async def keyboard_interactive(self, user: str, password: str) -> Event:
        self.core.auth_keyboard_interactive(user)
        prompts = await self.next(AuthPrompts, AuthFailed, Disconnected)
        if not isinstance(prompts, AuthPrompts):
            return prompts
        assert prompts.prompts == (("Password: ", False),)
        self.core.answer_prompts([password])
        return await self.next(AuthSucceeded, AuthFailed, Disconnected)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def only(events: Sequence[object], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def server_core(server: Server) -> ServerConnection:
    (pump,) = server.connections
    return pump.core


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "authorized_keys"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "passwords"
    path.write_text(
        f"# hashike-keygen -P lines\nalice:{bcrypt_hash('wonderland')}\n\n"
        f"mallory:{bcrypt_hash('evil')}\nbob:{bcrypt_hash('builder')}\n"
    )
    return path


def options(keys_file: Path, **changes: object) -> ServerOptions:
    defaults: dict[str, object] = {
        "authorized_keys_files": (str(keys_file),),
        "allow_users": ("alice", "bob"),
    }
    defaults.update(changes)
    return ServerOptions(**defaults)  # type: ignore[arg-type]


async def start(opts: ServerOptions) -> Server:
    return await listen("127.0.0.1", 0, host_keys=[host_key()], options=opts)


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    caplog.set_level(logging.DEBUG, logger="hashike")
    yield lambda: [r.getMessage() for r in caplog.records if r.name.startswith("hashike")]


# ------------------------------------------------------------ public keys


KEY_ALGORITHMS = [
    ("ssh-ed25519", "ssh-ed25519", "ED25519"),
    ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256", "ECDSA"),
    ("ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384", "ECDSA"),
    ("ssh-rsa", "rsa-sha2-512", "RSA"),
    ("ssh-rsa", "rsa-sha2-256", "RSA"),
]


@pytest.mark.parametrize(("key_type", "algorithm", "log_type"), KEY_ALGORITHMS)
async def test_authorized_key_logs_in(
    keys_file: Path, records: Callable[[], list[str]], key_type: str, algorithm: str, log_type: str
) -> None:
    key = user_key(key_type)
    keys_file.write_text(key.public_key.openssh_line("alice@laptop") + "\n")
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        result = await client.publickey("alice", key, algorithm)
        assert isinstance(result, AuthSucceeded), result
        assert result.method == "publickey"
        core = server_core(server)
        assert core.authenticated and core.auth_username == "alice"
        port = client.writer.get_extra_info("sockname")[1]
        await client.close()
    expected = f"Accepted publickey for alice from 127.0.0.1 port {port} ssh2: {log_type} "
    assert [m for m in records() if m.startswith("Accepted")] == [expected + key.public_key.fingerprint()]


async def test_signed_request_without_query(keys_file: Path) -> None:
    key = user_key()
    keys_file.write_text(key.public_key.openssh_line() + "\n")
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.signed("alice", key), AuthSucceeded)
        await client.close()


async def test_key_not_in_file_is_refused(keys_file: Path, records: Callable[[], list[str]]) -> None:
    keys_file.write_text(user_key(slot=1).public_key.openssh_line() + "\n")
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        failed = await client.publickey("alice", user_key())
        assert failed == AuthFailed(methods=("publickey",), partial_success=False)
        failed = await client.signed("alice", user_key())
        assert failed == AuthFailed(methods=("publickey",), partial_success=False)
        assert not server_core(server).authenticated
        await client.close()
    assert any(m.startswith("Failed publickey for alice from 127.0.0.1 port ") for m in records())


async def test_missing_file_refuses(tmp_path: Path) -> None:
    async with await start(options(tmp_path / "absent")) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.publickey("alice", user_key()), AuthFailed)
        await client.close()


async def test_key_options_become_the_policy(keys_file: Path) -> None:
    key = user_key()
    keys_file.write_text(
        "# restricted key\n"
        + 'restrict,port-forwarding,permitopen="db:5432" '
        + key.public_key.openssh_line()
    )
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.publickey("alice", key), AuthSucceeded)
        policy = login_key_options(server_core(server))
        assert policy is not None and policy.restrict
        assert policy.permits_open("db", 5432)
        assert not policy.permits_open("db", 22)
        assert not policy.allows_pty()
        await client.close()


@pytest.mark.parametrize(
    ("option", "accepted"),
    [
        ('from="127.0.0.1"', True),
        ('from="127.0.0.0/8,!10.*"', True),
        ('from="10.0.0.0/8"', False),
        ('from="*,!127.0.0.1"', False),
        ('from="localhost"', False),  # no DNS: only the address is matched
    ],
)
async def test_from_option(
    keys_file: Path, records: Callable[[], list[str]], option: str, accepted: bool
) -> None:
    key = user_key()
    keys_file.write_text(f"{option} {key.public_key.openssh_line()}\n")
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        result = await client.publickey("alice", key)
        assert isinstance(result, AuthSucceeded if accepted else AuthFailed), result
        await client.close()
    if not accepted:
        assert any("(from=)" in m and m.startswith("Refused key") for m in records())


async def test_a_later_line_for_the_same_key_may_accept(keys_file: Path) -> None:
    key = user_key()
    line = key.public_key.openssh_line()
    keys_file.write_text(f'from="10.0.0.0/8" {line}\npermitopen="a:1" {line}\n')
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.publickey("alice", key), AuthSucceeded)
        policy = login_key_options(server_core(server))
        assert policy is not None and policy.permits_open("a", 1) and not policy.permits_open("b", 1)
        await client.close()


async def test_expired_key_is_refused(keys_file: Path) -> None:
    key = user_key()
    keys_file.write_text(f'expiry-time="20200101" {key.public_key.openssh_line()}\n')
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.publickey("alice", key), AuthFailed)
        await client.close()


async def test_several_files_and_tokens(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    alice, bob = user_key(slot=0), user_key(slot=1)
    (tmp_path / "keys" / "alice").write_text(alice.public_key.openssh_line() + "\n")
    (tmp_path / "keys" / "bob").write_text(bob.public_key.openssh_line() + "\n")
    opts = options(
        tmp_path / "absent", authorized_keys_files=(str(tmp_path / "absent"), str(tmp_path / "keys" / "%u"))
    )
    async with await start(opts) as server:
        for user, key, ok in [("alice", alice, True), ("alice", bob, False), ("bob", bob, True)]:
            client = await TinyClient.connect(server.port)
            assert isinstance(await client.publickey(user, key), AuthSucceeded if ok else AuthFailed)
            await client.close()


# ------------------------------------------------------------ AllowUsers


async def test_user_not_allowed_is_refused_with_a_valid_key(
    keys_file: Path, records: Callable[[], list[str]]
) -> None:
    key = user_key()
    keys_file.write_text(key.public_key.openssh_line() + "\n")
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.publickey("mallory", key), AuthFailed)
        assert isinstance(await client.signed("mallory", key), AuthFailed)
        # The same connection may still log in as an allowed name.
        assert isinstance(await client.publickey("alice", key), AuthSucceeded)
        await client.close()
    invalid = [m for m in records() if m.startswith("Invalid user")]
    assert len(invalid) == 1 and invalid[0].startswith("Invalid user mallory from 127.0.0.1 port ")


ACCOUNT = Account("hashike", "/home/hashike", 1000)


@pytest.mark.parametrize(
    ("patterns", "user", "address", "allowed"),
    [
        (None, "hashike", "127.0.0.1", True),
        (None, "root", "127.0.0.1", False),
        (("al*",), "alice", "127.0.0.1", True),
        (("al*",), "bob", "127.0.0.1", False),
        (("b?b",), "bob", "127.0.0.1", True),
        (("b?b",), "bobb", "127.0.0.1", False),
        (("Alice",), "alice", "127.0.0.1", False),  # user names are case-sensitive
        (("alice@127.0.0.1",), "alice", "127.0.0.1", True),
        (("alice@127.0.0.0/8",), "alice", "127.0.0.2", True),
        (("alice@10.*",), "alice", "127.0.0.1", False),
        (("alice@10.0.0.0/8",), "alice", "::ffff:10.1.2.3", True),
        (("a@b@127.0.0.1",), "a@b", "127.0.0.1", True),  # USER@HOST splits at the last '@'
        (("*",), "../etc", "127.0.0.1", False),
        (("*",), "a/b", "127.0.0.1", False),
        (("*",), ".hidden", "127.0.0.1", False),
        (("*",), "tab\there", "127.0.0.1", False),
        (("*",), "", "127.0.0.1", False),
        (("*",), "x" * 300, "127.0.0.1", False),
        (("*",), "zoë", "127.0.0.1", True),
    ],
)
def test_allow_users(patterns: tuple[str, ...] | None, user: str, address: str, allowed: bool) -> None:
    users = UserAuthenticator(allow_users=patterns, account=ACCOUNT)
    assert users.allowed(user, address) is allowed


def test_default_allow_users_is_the_server_user() -> None:
    users = UserAuthenticator()
    assert users.allow_users == (Account.current().name,)


def test_key_files_expand_tokens_against_the_server_account() -> None:
    users = UserAuthenticator(
        authorized_keys_files=(".ssh/authorized_keys", "/etc/keys/%u", "%h/k.%U%%"), account=ACCOUNT
    )
    assert users.key_files("alice") == [
        "/home/hashike/.ssh/authorized_keys",
        "/etc/keys/alice",
        "/home/hashike/k.1000%",
    ]


def test_default_authorized_keys_file_matches_the_config_default() -> None:
    assert DEFAULT_AUTHORIZED_KEYS_FILES == (DEFAULT_AUTHORIZED_KEYS_FILE,)
    assert ServerOptions().authorized_keys_files == DEFAULT_AUTHORIZED_KEYS_FILES


def test_bad_authorized_keys_token_is_refused_up_front() -> None:
    with pytest.raises(ValueError):
        UserAuthenticator(authorized_keys_files=("keys/%x",), account=ACCOUNT)


# ------------------------------------------------------------ passwords


def password_options(keys_file: Path, password_file: Path, **changes: object) -> ServerOptions:
    return options(keys_file, auth_methods=ALL_METHODS, password_file=str(password_file), **changes)


class CheckSpy:
    """Wraps bcrypt.checkpw: records the hash each call used, and its thread."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[bytes, bool]] = []
        self.delay = delay
        self._real = bcrypt.checkpw

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.calls.append((hashed, threading.current_thread() is threading.main_thread()))
        if self.delay:
            time.sleep(self.delay)
        return self._real(password, hashed)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> CheckSpy:
    check = CheckSpy()
    monkeypatch.setattr(bcrypt, "checkpw", check)
    return check


def stored_hashes(password_file: Path) -> set[bytes]:
    return set(load_password_file(password_file).values())


async def test_right_password_logs_in_in_a_thread(
    keys_file: Path, password_file: Path, spy: CheckSpy, records: Callable[[], list[str]]
) -> None:
    async with await start(password_options(keys_file, password_file)) as server:
        client = await TinyClient.connect(server.port)
        result = await client.password("alice", "wonderland")
        assert isinstance(result, AuthSucceeded) and result.method == "password"
        core = server_core(server)
        assert core.authenticated and core.auth_policy is None
        await client.close()
    assert spy.calls == [(load_password_file(password_file)["alice"], False)]  # not on the loop's thread
    assert any(m.startswith("Accepted password for alice from 127.0.0.1 port ") for m in records())
    assert not any("wonderland" in m for m in records())


async def test_wrong_password(
    keys_file: Path, password_file: Path, spy: CheckSpy, records: Callable[[], list[str]]
) -> None:
    async with await start(password_options(keys_file, password_file)) as server:
        client = await TinyClient.connect(server.port)
        assert await client.password("alice", "looking-glass") == AuthFailed(
            methods=ALL_METHODS, partial_success=False
        )
        assert await client.password("alice", "wonderland") == AuthSucceeded(
            username="alice", method="password"
        )
        await client.close()
    assert [h for h, _ in spy.calls] == [load_password_file(password_file)["alice"]] * 2
    assert any(m.startswith("Failed password for alice from 127.0.0.1 port ") for m in records())
    assert not any("looking-glass" in m for m in records())


@pytest.mark.parametrize(
    "user",
    [
        "nobody",  # allowed by no pattern, not in the file
        "mallory",  # in the file, not allowed
        "bob\x00",  # never a safe name
    ],
)
async def test_unknown_user_runs_bcrypt_on_a_dummy_hash(
    keys_file: Path, password_file: Path, spy: CheckSpy, records: Callable[[], list[str]], user: str
) -> None:
    async with await start(password_options(keys_file, password_file)) as server:
        client = await TinyClient.connect(server.port)
        assert await client.password(user, "evil") == AuthFailed(methods=ALL_METHODS, partial_success=False)
        await client.close()
    ((hashed, on_loop),) = spy.calls
    assert hashed not in stored_hashes(password_file)
    assert hashed.startswith(b"$2b$%02d$" % COST)  # the same cost as the file's hashes
    assert not on_loop
    assert any(m.startswith(f"Failed password for invalid user {user[:3]}") for m in records())


async def test_allowed_user_without_a_password_line_uses_the_dummy(
    keys_file: Path, tmp_path: Path, spy: CheckSpy
) -> None:
    path = tmp_path / "pw"
    path.write_text(f"bob:{bcrypt_hash('builder')}\n")
    async with await start(password_options(keys_file, path)) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.password("alice", "builder"), AuthFailed)
        await client.close()
    ((hashed, _),) = spy.calls
    assert hashed != load_password_file(path)["bob"]


async def test_unknown_user_and_wrong_password_look_the_same(keys_file: Path, password_file: Path) -> None:
    async with await start(password_options(keys_file, password_file, banner="hello\n")) as server:
        seen = []
        for user in ("alice", "nobody"):
            client = await TinyClient.connect(server.port)
            client.seen.clear()
            await client.password(user, "wrong")
            await client.publickey(user, user_key())
            await client.keyboard_interactive(user, "wrong")
            seen.append(client.seen)
            await client.close()
    assert seen[0] == seen[1]


async def test_password_longer_than_bcrypt_reads_is_refused(keys_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(f"alice:{bcrypt_hash('a' * 72)}\n")
    async with await start(password_options(keys_file, path)) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.password("alice", "a" * 73), AuthFailed)
        assert isinstance(await client.password("alice", "a" * 72), AuthSucceeded)
        await client.close()


async def test_keyboard_interactive(
    keys_file: Path, password_file: Path, records: Callable[[], list[str]]
) -> None:
    async with await start(password_options(keys_file, password_file)) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.keyboard_interactive("bob", "wrong"), AuthFailed)
        result = await client.keyboard_interactive("bob", "builder")
        assert result == AuthSucceeded(username="bob", method="keyboard-interactive")
        await client.close()
    messages = records()
    assert any(m.startswith("Failed keyboard-interactive for bob from 127.0.0.1") for m in messages)
    assert any(m.startswith("Accepted keyboard-interactive for bob from 127.0.0.1") for m in messages)


async def test_password_file_is_read_at_each_attempt(
    keys_file: Path, password_file: Path, tmp_path: Path
) -> None:
    async with await start(password_options(keys_file, password_file)) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.password("alice", "new"), AuthFailed)
        password_file.write_text(f"alice:{bcrypt_hash('new')}\n")
        assert isinstance(await client.password("alice", "new"), AuthSucceeded)
        await client.close()


async def test_unreadable_password_file_refuses_and_logs(
    keys_file: Path, tmp_path: Path, records: Callable[[], list[str]]
) -> None:
    path = tmp_path / "pw"
    path.write_text(f"alice:{bcrypt_hash('x')}\n")
    async with await start(password_options(keys_file, path)) as server:
        path.unlink()
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.password("alice", "x"), AuthFailed)
        await client.close()
    assert any("No such file" in m for m in records())


async def test_client_leaving_during_the_check(
    keys_file: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spy = CheckSpy(delay=0.3)
    monkeypatch.setattr(bcrypt, "checkpw", spy)
    async with await start(password_options(keys_file, password_file)) as server:
        client = await TinyClient.connect(server.port)
        client.core.auth_password("alice", "wonderland")
        client._flush()
        await eventually(lambda: spy.calls, what="the password check starts")
        await client.close()
        await eventually(lambda: not server.connections, what="the server drops the connection")
        await asyncio.sleep(0.4)  # the thread finishes with nobody to answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"auth_methods": ("publickey", "password")}, "password file"),
        ({"auth_methods": ("keyboard-interactive",)}, "password file"),
        ({"auth_methods": ("publickey", "hostbased")}, "unsupported authentication methods: hostbased"),
        ({"max_auth_tries": 0}, "max_auth_tries"),
    ],
)
def test_options_no_connection_could_use_are_refused_up_front(
    keys_file: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Server([host_key()], options(keys_file, **changes))


# ------------------------------------------------------------ PasswordFile


def test_load_password_file(tmp_path: Path) -> None:
    first, second = bcrypt_hash("1"), bcrypt_hash("2")
    path = tmp_path / "pw"
    path.write_bytes(
        (
            f"# comment\n\n  \nalice:{first}\nalice:{second}\n"
            "broken line\n:nouser\nbob:plaintext\n"
            f"zoë:{second}\r\n"
        ).encode()
        + b"\xff:"
        + second.encode()
        + b"\n"
    )
    warnings: list[tuple[int, str]] = []
    entries = load_password_file(path, warnings)
    assert entries == {"alice": first.encode(), "zoë": second.encode()}
    assert [line for line, _ in warnings] == [6, 7, 8, 10]


def test_load_password_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError, match="No such file"):
        load_password_file(tmp_path / "absent")
    big = tmp_path / "big"
    big.write_bytes(b"#" * (server_auth.MAX_PASSWORD_FILE_SIZE + 1))
    with pytest.raises(PasswordFileError, match="larger than"):
        load_password_file(big)


# ------------------------------------------------------------ limits, banner, timers


async def test_max_auth_tries(keys_file: Path) -> None:
    keys_file.write_text("")
    async with await start(options(keys_file, max_auth_tries=2)) as server:
        client = await TinyClient.connect(server.port)
        assert isinstance(await client.publickey("alice", user_key(slot=0)), AuthFailed)
        end = await client.publickey("alice", user_key(slot=1))
        assert isinstance(end, Disconnected)
        assert end.reason == DisconnectReason.PROTOCOL_ERROR
        assert end.description == "Too many authentication failures"
        await client.close()


async def test_banner_comes_before_the_first_reply(keys_file: Path) -> None:
    async with await start(options(keys_file, banner="Authorized use only.\n")) as server:
        client = await TinyClient.connect(server.port)
        client.seen.clear()
        await client.publickey("alice", user_key())
        await client.publickey("alice", user_key())
        assert only(client.seen, AuthBanner) == [AuthBanner(message="Authorized use only.\n")]
        assert isinstance(client.seen[0], AuthBanner)
        await client.close()


async def test_no_banner_by_default(keys_file: Path) -> None:
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        await client.publickey("alice", user_key())
        assert not only(client.seen, AuthBanner)
        await client.close()


async def test_authenticated_connection_leaves_grace_time_and_max_startups(keys_file: Path) -> None:
    key = user_key()
    keys_file.write_text(key.public_key.openssh_line() + "\n")
    async with await start(options(keys_file, login_grace_time=0.3)) as server:
        client = await TinyClient.connect(server.port)
        pending = await TinyClient.connect(server.port)
        assert len(server.startups) == 2
        assert isinstance(await client.publickey("alice", key), AuthSucceeded)
        await eventually(lambda: len(server.startups) == 1, what=lambda: server.startups)
        assert len(server.connections) == 2
        # Past LoginGraceTime: the unauthenticated one is cut off, the other stays.
        end = await pending.next(Disconnected, timeout=5)
        assert isinstance(end, Disconnected) and "Timeout before authentication" in end.description
        await asyncio.sleep(0.3)
        assert not client.core.closed and len(server.connections) == 1
        await pending.close()
        await client.close()


async def test_server_close_ends_authenticated_connections(keys_file: Path) -> None:
    key = user_key()
    keys_file.write_text(key.public_key.openssh_line() + "\n")
    server = await start(options(keys_file))
    client = await TinyClient.connect(server.port)
    assert isinstance(await client.publickey("alice", key), AuthSucceeded)
    server.close()
    await server.wait_closed()
    end = await client.next(Disconnected)
    assert isinstance(end, Disconnected) and end.description == "server shutting down"
    await client.close()


# ------------------------------------------------- issue 13: enumeration


async def test_user_enumeration_publickey_reads_authorized_keys_for_every_name(
    keys_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The failure for an existing user took 2-4 times as long as for an
    # unknown one: only allowed names had their authorized_keys read. Every
    # name now costs the same lookups (timing itself is never asserted).
    keys_file.write_text(user_key(slot=1).public_key.openssh_line() + "\n")
    reads: list[str] = []
    original = load_authorized_keys

    def counting(path: str, *args: object) -> object:
        reads.append(path)
        return original(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(server_auth, "load_authorized_keys", counting)  # as server_auth calls it
    counts = {}
    async with await start(options(keys_file)) as server:
        client = await TinyClient.connect(server.port)
        for user in ("alice", "mallory", "../../etc/x"):
            reads.clear()
            assert isinstance(await client.signed(user, user_key()), AuthFailed)
            counts[user] = len(reads)
        await client.close()
    assert counts == {"alice": 1, "mallory": 1, "../../etc/x": 1}
