"""hashiked's status socket (``StatusSocket``, issue 11) and the asking of
workers for their part of it.

Security, as for a client's control socket (aio/mux.py): the socket's
directory must be ours and 0700 (created so if missing, refused otherwise,
config/runtime_dir.py); the socket is bound under a umask of 0177, so it is
0600 from its first instant; a peer whose uid (SO_PEERCRED) is not ours gets
one Failure and is closed. A socket left by a dead hashiked (connect refused)
is replaced; one that answers is another server's, and refused.

Each connection carries one request and one reply, framed and parsed by the
pure codec :mod:`hashike.proto.server_status`; every read is bounded by the
codec's limits and every wait by :data:`TIMEOUT`. With ``Workers`` the
supervisor passes each worker one end of a new socketpair over its channel
and reads the worker's reply, the same message, on the other end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hashike.config.runtime_dir import RuntimeDirError, check_private
from hashike.proto import server_status as ss
from hashike.proto.errors import DecodeError

from .mux import MuxError, bind_private, check_socket_path, peer_uid
from .stats import SCHEMA

__all__ = [
    "WORKER_MESSAGE",
    "StatusError",
    "StatusServer",
    "answer_on",
    "ask_over",
    "gather",
    "query",
    "reply_for",
]

log = logging.getLogger("hashike.server")

TIMEOUT = 10.0  # a peer that connected but never asks, or a server that never answers
REQUEST_LIMIT = 64  # a request frame is 9 bytes
READ_CHUNK = 64 * 1024
WORKER_MESSAGE = b"status"  # on a worker's channel (cli/workers.py), with one descriptor

Snapshot = Callable[[], Awaitable[dict[str, Any]]]


class StatusError(Exception):
    """A status socket we will not use or that failed us: one line."""


def reply_for(document: dict[str, Any]) -> ss.StatusMessage:
    """The reply carrying ``document``; within MAX_DOCUMENT, keeping the
    oldest connections and saying ``truncated`` if all do not fit."""
    text = json.dumps(document, separators=(",", ":"))
    connections = list(document.get("connections", []))
    while len(text.encode()) > ss.MAX_DOCUMENT and connections:  # bounded: halves each time
        connections = connections[: len(connections) // 2]
        text = json.dumps({**document, "connections": connections, "truncated": True}, separators=(",", ":"))
    if len(text.encode()) > ss.MAX_DOCUMENT:
        return ss.Failure("status too large")
    return ss.StatusReply(text)


async def _read(reader: asyncio.StreamReader, limit: int) -> ss.StatusMessage | None:
    """One message, None at EOF first; DecodeError past ``limit``."""
    decoder = ss.StatusDecoder(limit)
    while (message := decoder.next()) is None:  # bounded: the decoder refuses a frame past limit
        data = await reader.read(READ_CHUNK)
        if not data:
            return None
        decoder.feed(data)
    return message


def _document(reply: ss.StatusMessage | None, where: str) -> dict[str, Any]:
    if isinstance(reply, ss.Failure):
        raise StatusError(f"{where}: {reply.reason}")
    if not isinstance(reply, ss.StatusReply):
        raise StatusError(f"{where}: no status in the reply")
    try:
        document = json.loads(reply.document)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise StatusError(f"{where}: the status is not a JSON object")
    return document


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str, timeout: float = TIMEOUT
) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout):
            writer.write(ss.encode(ss.StatusRequest()))
            await writer.drain()
            reply = await _read(reader, ss.MAX_FRAME)
    except TimeoutError:
        raise StatusError(f"{where}: timed out") from None
    except DecodeError as exc:
        raise StatusError(f"{where}: {exc}") from None
    except OSError as exc:
        raise StatusError(f"{where}: {os.strerror(exc.errno or 0)}") from None
    finally:
        writer.close()
    return _document(reply, where)


async def query(path: str) -> dict[str, Any]:
    """Ask the hashiked listening on ``path``; StatusError (one line) for a
    socket that is missing, not ours, or a server that fails us."""
    try:
        check_socket_path(path)
    except MuxError as exc:
        raise StatusError(str(exc)) from None
    where = f"status socket {path}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), TIMEOUT)
    except TimeoutError:
        raise StatusError(f"{where}: timed out") from None
    except OSError as exc:
        raise StatusError(f"{where}: {os.strerror(exc.errno or 0)}") from None
    uid = peer_uid(writer.get_extra_info("socket"))
    if uid != os.getuid():
        writer.close()
        raise StatusError(f"{where}: server's uid {uid} is not ours")
    return await _exchange(reader, writer, where)


async def ask_over(channel: socket.socket, message: bytes, timeout: float = TIMEOUT / 2) -> dict[str, Any]:
    """A worker's status: ``message`` over its ``channel`` with one end of a
    new socketpair, the reply read from the other end within ``timeout``."""
    ours, theirs = socket.socketpair()
    try:
        socket.send_fds(channel, [message], [theirs.fileno()])
    except OSError as exc:
        ours.close()
        raise StatusError(f"worker channel: {os.strerror(exc.errno or 0)}") from None
    finally:
        theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    # Within the client's own wait, so that a stuck worker is reported, not the supervisor.
    return await _exchange(reader, writer, "worker", timeout)


async def ask_each(
    processes: list[tuple[int, socket.socket]], timeout: float = TIMEOUT / 2
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Every process's connections, asked at once over each (pid, channel),
    and an error for each one that failed to answer."""
    answers = await asyncio.gather(
        *(ask_over(channel, WORKER_MESSAGE, timeout) for _, channel in processes), return_exceptions=True
    )
    connections: list[Any] = []
    errors = []
    for (pid, _), answer in zip(processes, answers, strict=True):
        if isinstance(answer, StatusError):
            errors.append({"pid": pid, "error": str(answer)})
        elif isinstance(answer, BaseException):
            raise answer
        elif isinstance(answer.get("connections"), list):
            connections += answer["connections"]
    return connections, errors


async def gather(workers: list[tuple[int, socket.socket]]) -> dict[str, Any]:
    """The supervisor's document: every worker's connections (each says its
    worker's ``pid``); a worker that fails to answer is listed under ``errors``."""
    connections, errors = await ask_each(workers)
    pids = [pid for pid, _ in workers]
    return {
        "schema": SCHEMA,
        "pid": os.getpid(),
        "workers": pids,
        "connections": connections,
        "errors": errors,
    }


async def answer_on(sock: socket.socket, snapshot: Snapshot) -> None:
    """A worker's side of :func:`ask_over`: read the request on ``sock``,
    answer it, close it."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    await _answer(reader, writer, snapshot)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, snapshot: Snapshot) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            request = await _read(reader, REQUEST_LIMIT)
            if isinstance(request, ss.StatusRequest) and request.version == ss.VERSION:
                reply = reply_for(await snapshot())
            else:
                reply = ss.Failure("expected a status request, version 1")
            writer.write(ss.encode(reply))
            await writer.drain()
    except (DecodeError, OSError) as exc:  # TimeoutError is an OSError
        log.debug("status socket: %s", exc)
    finally:
        writer.close()


def _prepare(path: str) -> None:
    """The directory private (made 0700 if missing), and no live server at ``path``."""
    directory = Path(path).absolute().parent
    try:
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        check_private(directory)
    except (OSError, RuntimeDirError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StatusError(f"StatusSocket {path}: {reason}") from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StatusError(f"StatusSocket {path}: exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # a dead server's
            return
    raise StatusError(f"StatusSocket {path}: another server is listening on it")


class StatusServer:
    """The listening status socket; ``close()`` removes it."""

    def __init__(self, path: str, snapshot: Snapshot) -> None:
        self.path = path
        self._snapshot = snapshot
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Raises StatusError (one line)."""
        _prepare(self.path)
        try:
            sock = bind_private(self.path)
        except OSError as exc:
            raise StatusError(f"StatusSocket {self.path}: {os.strerror(exc.errno or 0)}") from None
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = peer_uid(writer.get_extra_info("socket"))
        if uid != os.getuid():
            log.error("status socket: uid mismatch: peer euid %d != uid %d", uid, os.getuid())
            with contextlib.suppress(OSError):
                writer.write(ss.encode(ss.Failure("Permission denied")))
            writer.close()
            return
        await _answer(reader, writer, self._snapshot)

    def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
