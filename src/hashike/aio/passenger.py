"""A multiplexed session's stdio: the descriptors a mux client passed
(PROTOCOL.mux §2, "passenger" mode) wired to a remote process.

The descriptors are the client's own stdin, stdout and stderr (often its
terminal), shared with the shell that started it, so their flags are never
changed (O_NONBLOCK would be the shell's too). stdin is read by a thread that
waits with ``select`` on it and on a wake-up pipe, so that once the session
ends it stops without reading another keystroke from the client's terminal;
output is written from worker threads, one chunk at a time, so a slow reader
holds back the channel's window, not our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading

from hashike.proto.errors import ConnectionClosed

from .session_client import ChannelReader, Process

__all__ = ["carry", "write_all"]

log = logging.getLogger("hashike.mux")

CHUNK = 64 * 1024
NO_STATUS = 255  # ssh's status when the process ended without one


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (blocking; from a worker thread)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _copy_out(reader: ChannelReader, fd: int) -> None:
    while data := await reader.read(CHUNK):
        try:
            await asyncio.to_thread(write_all, fd, data)
        except OSError as exc:  # the client went away: drop the rest
            log.debug("passenger fd %d: %s", fd, exc)
            return


class _StdinPump:
    """The client's stdin into the process, until EOF or :meth:`stop`."""

    def __init__(self, process: Process, fd: int) -> None:
        self._process = process
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="hashike-mux-stdin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                readable, _, _ = select.select([self._fd, self._wake_r], [], [])
                if self._wake_r in readable:
                    return
                try:
                    data = os.read(self._fd, CHUNK)
                except OSError:
                    data = b""
                future = asyncio.run_coroutine_threadsafe(self._deliver(data), self._loop)
                if not future.result() or not data:
                    return
        except (OSError, RuntimeError):  # the loop is closing
            return
        finally:
            os.close(self._wake_r)

    async def _deliver(self, data: bytes) -> bool:
        stdin = self._process.stdin
        if self._process.closed:
            return False
        if not data:
            stdin.write_eof()  # RFC 4254 §5.3
            return False
        stdin.write(data)
        try:
            await stdin.drain()
        except ConnectionResetError:
            return False
        return True

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        os.close(self._wake_w)


async def carry(process: Process, fds: list[int]) -> int:
    """Wire ``fds`` (stdin, stdout, stderr) to ``process`` until it ends; its
    exit status, or 255 without one (a signal, a lost connection)."""
    stdin = _StdinPump(process, fds[0])
    outputs = [
        asyncio.ensure_future(_copy_out(process.stdout, fds[1])),
        asyncio.ensure_future(_copy_out(process.stderr, fds[2])),
    ]
    try:
        await asyncio.gather(*outputs)
        status = await process.wait()
    except ConnectionClosed:
        status = NO_STATUS
    finally:
        stdin.stop()
        for task in outputs:
            task.cancel()
    return status if 0 <= status <= 255 else NO_STATUS
