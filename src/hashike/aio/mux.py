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
Multiplexed sessions (MUX_C_NEW_SESSION, whose stdio descriptors follow the
message) are refused with MUX_S_FAILURE "not supported"; ssh then makes a
connection of its own, as it does whenever a master turns a session down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator
from typing import Protocol

from hashike.proto import mux
from hashike.proto.errors import DecodeError

__all__ = [
    "MuxClient",
    "MuxError",
    "MuxHandler",
    "MuxServer",
    "check_socket_path",
    "listen_mux",
    "peer_uid",
]

log = logging.getLogger("hashike.mux")

READ_CHUNK = 64 * 1024
REPLY_TIMEOUT = 30.0  # a master that accepted but never answers
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class MuxError(Exception):
    """A control socket we will not use, or a master that failed us: one line."""


class MuxHandler(Protocol):
    """What a master does for each request (all but alive checks)."""

    async def forward(self, request: mux.ForwardRequest) -> mux.MuxMessage:
        """Open or cancel a forward: Ok, RemotePort, Failure or PermissionDenied."""
        ...

    def terminate(self) -> None:
        """MUX_C_TERMINATE: end the connection (after the reply is sent)."""
        ...

    def stop_listening(self) -> None:
        """MUX_C_STOP_LISTENING: the socket is gone; the connection stays."""
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


def _bind(path: str) -> socket.socket:
    """A listening socket at ``path``, 0600 from the start, never replacing one there."""
    _check_directory(path)
    temporary = f"{path}.{os.urandom(8).hex()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(temporary)
    except OSError as exc:
        sock.close()
        raise MuxError(f"ControlSocket {path}: {os.strerror(exc.errno or 0)}") from None
    finally:
        os.umask(old_umask)
    try:
        sock.listen(64)
        os.link(temporary, path)  # fails if a master is there: the link is atomic
    except FileExistsError:
        sock.close()
        raise MuxError(f"ControlSocket {path} already exists, disabling multiplexing") from None
    finally:
        os.unlink(temporary)
    return sock


class MuxServer:
    """A master's control socket; ``close()`` stops listening and removes it."""

    def __init__(self, path: str, handler: MuxHandler) -> None:
        self.path = path
        self.handler = handler
        self.clients = 0  # connected mux clients (ControlPersist waits for none)
        self._server: asyncio.Server | None = None

    async def _start(self) -> None:
        sock = _bind(self.path)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)

    def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock)
        if uid != os.getuid():
            # ssh's master: "control mode uid mismatch: peer euid N != uid M"
            log.error("control mode uid mismatch: peer euid %d != uid %d", uid, os.getuid())
            writer.close()
            return
        self.clients += 1
        try:
            writer.write(mux.encode(mux.Hello()))
            await self._requests(reader, writer)
        except (DecodeError, ConnectionError) as exc:
            log.debug("control client: %s", exc)
        finally:
            self.clients -= 1
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder, greeted = mux.MuxDecoder(), False
        while data := await reader.read(READ_CHUNK):
            decoder.feed(data)
            while True:
                try:
                    message = decoder.next()
                except mux.UnknownMuxType as exc:
                    if exc.request_id is None or not greeted:
                        raise
                    log.debug("%s", exc)
                    writer.write(
                        mux.encode(mux.Failure(request_id=exc.request_id, reason="unsupported request"))
                    )
                    continue
                if message is None:
                    break
                if not greeted:
                    if not isinstance(message, mux.Hello) or message.version != mux.MUX_VERSION:
                        raise DecodeError("mux: expected a version 4 hello")
                    greeted = True
                    continue
                if not await self._answer(message, writer):
                    return
            await writer.drain()

    async def _answer(self, message: mux.MuxMessage, writer: asyncio.StreamWriter) -> bool:
        """Reply to one request; False closes this client's connection."""
        if isinstance(message, mux.AliveCheck):
            writer.write(mux.encode(mux.AliveReply(request_id=message.request_id, pid=os.getpid())))
        elif isinstance(message, mux.ForwardRequest):
            writer.write(mux.encode(await self.handler.forward(message)))
        elif isinstance(message, mux.Terminate):
            writer.write(mux.encode(mux.Ok(request_id=message.request_id)))
            await writer.drain()
            self.handler.terminate()
            return False
        elif isinstance(message, mux.StopListening):
            self.close()
            self.handler.stop_listening()
            writer.write(mux.encode(mux.Ok(request_id=message.request_id)))
        elif isinstance(message, mux.NewSession | mux.NewStdioForward):
            # Its descriptors follow out of band, each with a byte of its own
            # in the stream: the stream cannot go on after a refusal.
            writer.write(mux.encode(mux.Failure(request_id=message.request_id, reason="not supported")))
            await writer.drain()
            return False
        else:
            raise DecodeError(f"mux: {type(message).__name__} is not a request")
        return True


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

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = mux.MuxDecoder()
        self._next_id = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, path: str) -> AsyncIterator[MuxClient]:
        """Connect and exchange hellos; MuxError for a socket or master refused."""
        check_socket_path(path)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except OSError as exc:
            raise MuxError(f"Control socket connect({path}): {os.strerror(exc.errno or 0)}") from None
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid != os.getuid():
                raise MuxError(f"Control socket {path}: master's uid {uid} is not ours")
            client = cls(reader, writer)
            writer.write(mux.encode(mux.Hello()))
            hello = await client._receive()
            if not isinstance(hello, mux.Hello) or hello.version != mux.MUX_VERSION:
                raise MuxError("master hello exchange failed")
            yield client
        finally:
            writer.close()

    async def _receive(self) -> mux.MuxMessage | None:
        """The next message, None once the master has closed."""
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                while (message := self._decoder.next()) is None:
                    data = await self._reader.read(READ_CHUNK)
                    if not data:
                        return None
                    self._decoder.feed(data)
        except DecodeError as exc:
            raise MuxError(f"read from master failed: {exc}") from None
        except TimeoutError:
            raise MuxError("read from master failed: timed out") from None
        return message

    def request_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    async def request(self, message: mux.MuxMessage) -> mux.MuxMessage | None:
        """Send one request; its reply (None if the master closed first)."""
        self._writer.write(mux.encode(message))
        await self._writer.drain()
        reply = await self._receive()
        expected = getattr(message, "request_id", None)
        got = getattr(reply, "request_id", expected)
        if got != expected:
            raise MuxError(f"out of sequence reply: my id {expected} theirs {got}")
        return reply
