"""The control socket's runtime: a mux master's listener and a mux client,
both speaking OpenSSH's PROTOCOL.mux through :mod:`hashike.proto.mux`.

Security. The master's socket is bound under a umask of 0177 (so 0600 from
its first instant) at a temporary name and linked into place, so it never
replaces a live master's socket, and it is refused in a directory that others
may write to without the sticky bit (they could swap it). Every peer's uid is
read with SO_PEERCRED and a uid other than ours is refused, as ssh's master
does. The client refuses a socket that is not ours or that others may use,
and a master whose uid is not ours.

What a master does with each request is its owner's: a :class:`MuxHandler`.
A multiplexed session (MUX_C_NEW_SESSION) is read with recvmsg, since its
stdio descriptors follow the message, each with one byte of its own in the
stream (SCM_RIGHTS), and carried by :mod:`hashike.aio.passenger`. Stdio
forwarding (MUX_C_NEW_STDIO_FWD, ``ssh -S path -W``) is refused with
MUX_S_FAILURE "not supported".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from hashike.proto import mux
from hashike.proto.errors import DecodeError

from .passenger import carry
from .session_client import Process

__all__ = [
    "MuxClient",
    "MuxError",
    "MuxHandler",
    "MuxRequest",
    "MuxServer",
    "bind_private",
    "check_socket_path",
    "listen_mux",
    "peer_uid",
]

log = logging.getLogger("hashike.mux")

READ_CHUNK = 64 * 1024
REPLY_TIMEOUT = 30.0  # a master that accepted but never answers
MAX_FDS = 3  # a new session's stdin, stdout and stderr
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class MuxError(Exception):
    """A control socket we will not use, or a master that failed us: one line."""

    errno: int | None = None


# The requests a master may be asked to confirm (all but alive checks).
MuxRequest = mux.ForwardRequest | mux.Terminate | mux.StopListening | mux.NewSession | mux.NewStdioForward
_CONFIRMED = (mux.ForwardRequest, mux.Terminate, mux.StopListening, mux.NewSession, mux.NewStdioForward)


class MuxHandler(Protocol):
    """What a master does for each request (all but alive checks)."""

    async def session(self, request: mux.NewSession, fds: list[int]) -> Process | str:
        """Start a multiplexed session on the client's ``fds`` (stdin,
        stdout, stderr; the server closes them): its process, or why not."""
        ...

    async def forward(self, request: mux.ForwardRequest) -> mux.MuxMessage:
        """Open or cancel a forward: Ok, RemotePort, Failure or PermissionDenied."""
        ...

    async def permit(self, request: MuxRequest) -> bool:
        """May the master carry out ``request``? (ControlMaster ask asks.)"""
        ...

    def terminate(self) -> None:
        """MUX_C_TERMINATE: end the connection (after the reply is sent)."""
        ...

    def stop_listening(self) -> None:
        """MUX_C_STOP_LISTENING: the socket is gone; the connection stays."""
        ...

    def status(self) -> dict[str, Any]:
        """hashike's status request: the counters (aio/stats.py snapshot)."""
        ...


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    uid: int = _PEERCRED.unpack(creds)[1]
    return uid


def _check_directory(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    st = os.stat(directory)
    shared = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if (st.st_uid not in (os.getuid(), 0)) or (shared and not st.st_mode & stat.S_ISVTX):
        raise MuxError(f"Bad owner or permissions on {directory}")


def bind_private(path: str) -> socket.socket:
    """A Unix socket bound at ``path`` under umask 0177: 0600 from its first
    instant, never a moment open to others. OSError if it cannot be bound."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock


def _bind(path: str) -> socket.socket:
    """A listening socket at ``path``, 0600 from the start, never replacing one there."""
    _check_directory(path)
    temporary = f"{path}.{os.urandom(8).hex()}"
    try:
        sock = bind_private(temporary)
    except OSError as exc:
        raise MuxError(f"ControlSocket {path}: {os.strerror(exc.errno or 0)}") from None
    try:
        sock.listen(64)
        os.link(temporary, path)  # fails if a master is there: the link is atomic
    except FileExistsError:
        sock.close()
        raise MuxError(f"ControlSocket {path} already exists, disabling multiplexing") from None
    finally:
        os.unlink(temporary)
    return sock


class _Peer:
    """One mux client's connection, read with recvmsg so that the descriptors
    of a new session arrive with the bytes they ride on."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = mux.MuxDecoder()
        self.fds: list[int] = []
        self._loop = asyncio.get_running_loop()

    async def receive(self) -> bool:
        """Read what there is into the decoder; False at EOF."""
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, READ_CHUNK, MAX_FDS)
            except BlockingIOError:
                await self._readable()
                continue
            self.fds += fds
            if len(self.fds) > MAX_FDS:
                raise DecodeError("mux: more descriptors than a session passes")
            self.decoder.feed(data)
            return bool(data)

    async def _readable(self) -> None:
        ready, fd = self._loop.create_future(), self.sock.fileno()
        self._loop.add_reader(fd, ready.set_result, None)
        try:
            await ready
        finally:
            self._loop.remove_reader(fd)

    async def descriptors(self, count: int) -> list[int] | None:
        """The ``count`` descriptors that follow a new session, each with its
        byte in the stream; None if the client sent the bytes without them or
        went away."""
        while self.decoder.take(count) is None:
            if not await self.receive():
                return None
        if len(self.fds) < count:
            return None
        taken, self.fds = self.fds[:count], self.fds[count:]
        return taken

    async def send(self, message: mux.MuxMessage) -> None:
        await self._loop.sock_sendall(self.sock, mux.encode(message))

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.sock.close()


class MuxServer:
    """A master's control socket; ``close()`` stops listening and removes it
    (the clients connected go on)."""

    def __init__(self, path: str, handler: MuxHandler) -> None:
        self.path = path
        self.handler = handler
        self.clients = 0  # connected mux clients
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions = 0

    async def _start(self) -> None:
        self._sock = _bind(self.path)
        self._sock.setblocking(False)
        self._accepting = asyncio.ensure_future(self._accept(self._sock))

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:  # until close() cancels it
            sock, _ = await loop.sock_accept(listener)
            sock.setblocking(False)
            task = asyncio.ensure_future(self._serve(_Peer(sock)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self._sock is None:
            return
        assert self._accepting is not None
        self._accepting.cancel()
        self._sock.close()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close_clients(self) -> None:
        """End every client's connection too (the master is going away)."""
        for task in self._tasks:
            task.cancel()

    @property
    def listening(self) -> bool:
        return self._sock is not None

    async def _serve(self, peer: _Peer) -> None:
        uid = peer_uid(peer.sock)
        if uid != os.getuid():
            # ssh's master: "control mode uid mismatch: peer euid N != uid M"
            log.error("control mode uid mismatch: peer euid %d != uid %d", uid, os.getuid())
            peer.close()
            return
        self.clients += 1
        try:
            await peer.send(mux.Hello())
            await self._requests(peer)
        except (DecodeError, OSError) as exc:
            log.debug("control client: %s", exc)
        finally:
            self.clients -= 1
            peer.close()

    async def _requests(self, peer: _Peer) -> None:
        greeted = False
        while await peer.receive():
            while True:
                try:
                    message = peer.decoder.next()
                except mux.UnknownMuxType as exc:
                    if exc.request_id is None or not greeted:
                        raise
                    log.debug("%s", exc)
                    await peer.send(mux.Failure(request_id=exc.request_id, reason="unsupported request"))
                    continue
                if message is None:
                    break
                if not greeted:
                    if not isinstance(message, mux.Hello) or message.version != mux.MUX_VERSION:
                        raise DecodeError("mux: expected a version 4 hello")
                    greeted = True
                elif not await self._answer(message, peer):
                    return

    async def _answer(self, message: mux.MuxMessage, peer: _Peer) -> bool:
        """Reply to one request; False closes this client's connection."""
        if isinstance(message, _CONFIRMED) and not await self.handler.permit(message):
            denied = mux.PermissionDenied(request_id=message.request_id, reason="Permission denied")
            await peer.send(denied)
            # A session's or stdio forward's descriptors follow in the stream.
            return not isinstance(message, (mux.NewSession, mux.NewStdioForward))
        if isinstance(message, mux.AliveCheck):
            await peer.send(mux.AliveReply(request_id=message.request_id, pid=os.getpid()))
        elif isinstance(message, mux.ForwardRequest):
            await peer.send(await self.handler.forward(message))
        elif isinstance(message, mux.StatusRequest):
            await peer.send(self._status(message.request_id))
        elif isinstance(message, mux.Terminate):
            await peer.send(mux.Ok(request_id=message.request_id))
            self.handler.terminate()
            return False
        elif isinstance(message, mux.StopListening):
            self.close()
            self.handler.stop_listening()
            await peer.send(mux.Ok(request_id=message.request_id))
        elif isinstance(message, mux.NewSession):
            await self._session(message, peer)
            return False
        elif isinstance(message, mux.NewStdioForward):
            # Its two descriptors follow, each with a byte in the stream:
            # after a refusal the stream cannot go on.
            await peer.send(mux.Failure(request_id=message.request_id, reason="not supported"))
            return False
        else:
            raise DecodeError(f"mux: {type(message).__name__} is not a request")
        return True

    def _status(self, request_id: int) -> mux.MuxMessage:
        document = json.dumps(self.handler.status(), separators=(",", ":"))
        if len(document.encode()) > mux.MAX_STATUS:
            return mux.Failure(request_id=request_id, reason="status too large")
        return mux.StatusReply(request_id=request_id, document=document)

    async def _session(self, request: mux.NewSession, peer: _Peer) -> None:
        """§2: the three descriptors, the session opened, its exit status
        sent; the connection closes after it (the client waits for that)."""
        fds = await peer.descriptors(3)
        if fds is None:
            await peer.send(
                mux.Failure(request_id=request.request_id, reason="did not receive file descriptors")
            )
            return
        peer.fds = fds  # closed with the connection
        started = await self.handler.session(request, fds)
        if isinstance(started, str):
            await peer.send(mux.Failure(request_id=request.request_id, reason=started))
            return
        self._sessions += 1
        session_id = self._sessions
        await peer.send(mux.SessionOpened(request_id=request.request_id, session_id=session_id))
        if request.want_tty and not started.pty:
            await peer.send(mux.TtyAllocFail(session_id=session_id))
        carrying = asyncio.ensure_future(carry(started, fds))
        hangup = asyncio.ensure_future(self._until_eof(peer))
        try:
            await asyncio.wait({carrying, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (hangup, carrying):  # done with the socket before it is closed
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError, DecodeError):
                    await task
        if carrying.cancelled():  # the client went away (a signal): so does its session
            started.close()
            return
        await peer.send(mux.ExitMessage(session_id=session_id, status=carrying.result()))

    @staticmethod
    async def _until_eof(peer: _Peer) -> None:
        while await peer.receive():
            peer.decoder.take(peer.decoder.pending)  # nothing more is expected


async def listen_mux(path: str, handler: MuxHandler) -> MuxServer:
    """Listen on ``path`` for mux clients. Raises MuxError (one line)."""
    server = MuxServer(path, handler)
    await server._start()
    return server


def check_socket_path(path: str) -> None:
    """A control socket a client may use: a socket, ours, and no one else's to use."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise MuxError(f"Control socket connect({path}): {os.strerror(exc.errno or 0)}") from None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise MuxError(f"Bad owner or permissions on control socket {path}")


class MuxClient:
    """One connection to a master, requests answered in turn (PROTOCOL.mux §10)."""

    def __init__(self, peer: _Peer) -> None:
        self._peer = peer
        self._next_id = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, path: str) -> AsyncIterator[MuxClient]:
        """Connect and exchange hellos; MuxError for a socket or master refused
        (``errno`` set when connecting failed)."""
        check_socket_path(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        peer = _Peer(sock)
        try:
            try:
                await asyncio.get_running_loop().sock_connect(sock, path)
            except OSError as exc:
                error = MuxError(f"Control socket connect({path}): {os.strerror(exc.errno or 0)}")
                error.errno = exc.errno
                raise error from None
            uid = peer_uid(sock)
            if uid != os.getuid():
                raise MuxError(f"Control socket {path}: master's uid {uid} is not ours")
            client = cls(peer)
            await peer.send(mux.Hello())
            hello = await client.receive()
            if not isinstance(hello, mux.Hello) or hello.version != mux.MUX_VERSION:
                raise MuxError("master hello exchange failed")
            yield client
        finally:
            peer.close()

    async def receive(self, timeout: float | None = REPLY_TIMEOUT) -> mux.MuxMessage | None:
        """The next message, None once the master has closed."""
        try:
            async with asyncio.timeout(timeout):
                while (message := self._peer.decoder.next()) is None:
                    if not await self._peer.receive():
                        return None
        except DecodeError as exc:
            raise MuxError(f"read from master failed: {exc}") from None
        except OSError as exc:
            raise MuxError(f"read from master failed: {os.strerror(exc.errno or 0)}") from None
        except TimeoutError:
            raise MuxError("read from master failed: timed out") from None
        return message

    def request_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    async def request(self, message: mux.MuxMessage, fds: Sequence[int] = ()) -> mux.MuxMessage | None:
        """Send one request (then ``fds``, each on a byte of its own, as
        ssh's mm_send_fd); its reply (None if the master closed first)."""
        await self._peer.send(message)
        for fd in fds:
            try:
                socket.send_fds(self._peer.sock, [b"\0"], [fd])
            except (BrokenPipeError, ConnectionResetError):
                break  # a master that refused the session closed at once: its reply is there
        reply = await self.receive()
        expected = getattr(message, "request_id", None)
        got = getattr(reply, "request_id", expected)
        if got != expected:
            raise MuxError(f"out of sequence reply: my id {expected} theirs {got}")
        return reply
