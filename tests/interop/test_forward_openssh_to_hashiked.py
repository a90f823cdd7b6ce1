"""-L from OpenSSH's ``ssh`` through the ``hashiked`` command.

Real ``ssh -N -L localport:127.0.0.1:targetport`` logs in to a ``hashiked``
subprocess; the test then connects to ssh's local port with plain sockets:
the guide's POP3 dialogue, a large transfer both ways with half-close, and a
refused target that fails its channel but not the session.

The targets (POP3 stand-in, echo server) run on an asyncio loop in a thread
of the test process, so that the test body can use blocking sockets. ssh's
stderr (``-v``) is read by a thread; the test waits, bounded, for the lines
it expects: ``Local forwarding listening on 127.0.0.1 port N.`` before
connecting, ``channel N: open failed: ...`` after a refusal.

The helpers here are shared with tests/interop/test_forward_matrix.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from hashike.cli.pop3 import GREETING, MESSAGES, start_pop3
from tests.echo import start_echo_server
from tests.interop.conftest import find_binary, free_port

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

pytestmark = pytest.mark.interop

DEADLINE = 20.0  # any single wait: a line from ssh, a reply through the tunnel
_T = TypeVar("_T")


# --- keys ---------------------------------------------------------------------------


def keygen(path: Path, comment: str = "hashike-test") -> Path:
    """An ed25519 key made by OpenSSH's ssh-keygen (``.pub`` beside it)."""
    binary = find_binary("ssh-keygen")
    assert binary is not None
    subprocess.run(
        [binary, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return path


def public_line(key: Path) -> str:
    return Path(f"{key}.pub").read_text().strip()


# --- hashiked -----------------------------------------------------------------------


@dataclass
class Hashiked:
    """A running ``hashiked`` command; its stderr goes to ``log``."""

    process: subprocess.Popen[str]
    port: int
    log: Path
    host_key: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def known_hosts_line(self) -> str:
        algorithm, blob = public_line(self.host_key).split()[:2]
        return f"[127.0.0.1]:{self.port} {algorithm} {blob}"

    def assert_healthy(self) -> None:
        text = self.log_text()
        assert "Traceback" not in text, text
        assert self.process.poll() is None, text

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_hashiked(
    directory: Path,
    host_key: Path,
    authorized_keys: Path,
    *options: str,
    port: int = 0,
    config: Path | None = None,
) -> Hashiked:
    """``hashiked -p port -h host_key [-f config] -o ListenAddress=127.0.0.1 -o ...``;
    returns once it printed the port it listens on. The caller stops it."""
    directory.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "hashike.cli.server", "-p", str(port), "-h", str(host_key)]
    argv += [] if config is None else ["-f", str(config)]
    for option in ("ListenAddress=127.0.0.1", f"AuthorizedKeysFile={authorized_keys}", *options):
        argv += ["-o", option]
    log = directory / f"hashiked-{time.monotonic_ns()}.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, text=True
        )
    assert process.stdout is not None
    line = process.stdout.readline()  # bounded: hashiked prints this line or exits
    match = re.search(r"listening on 127\.0\.0\.1 port (\d+);", line)
    if match is None:
        process.kill()
        process.wait(10)
        raise AssertionError(f"hashiked did not start: {line!r}; log: {log.read_text()}")
    return Hashiked(process, int(match.group(1)), log, host_key)


# --- ssh -N -L ----------------------------------------------------------------------


@dataclass
class SshProcess:
    """A running ``ssh``, its stderr read line by line by a thread."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _done: bool = False

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, argv: Sequence[str]) -> SshProcess:
        """Run ``argv`` (an ssh or hashike client) in a session of its own,
        no standard input, its stderr read line by line."""
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        return cls(process)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def count(self, pattern: str) -> int:
        with self._changed:
            return sum(1 for line in self.lines if re.search(pattern, line))

    def wait_for(self, pattern: str, times: int = 1, timeout: float = DEADLINE) -> bool:
        """Wait until ``times`` lines match ``pattern``; False if ssh's stderr
        ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:  # bounded by the deadline
                if sum(1 for line in self.lines if re.search(pattern, line)) >= times:
                    return True
                remaining = deadline - time.monotonic()
                if self._done or remaining <= 0:
                    return False
                self._changed.wait(remaining)

    def stop(self) -> None:
        # ssh 9.2's client loop can take a TERM just before it blocks in
        # poll() (seen here: the handler ran, poll went on waiting for 300 s),
        # so TERM is repeated until it exits, then KILL.
        for _ in range(20):  # bounded: 10 s
            if self.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(0.5)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._reader.join(10)
        # Closing a pipe while the reader is blocked reading it waits on
        # the file's lock, in C, where no timeout can interrupt it; a reader
        # still running (a child kept the pipe open) keeps the pipe.
        if self.process.stderr is not None and not self._reader.is_alive():
            self.process.stderr.close()


def ssh_forwards(
    ssh: SshClient,
    port: int,
    identity: Path,
    targets: Sequence[int],
    *,
    options: dict[str, str | int] | None = None,
    user: str | None = None,
) -> tuple[SshProcess, list[int]]:
    """``ssh -v -N -L lp:127.0.0.1:target ...`` to hashiked at ``port``, one
    -L per target; returns once ssh listens on every local port (which are
    returned in order) and has entered its session loop. Free ports are chosen at run time; a lost race for
    one (ssh: "Address already in use") is retried a few times."""
    last = ""
    for _attempt in range(3):
        local = [free_port() for _ in targets]
        args = ["-v", "-N"]
        for lp, target in zip(local, targets, strict=True):
            args += ["-L", f"{lp}:127.0.0.1:{target}"]
        argv = ssh.argv(
            port,
            user=user,
            identity=identity,
            options={"ExitOnForwardFailure": "yes", **(options or {})},
            args=args,
        )
        client = SshProcess.start(argv)
        # ssh 9.2 prints "Local forwarding listening on ..." between bind()
        # and listen(): a connection at once can be refused (seen here). It
        # enters its session loop only once every listener is set up.
        listening = [rf"Local forwarding listening on 127\.0\.0\.1 port {lp}\." for lp in local]
        if all(map(client.wait_for, [*listening, r"Entering interactive session\."])):
            return client, local
        client.stop()
        last = client.stderr
        if "Address already in use" not in last:
            break
    raise AssertionError(f"ssh did not set up its forwards:\n{last}")


# --- the targets, on a loop in a thread --------------------------------------------


class BackgroundLoop:
    """An asyncio loop in a daemon thread, for servers the blocking test body talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = DEADLINE) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(concurrent.futures.TimeoutError):
            self.run(cancel_all(), 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


@pytest.fixture(scope="module")
def background() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    try:
        yield loop
    finally:
        loop.close()


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


async def _listen(handler: Any) -> asyncio.Server:
    return await asyncio.start_server(handler, "127.0.0.1", 0)


def server_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def closed_port(background: BackgroundLoop) -> int:
    """A port that was just listening and now refuses connections."""
    server = background.run(_listen(lambda _r, w: w.close()))
    port = server_port(server)
    background.run(_close_server(server))
    return port


# --- fixtures of this module ----------------------------------------------------------


@dataclass
class Setup:
    hashiked: Hashiked
    client_key: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """hashiked with one ssh-keygen client key authorized."""
    host_key = keygen(tmp_path / "host_ed25519")
    client_key = keygen(tmp_path / "id_ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(public_line(client_key) + "\n")
    server = start_hashiked(tmp_path, host_key, authorized)
    try:
        yield Setup(server, client_key)
    finally:
        server.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.settimeout(DEADLINE)
    return sock


# --- the guide's POP3 scenario ------------------------------------------------------


def pop3_dialogue(port: int) -> list[bytes]:
    """USER, PASS, LIST, RETR 1, QUIT through the tunnel; every line read back."""
    with connect(port) as sock, sock.makefile("rb") as f:
        lines = [f.readline()]
        for command in (b"USER a70099a", b"PASS secret", b"LIST"):
            sock.sendall(command + b"\r\n")
            lines.append(f.readline())
        for _ in range(len(MESSAGES) + 1):  # bounded: the listing and its "."
            lines.append(f.readline())
        sock.sendall(b"RETR 1\r\n")
        lines.append(f.readline())
        body = b""
        for _ in range(MESSAGES[0].count(b"\n") + 1):  # bounded: the message and its "."
            body += f.readline()
        sock.sendall(b"QUIT\r\n")
        lines.append(f.readline())
        lines.append(f.read())  # the server closes: EOF through the tunnel
        return [*lines, body]


def test_pop3_through_ssh_local_forward(
    setup: Setup, ssh_client: SshClient, background: BackgroundLoop
) -> None:
    pop3 = background.run(start_pop3())
    assert pop3.server is not None
    ssh, (local,) = ssh_forwards(ssh_client, setup.hashiked.port, setup.client_key, [pop3.port])
    try:
        lines = pop3_dialogue(local)
    finally:
        ssh.stop()
        background.run(_close_server(pop3.server))
    assert lines[0] == GREETING + b"\r\n" == b"+OK POP3 wisdom server ready\r\n"
    assert lines[1] == b"+OK\r\n"
    assert lines[2] == b"+OK maildrop locked and ready\r\n"
    assert lines[3] == b"+OK 2 messages\r\n"
    assert lines[4:7] == [f"{i} {len(m)}\r\n".encode() for i, m in enumerate(MESSAGES, 1)] + [b".\r\n"]
    assert lines[7] == f"+OK {len(MESSAGES[0])} octets\r\n".encode()
    assert lines[8] == b"+OK bye\r\n"
    assert lines[9] == b""
    assert lines[10] == MESSAGES[0] + b".\r\n"
    assert pop3.sessions == 1
    assert "open failed" not in ssh.stderr, ssh.stderr
    setup.hashiked.assert_healthy()


# --- integrity, both directions, with half-close ----------------------------------------


INTEGRITY_MIB = int(os.environ.get("HASHIKE_INTEGRITY_MIB", "256"))


@dataclass
class FarSide:
    """What the echo server saw: bytes, and their SHA-256, up to the client's EOF."""

    digest: str
    total: int


async def echo_digest_server(
    seen: concurrent.futures.Future[FarSide],
) -> asyncio.Server:
    """Echoes every byte back while hashing it; after the client's EOF (its
    half-close), sends one more line, ``<sha256> <count>``, then its own EOF."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        total = 0
        try:
            while chunk := await reader.read(1 << 20):
                digest.update(chunk)
                total += len(chunk)
                writer.write(chunk)
                await writer.drain()
            if not seen.done():
                seen.set_result(FarSide(digest.hexdigest(), total))
            writer.write(f"{digest.hexdigest()} {total}\n".encode())
            await writer.drain()
            writer.write_eof()
            await writer.drain()
        finally:
            writer.close()

    return await _listen(handle)


@dataclass
class Transfer:
    sent_digest: str
    echo_digest: str
    echoed: int
    trailer: bytes
    seconds: float


def upload_and_echo(port: int, mib: int) -> Transfer:
    """Send ``mib`` MiB of random data (each MiB different), half-close, and
    read the echo and the far side's verdict line until its EOF."""
    size = mib << 20
    block = os.urandom(1 << 20)
    sent = hashlib.sha256()
    echo = hashlib.sha256()
    echoed = 0
    trailer = bytearray()
    errors: list[BaseException] = []
    started = time.monotonic()
    with connect(port) as sock:
        sock.settimeout(60)

        def read() -> None:
            nonlocal echoed
            try:
                while chunk := sock.recv(1 << 20):  # bounded: ends at EOF or the timeout
                    view = memoryview(chunk)
                    take = min(len(view), size - echoed)
                    echo.update(view[:take])
                    echoed += take
                    trailer.extend(view[take:])
                    if len(trailer) > 1024:
                        raise AssertionError(f"more than the echo came back: {bytes(trailer[:80])!r}")
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for i in range(mib):
            chunk = i.to_bytes(8, "big") + block[8:]
            sent.update(chunk)
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)  # half-close: the echo and the verdict must still arrive
        reader.join(120)
        assert not reader.is_alive(), "the echo did not end"
    if errors:
        raise errors[0]
    return Transfer(sent.hexdigest(), echo.hexdigest(), echoed, bytes(trailer), time.monotonic() - started)


def test_integrity_both_directions_with_half_close(
    setup: Setup, ssh_client: SshClient, background: BackgroundLoop
) -> None:
    seen: concurrent.futures.Future[FarSide] = concurrent.futures.Future()
    echo = background.run(echo_digest_server(seen))
    ssh, (local,) = ssh_forwards(ssh_client, setup.hashiked.port, setup.client_key, [server_port(echo)])
    try:
        result = upload_and_echo(local, INTEGRITY_MIB)
    finally:
        ssh.stop()
        background.run(_close_server(echo))
    size = INTEGRITY_MIB << 20
    far = seen.result(DEADLINE)
    assert (far.total, far.digest) == (size, result.sent_digest)  # upload intact on the far side
    assert (result.echoed, result.echo_digest) == (size, result.sent_digest)  # download intact here
    assert result.trailer == f"{result.sent_digest} {size}\n".encode()  # after our half-close
    print(f"\n{INTEGRITY_MIB} MiB each way through ssh -L and hashiked in {result.seconds:.1f} s")
    setup.hashiked.assert_healthy()


# --- a refused target ---------------------------------------------------------------


def test_refused_target_fails_the_channel_not_the_session(
    setup: Setup, ssh_client: SshClient, background: BackgroundLoop
) -> None:
    dead = closed_port(background)
    pop3 = background.run(start_pop3())
    assert pop3.server is not None
    ssh, (to_dead, to_pop3) = ssh_forwards(
        ssh_client, setup.hashiked.port, setup.client_key, [dead, pop3.port]
    )
    try:
        with connect(to_dead) as sock, contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""  # ssh closes the local connection
        refused = r"^channel \d+: open failed: connect failed: Connection refused\r?$"
        assert ssh.wait_for(refused), ssh.stderr
        # The session survives: a second connection, to a live target, works.
        with connect(to_pop3) as sock, sock.makefile("rb") as f:
            assert f.readline() == GREETING + b"\r\n"
            sock.sendall(b"QUIT\r\n")
            assert f.readline() == b"+OK bye\r\n"
        assert ssh.process.poll() is None, ssh.stderr
    finally:
        ssh.stop()
        background.run(_close_server(pop3.server))
    assert ssh.count(r"open failed") == 1, ssh.stderr
    log = setup.hashiked.log_text()
    assert f"connect_to 127.0.0.1 port {dead}: failed: Connection refused" in log, log
    setup.hashiked.assert_healthy()


# --- the far side half-closes first ------------------------------------------------------


@dataclass
class Exchange:
    sent_digest: str  # what the far side sent before its EOF
    upload: FarSide  # what it received after


async def download_then_upload_server(mib: int, seen: concurrent.futures.Future[Exchange]) -> asyncio.Server:
    """Sends ``mib`` MiB (each MiB different) and then its EOF, *before*
    reading anything; then reads the client's upload to EOF. The client
    learns of the half-close as EOF and must still be able to send."""
    block = os.urandom(1 << 20)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sent = hashlib.sha256()
        try:
            for i in range(mib):
                chunk = i.to_bytes(8, "big") + block[8:]
                sent.update(chunk)
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
            digest = hashlib.sha256()
            total = 0
            while chunk := await reader.read(1 << 20):
                digest.update(chunk)
                total += len(chunk)
            seen.set_result(Exchange(sent.hexdigest(), FarSide(digest.hexdigest(), total)))
        finally:
            writer.close()

    return await _listen(handle)


def test_far_side_half_closes_first(setup: Setup, ssh_client: SshClient, background: BackgroundLoop) -> None:
    """The other order of half-close: the target sends, then shuts down its
    side; the client reads to EOF, then uploads through the same tunnel."""
    mib = max(1, INTEGRITY_MIB // 8)
    seen: concurrent.futures.Future[Exchange] = concurrent.futures.Future()
    target = background.run(download_then_upload_server(mib, seen))
    ssh, (local,) = ssh_forwards(ssh_client, setup.hashiked.port, setup.client_key, [server_port(target)])
    try:
        with connect(local) as sock:
            received = hashlib.sha256()
            total = 0
            while chunk := sock.recv(1 << 20):  # bounded: to the target's EOF, or the socket timeout
                received.update(chunk)
                total += len(chunk)
            upload = os.urandom(1 << 20)
            sock.sendall(upload)
            sock.shutdown(socket.SHUT_WR)
            exchange = seen.result(DEADLINE)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
    finally:
        ssh.stop()
        background.run(_close_server(target))
    assert (total, received.hexdigest()) == (mib << 20, exchange.sent_digest)
    assert exchange.upload == FarSide(hashlib.sha256(upload).hexdigest(), len(upload))
    setup.hashiked.assert_healthy()


# --- many connections at once --------------------------------------------------------------

# ssh listens with a backlog of 128 and handles its channel table in linear
# time per event, so a burst of a thousand measures ssh (and overflows its
# accept queue); this one stays below its backlog. hashike -> hashiked and
# hashike -> sshd take 1000 (tests/aio/test_forwarding.py, test_forward_matrix.py).
SSH_BURST = int(os.environ.get("HASHIKE_SSH_BURST", "100"))


async def _burst(port: int, count: int) -> list[str]:
    async def one(i: int) -> str | None:
        payload = hashlib.sha256(i.to_bytes(4, "big")).digest() * 2048  # 64 KiB of its own
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(payload)
                writer.write_eof()
                data = await reader.read()
            finally:
                writer.close()
        except OSError as exc:
            return f"{i}: {exc!r}"
        return None if data == payload else f"{i}: {len(data)} bytes, wrong data"

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), 60)
    return [r for r in results if r is not None]


def test_simultaneous_connections(setup: Setup, ssh_client: SshClient, background: BackgroundLoop) -> None:
    echo = background.run(start_echo_server())
    ssh, (local,) = ssh_forwards(ssh_client, setup.hashiked.port, setup.client_key, [server_port(echo)])
    try:
        errors = background.run(_burst(local, SSH_BURST), 90)
    finally:
        ssh.stop()
        background.run(_close_server(echo))
    assert not errors, (errors[:10], ssh.stderr[-2000:])
    assert "open failed" not in ssh.stderr, ssh.stderr
    setup.hashiked.assert_healthy()
