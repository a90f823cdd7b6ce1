"""PrivilegeSeparation: each authenticated connection in a process of its own,
running as the user who logged in.

Theory of operation. hashiked runs as root. Key exchange and authentication
happen in the server process (a worker, or the one process with
``Workers 1``), as root. When a connection has authenticated, and before any
message of the connection protocol is handled, that process forks
(:meth:`Children.hand_off`). The child inherits the connection's sans-IO core
from memory (keys, sequence numbers, strict-kex state), so nothing of the
transport is serialized.

The child (:func:`_child`) replaces every descriptor but the connection's
socket, its signer channel and stdin/out/err with /dev/null: the peers of the
server's other connections see FIN when the server closes them, and a
Python object of the parent's that still names one of those numbers closes
/dev/null, never a descriptor the child opened since. It starts a fresh
event loop (the parent's threads, bcrypt's executor among them, do not exist
in it), swaps the host keys in the core for :class:`RemoteSigner` stand-ins,
drops the server's other state, and then takes the account's groups, gid and
uid (``initgroups``, ``setgid``, ``setuid``: real, effective and saved), and
checks that root cannot come back. Having changed its uid, the kernel makes it
non-dumpable, so the user cannot read its memory. From then on sessions,
``-L`` connects and ``-R`` binds are the user's by construction: a ``-R`` below
1024 fails as for any other user. It exits with ``os._exit`` once the
connection has ended and its sessions have been reaped.

The parent forgets the connection without a word to the peer (its copy of
the socket is closed: no DISCONNECT, no shutdown), reaps the child through a
pidfd, and signs for it: later key exchanges (RFC 4253 §9) need the host
key's signature over their exchange hash H, and only root holds the keys.
A request on the socketpair made before the fork is one SEQPACKET datagram,
``string key blob, string algorithm, string H`` (RFC 4251 encodings, each
bounded; H at most 64 bytes, SHA-512's size), and so is the answer: ``0x01``
and the RFC 4253 §6.6 signature blob, or ``0x00``. Like sshd's monitor after
authentication, the parent cannot know H, so a child could have any 64
bytes signed; it runs only hashiked's code, and cannot be read or traced by
the user it runs as. If the parent is gone, the rekey fails and the
connection ends (:class:`RemoteSigner`).

Status (``hashike status --server``): a second socketpair per child carries
the worker's ``status`` message with one descriptor, as the supervisor's
channel to a worker does (aio/server_status.py), and the child answers its
own connection's snapshot on it; :meth:`Children.connections` asks them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
import socket
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any

from hashike.proto.constants import DisconnectReason
from hashike.proto.errors import DecodeError, ProtocolError
from hashike.proto.hostkey import PrivateKey, PublicKey
from hashike.proto.text import escape_text
from hashike.proto.wire import Reader, encode_string

from .server_status import WORKER_MESSAGE, Snapshot, answer_on, ask_each
from .session_server import watch_child

__all__ = ["MAX_HASH", "Children", "RemoteSigner", "serve_signatures"]

log = logging.getLogger("hashike.server")

MAX_HASH = 64  # the longest exchange hash: SHA-512's (RFC 5656 §6.2.1)
MAX_KEY_BLOB = 4096  # an RSA key of RSA_MAX_BITS is about 2 KiB
MAX_ALGORITHM = 64
MAX_MESSAGE = 8192  # a request (blob, name, H) or an answer (a signature blob)
SIGN_TIMEOUT = 10.0  # seconds the child waits for a signature
# Within the supervisor's wait for the worker (aio/server_status.py), so
# that one stuck process leaves out its connection, not the worker's.
STATUS_TIMEOUT = 2.5
CHILD_REAP_TIME = 2.0  # seconds a child gives its sessions to exit once its connection ended

# The child, once it runs as the user: serve the connection (its socket) on
# the running loop until it ends.
ChildMain = Callable[[socket.socket], Coroutine[Any, Any, None]]


class RemoteSigner:
    """A host key's stand-in in the child (a :class:`HostKeySigner`): asks
    the parent that holds the key. The round trip blocks the child's loop,
    which serves this one connection only, for the time of one signature."""

    def __init__(self, channel: socket.socket, key: PrivateKey) -> None:
        self._channel = channel
        self._public_key = key.public_key
        self._algorithms = key.signature_algorithms()

    @property
    def public_key(self) -> PublicKey:
        return self._public_key

    def signature_algorithms(self) -> tuple[str, ...]:
        return self._algorithms

    def sign(self, data: bytes, algorithm: str) -> bytes:
        request = (
            encode_string(self._public_key.blob) + encode_string(algorithm.encode()) + encode_string(data)
        )
        try:
            self._channel.sendall(request)
            answer = self._channel.recv(MAX_MESSAGE)
        except OSError as exc:
            log.debug("host key signer: %s", exc)
            answer = b""
        if answer[:1] != b"\x01":
            # The Disconnecting line the pump logs says why.
            raise ProtocolError("host key signer unavailable", DisconnectReason.KEY_EXCHANGE_FAILED)
        return answer[1:]


def _answer(keys: Sequence[PrivateKey], request: bytes) -> bytes:
    """The parent's answer to one signing request."""
    try:
        r = Reader(request)
        blob, algorithm, data = r.string(MAX_KEY_BLOB), r.ascii(MAX_ALGORITHM), r.string(MAX_HASH)
        r.check_end()
    except DecodeError as exc:
        log.error("host key signer: bad request: %s", exc)
        return b"\x00"
    for key in keys:
        if key.public_key.blob == blob and algorithm in key.signature_algorithms():
            return b"\x01" + key.sign(data, algorithm)
    log.error("host key signer: no host key for the request")
    return b"\x00"


def serve_signatures(channel: socket.socket, keys: Sequence[PrivateKey]) -> None:
    """Answer a child's signing requests on ``channel`` from the running
    loop, until the child closes it (then the channel is closed here too)."""
    channel.setblocking(False)
    loop = asyncio.get_running_loop()

    def ready() -> None:
        try:
            request = channel.recv(MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            request = b""
        if not request:  # the child has gone
            loop.remove_reader(channel)
            channel.close()
            return
        try:
            channel.send(_answer(keys, request))
        except OSError as exc:  # the child went while we signed
            log.debug("host key signer: %s", exc)

    loop.add_reader(channel, ready)


class Children:
    """The processes this server forked, one per authenticated connection;
    it signs for them with ``host_keys``."""

    def __init__(self, host_keys: Sequence[PrivateKey]) -> None:
        self._keys = tuple(host_keys)
        self._pids: set[int] = set()
        self._status: dict[int, socket.socket] = {}  # pid -> its status channel
        self._none_left = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pids)

    def hand_off(
        self,
        sock: socket.socket,
        username: str,
        prepare: Callable[[Sequence[RemoteSigner]], None],
        main: ChildMain,
        status: Snapshot | None,
    ) -> bool:
        """Fork for an authenticated connection on ``sock``. In the parent,
        return True (the caller forgets the connection) or False if it could
        not be handed off (logged; the caller ends it). In the child,
        ``prepare(signers)`` runs before the privileges go, to swap the host
        keys for ``signers``, and ``main(sock)`` after, answering ``status``
        on its status channel; the child never returns."""
        try:
            user = pwd.getpwnam(username)
        except KeyError:
            log.error("privilege separation: no account %s any more", escape_text(username))
            return False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        asking, answering = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("privilege separation: fork: %s", exc)
            for end in (ours, theirs, asking, answering):
                end.close()
            return False
        if pid == 0:
            signers = [RemoteSigner(theirs, key) for key in self._keys]
            self._keys = ()
            _child(
                sock,
                (theirs, answering),
                user,
                lambda: prepare(signers),
                lambda: _answer_status(answering, status),
                main,
            )
        theirs.close()
        answering.close()
        serve_signatures(ours, self._keys)
        self._pids.add(pid)
        self._status[pid] = asking
        self._none_left.clear()
        watch_child(pid, lambda status: self._exited(pid, status))
        log.debug("connection of %s handed to process %d", escape_text(username), pid)
        return True

    def _exited(self, pid: int, status: int | None) -> None:
        self._pids.discard(pid)
        channel = self._status.pop(pid, None)
        if channel is not None:
            channel.close()
        if not self._pids:
            self._none_left.set()
        log.debug("connection process %d ended (status %s)", pid, status)

    async def connections(self) -> list[Any]:
        """Every child's connection, as ``hashike status --server`` lists
        them; a child that does not answer is left out, with a log line."""
        found, errors = await ask_each(list(self._status.items()), STATUS_TIMEOUT)
        for error in errors:
            log.info("status: connection process %d: %s", error["pid"], error["error"])
        return found

    def terminate(self) -> None:
        """SIGTERM to every child: each closes its connection and exits."""
        for pid in self._pids:
            with contextlib.suppress(ProcessLookupError):  # not reaped yet: the pid is still our child's
                os.kill(pid, signal.SIGTERM)

    async def wait(self, timeout: float) -> None:
        """Until every child has been reaped, at most ``timeout`` seconds."""
        if self._pids:
            try:
                await asyncio.wait_for(self._none_left.wait(), timeout)
            except TimeoutError:
                log.info("%d connection processes still running", len(self._pids))


# --- the child ---------------------------------------------------------------------


def _keep_only(keep: Collection[int]) -> None:
    """Point every descriptor not in ``keep`` at /dev/null (see the module docstring)."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in keep or fd == null:
            continue
        try:
            os.fstat(fd)  # the listing's own descriptor is closed by now
        except OSError:
            continue
        os.dup2(null, fd, inheritable=False)
    os.close(null)


def _drop_to(user: pwd.struct_passwd) -> None:
    """Become ``user`` for good, or raise."""
    uid, gid = user.pw_uid, user.pw_gid
    os.initgroups(user.pw_name, gid)
    os.setgid(gid)  # as root: real, effective and saved gid
    os.setuid(uid)  # as root: real, effective and saved uid
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise OSError(f"privilege separation: still {os.getresuid()} {os.getresgid()}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise OSError("privilege separation: root could be regained")


def _answer_status(channel: socket.socket, status: Snapshot | None) -> None:
    """In the child: answer each ``status`` message on ``channel`` (with the
    descriptor it carries) until the parent closes it; with no ``status``
    (nobody serves status), the parent is never asked."""
    if status is None:
        return
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def message() -> None:
        try:
            data, fds, _, _ = socket.recv_fds(channel, len(WORKER_MESSAGE), 1)
        except OSError:
            data, fds = b"", []
        for fd in fds[1:] if data == WORKER_MESSAGE else fds:
            os.close(fd)
        if data == WORKER_MESSAGE and fds:
            os.set_inheritable(fds[0], False)  # SCM_RIGHTS gives no O_CLOEXEC; sessions exec here
            task = loop.create_task(answer_on(socket.socket(fileno=fds[0]), status))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif not data:  # the parent is gone
            loop.remove_reader(channel)

    loop.add_reader(channel, message)


def _child(
    sock: socket.socket,
    channels: tuple[socket.socket, socket.socket],
    user: pwd.struct_passwd,
    prepare: Callable[[], None],
    serve_status: Callable[[], None],
    main: ChildMain,
) -> None:
    """The forked process: never returns."""
    status = 1
    try:
        # The parent's loop is running below us on this stack: it is left
        # alone, with its descriptors turned into /dev/null.
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        conn = socket.socket(fileno=os.dup(sock.fileno()))
        signer, asked = channels
        _keep_only({0, 1, 2, conn.fileno(), signer.fileno(), asked.fileno()})
        asyncio.events._set_running_loop(None)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        signer.settimeout(SIGN_TIMEOUT)
        prepare()
        _drop_to(user)
        loop.run_until_complete(_run(main, conn, serve_status))
        status = 0
    except OSError as exc:  # a descriptor, the loop or the switch of user failed
        log.error("connection process for %s: %s", escape_text(user.pw_name), exc)
    except BaseException:  # nothing may unwind into the parent's frames
        log.exception("connection process for %s failed", escape_text(user.pw_name))
    finally:
        logging.shutdown()
        os._exit(status)


async def _run(main: ChildMain, conn: socket.socket, serve_status: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    serve_status()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await main(conn)
    await _reap_sessions()


async def _reap_sessions() -> None:
    """This process's own children are its sessions': give them a moment to
    end after their hangup, so that none is left to a reaper that does not
    know them. Bounded; waitpid(-1) takes nothing of anyone else's here."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CHILD_REAP_TIME
    while loop.time() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            await asyncio.sleep(0.05)
