"""hashiked across cores: one supervisor and ``Workers`` worker processes.

The supervisor owns the listening sockets (bound, or handed by systemd) and
accepts every connection itself, so what must be global is decided in one
place: MaxStartups with its random early drop, PerSourceMaxStartups and
PerSourcePenalties are the single-process :class:`~hashike.aio.admission.Admission`,
counting every worker's unauthenticated connections. An admitted socket goes,
round robin, to a worker, which runs today's asyncio server on it; no byte of
SSH passes through the supervisor.

Each worker has one channel to the supervisor: an AF_UNIX SOCK_SEQPACKET
socketpair (one message per datagram, descriptors by SCM_RIGHTS):

- supervisor to worker: ``conn`` with the connection's descriptor; ``drain``
  (stop getting connections, exit once the last one ends, or close them
  once WorkerDrainTimeout has passed).
- supervisor to worker: ``status`` with one end of a socketpair, on which
  the worker answers the status request it reads (aio/server_status.py).
- worker to supervisor: ``ended HOST`` (a connection from HOST authenticated
  or went away: it is no longer a startup), ``penalty HOST KIND`` (charge
  PerSourcePenalties' KIND to HOST).
- RemoteForwardTakeover: a worker's ``takeover ...`` goes to every other
  worker as ``surrender ...`` (:mod:`hashike.cli.worker_forwards`).

A worker is ``hashiked`` run again with the same arguments and
``HASHIKE_WORKER_CHANNEL`` naming its end, so it reads the configuration and
host keys itself: that is what SIGHUP relies on. The supervisor re-reads them
to check them, starts new workers and tells the old ones to drain; a
configuration that does not load keeps the running workers, with one log
line. A worker that dies is restarted at once (after a second if it died in
its first second, so that a worker that cannot start does not spin), and
the connections it held no longer count as startups.

PrivilegeSeparation (:mod:`hashike.aio.privsep`): a worker forks a process
per authenticated connection, which outlives a worker killed under it. The
supervisor is then the subreaper (PR_SET_CHILD_SUBREAPER, prctl(2)) of those
orphans and reaps them on SIGCHLD; it tells them from its workers by their
uid, which is never root's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from hashike.aio.admission import Admission, drop
from hashike.aio.listen import LISTEN_BACKLOG, bind_all
from hashike.aio.server import Server, ServerOptions
from hashike.aio.server_stats import snapshot_of
from hashike.aio.server_status import WORKER_MESSAGE, answer_on, gather
from hashike.config.sshd_config import ServerSettings
from hashike.proto.text import escape_text

from .netstat import children
from .worker_forwards import WorkerForwards, relay_takeover

__all__ = ["ReloadError", "Supervisor", "serve_worker", "worker_channel", "worker_count"]

log = logging.getLogger("hashike.server")

CHANNEL_ENV = "HASHIKE_WORKER_CHANNEL"
MESSAGE_SIZE = 512  # the longest message: "penalty" and an IPv6 address and a kind
CHANNEL_TIMEOUT = 5.0  # a worker that cannot take a message this long is stuck
QUICK_DEATH = 1.0  # seconds: a worker dying this soon is restarted after as long
STOP_TIMEOUT = 10.0  # at shutdown, SIGTERM'd workers get this long before SIGKILL
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


class ReloadError(Exception):
    """The configuration or host keys did not load; the message is one line."""


def worker_count(settings: ServerSettings) -> int:
    """``Workers``: ``auto`` (0) is one per core this process may use."""
    return settings.workers or len(os.sched_getaffinity(0))


def worker_channel() -> socket.socket | None:
    """This process's channel to its supervisor, None unless it is a worker."""
    fd = os.environ.pop(CHANNEL_ENV, "")
    if not fd.isdigit():
        return None
    channel = socket.socket(fileno=int(fd))
    os.set_inheritable(channel.fileno(), False)  # not the sessions'
    channel.settimeout(CHANNEL_TIMEOUT)
    return channel


# --- the supervisor -------------------------------------------------------------


def _options_admission(options: ServerOptions) -> Admission:
    return Admission(
        options.max_startups,
        options.per_source_max_startups,
        options.per_source_net_block_size,
        options.penalties,
        options.penalty_exempt,
    )


@dataclass(eq=False)
class _Worker:
    process: asyncio.subprocess.Process
    channel: socket.socket
    started: float
    pending: list[str] = field(default_factory=list)  # hosts of its unauthenticated connections
    draining: bool = False


class _Accept(asyncio.Protocol):
    """A listening socket's protocol in the supervisor: each new socket is
    admitted or dropped, then handed over; the supervisor never reads it."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._supervisor.admit(transport)


class Supervisor:
    """The listening half of hashiked with ``Workers`` > 1. ``reload`` re-reads
    the configuration and host keys (raising ReloadError) and gives the new
    server options and worker count."""

    def __init__(
        self,
        argv: Sequence[str],
        options: ServerOptions,
        count: int,
        reload: Callable[[], tuple[ServerOptions, int]],
    ) -> None:
        self._argv = list(argv)
        self._count = count
        self._privsep = options.privilege_separation
        self._reload = reload
        self.admission = _options_admission(options)
        self.workers: list[_Worker] = []
        self._servers: list[asyncio.Server] = []
        self._turn = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    # What cli/server.py asks of a listener, as of aio.server.Server.

    @property
    def sockets(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for srv in self._servers for sock in srv.sockets]

    async def start(self, endpoints: Sequence[tuple[str, int]], *, optional: Collection[str] = ()) -> None:
        self._servers += await bind_all(lambda: _Accept(self), endpoints, optional=optional)
        await self._spawn_all()

    async def adopt(self, sockets: Sequence[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for sock in sockets:
            server = await loop.create_server(lambda: _Accept(self), sock=sock, backlog=LISTEN_BACKLOG)
            self._servers.append(server)
        await self._spawn_all()

    def close(self) -> None:
        self._stopping = True
        for srv in self._servers:
            srv.close()
        for worker in self.workers:
            _signal(worker, signal.SIGTERM)

    async def wait_closed(self) -> None:
        for srv in self._servers:
            await srv.wait_closed()
        for worker in list(self.workers):
            try:
                await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                _signal(worker, signal.SIGKILL)
                await worker.process.wait()
        for task in list(self._tasks):
            await task

    # Workers.

    async def _spawn_all(self) -> None:
        if self._privsep:
            _become_subreaper()
            asyncio.get_running_loop().add_signal_handler(signal.SIGCHLD, self._reap_orphans)
        for _ in range(self._count):
            self.workers.append(await self._spawn())
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)

    def _reap_orphans(self) -> None:
        """Reap the exited connection processes (and what they left behind)
        that came to us when their worker died: the processes of ours that
        run as a user, never a worker (asyncio reaps those)."""
        for pid in children(os.getpid()):  # an orphan goes to the thread that forked: this one
            if _uid(pid) not in (None, 0):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # a live one stays

    async def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.settimeout(CHANNEL_TIMEOUT)
        loop = asyncio.get_running_loop()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hashike.cli.server",
                *self._argv,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env={**os.environ, CHANNEL_ENV: str(theirs.fileno())},
            )
        finally:
            theirs.close()  # the worker's end is the worker's alone: its exit is our EOF
        worker = _Worker(process, ours, loop.time())
        loop.add_reader(ours, self._message, worker)
        task = loop.create_task(self._watch(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.debug("worker %d started", process.pid)
        return worker

    async def _watch(self, worker: _Worker) -> None:
        status = await worker.process.wait()
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.channel)
        worker.channel.close()
        self.workers.remove(worker)
        for host in worker.pending:
            self.admission.ended(host)
        if self._privsep:
            self._reap_orphans()  # its children are ours now; some may have ended already
        if self._stopping or worker.draining:
            log.debug("worker %d exited with status %d", worker.process.pid, status)
            return
        if loop.time() - worker.started < QUICK_DEATH:
            await asyncio.sleep(QUICK_DEATH)
            if self._stopping:
                return
        replacement = await self._spawn()
        self.workers.append(replacement)
        log.error(
            "worker %d %s; restarted as pid %d", worker.process.pid, _death(status), replacement.process.pid
        )

    def _message(self, worker: _Worker) -> None:
        try:
            data = worker.channel.recv(MESSAGE_SIZE)
        except OSError:
            data = b""
        if not data:  # the worker is gone; _watch reaps it
            asyncio.get_running_loop().remove_reader(worker.channel)
            return
        words = data.decode("ascii", "replace").split()
        if words[:1] == ["ended"] and len(words) == 2 and words[1] in worker.pending:
            worker.pending.remove(words[1])
            self.admission.ended(words[1])
        elif words[:1] == ["penalty"] and len(words) == 3:
            self.admission.penalise(words[1], words[2], asyncio.get_running_loop().time())
        elif not relay_takeover(data, [w.channel for w in self.workers if w is not worker]):
            log.error("worker %d: bad message %s", worker.process.pid, escape_text(repr(data)))

    async def status(self) -> dict[str, Any]:
        """``hashike status --server``: every worker's connections, draining ones too."""
        return await gather([(w.process.pid, w.channel) for w in self.workers])

    # Connections.

    @property
    def startups(self) -> int:
        return sum(len(w.pending) for w in self.workers)

    def admit(self, transport: asyncio.Transport) -> None:
        """Admission as a single server decides it, over all workers; an
        admitted socket goes to the next worker that takes it."""
        host = transport.get_extra_info("peername")[0]
        refusal = self.admission.refusal(host, self.startups, asyncio.get_running_loop().time())
        if refusal is not None:
            drop(transport, refusal, self.startups)
            return
        fd = os.dup(transport.get_extra_info("socket").fileno())
        transport.abort()  # our descriptor goes; the connection lives on in ``fd``
        try:
            worker = self._hand(fd)
        finally:
            os.close(fd)
        if worker is None:
            log.error("no worker took the connection from %s", escape_text(host))
            return
        worker.pending.append(host)
        self.admission.started(host)

    def _hand(self, fd: int) -> _Worker | None:
        live = [w for w in self.workers if not w.draining]
        for _ in live:
            self._turn = (self._turn + 1) % len(live)
            worker = live[self._turn]
            try:
                socket.send_fds(worker.channel, [b"conn"], [fd])
            except OSError as exc:
                log.debug("worker %d: %s", worker.process.pid, exc)
                continue
            return worker
        return None

    # SIGHUP.

    def _hangup(self) -> None:
        log.info("Received SIGHUP; restarting workers.")
        task = asyncio.get_running_loop().create_task(self._restart())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self) -> None:
        try:
            options, count = self._reload()
        except ReloadError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        old = [w for w in self.workers if not w.draining]
        admission = _options_admission(options)
        for worker in old:
            worker.draining = True
            for host in worker.pending:
                admission.started(host)
        self.admission, self._count = admission, count
        for _ in range(count):
            self.workers.append(await self._spawn())
        for worker in old:
            try:
                worker.channel.send(b"drain")
            except OSError as exc:
                log.debug("worker %d: %s", worker.process.pid, exc)


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.error("prctl(PR_SET_CHILD_SUBREAPER): %s", os.strerror(ctypes.get_errno()))


def _uid(pid: int) -> int | None:
    """The real uid of ``pid``, None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _signal(worker: _Worker, sig: signal.Signals) -> None:
    if worker.process.returncode is None:
        worker.process.send_signal(sig)


def _death(status: int) -> str:
    """asyncio's exit status in words: negative is the signal that killed it."""
    if status < 0:
        return f"died with signal {-status} ({signal.Signals(-status).name})"
    return f"exited with status {status}"


# --- a worker ---------------------------------------------------------------------


class _Reporting(Admission):
    """A worker's admission: the supervisor already admitted the socket and
    counts it; the worker reports when it stops being a startup and the
    penalties it earns."""

    def __init__(self, channel: socket.socket, options: ServerOptions) -> None:
        super().__init__(options.max_startups, None, options.per_source_net_block_size, None, ())
        self._channel = channel

    def refusal(self, host: str, startups: int, now: float) -> None:
        return None

    def started(self, host: str) -> None:
        pass  # counted by the supervisor when it handed the socket over

    def ended(self, host: str) -> None:
        self._send(f"ended {host}")

    def penalise(self, host: str, kind: str, now: float) -> None:
        self._send(f"penalty {host} {kind}")

    def _send(self, text: str) -> None:
        try:
            self._channel.send(text.encode("ascii"))
        except OSError as exc:  # the supervisor is gone: _serve_worker ends us
            log.debug("supervisor channel: %s", exc)


async def serve_worker(channel: socket.socket, server: Server, drain_timeout: float) -> None:
    """Serve the connections the supervisor hands over ``channel`` until it
    says ``drain`` (then until they end, at most ``drain_timeout``), closes
    the channel, or SIGTERM/SIGINT."""
    server.snapshot = snapshot = snapshot_of(server)
    server.admission = _Reporting(channel, server.options)
    forwards = WorkerForwards(channel, server, MESSAGE_SIZE)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    draining = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks: set[asyncio.Task[None]] = set()

    def message() -> None:
        try:
            data, fds, _, _ = socket.recv_fds(channel, MESSAGE_SIZE, 1)
        except OSError:
            data, fds = b"", []
        for fd in fds[1:] if data in (b"conn", WORKER_MESSAGE) else fds:
            os.close(fd)
        if data in (b"conn", WORKER_MESSAGE) and fds:
            os.set_inheritable(fds[0], False)  # SCM_RIGHTS gives no O_CLOEXEC
            sock = socket.socket(fileno=fds[0])
            task = loop.create_task(
                server.serve_socket(sock) if data == b"conn" else answer_on(sock, snapshot)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif data == b"drain":
            draining.set()
        elif data.startswith(b"surrender "):
            forwards.surrender(data)
        else:  # EOF: the supervisor is gone, and with it anyone to report to
            loop.remove_reader(channel)
            stop.set()

    loop.add_reader(channel, message)
    waits = [loop.create_task(stop.wait()), loop.create_task(draining.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if draining.is_set() and not stop.is_set():
        await _drain(server, stop, drain_timeout)
    for wait in waits:
        wait.cancel()
    loop.remove_reader(channel)
    server.close()
    await server.wait_closed()


async def _drain(server: Server, stop: asyncio.Event, timeout: float) -> None:
    """Wait for the last connection to end, at most ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # PrivilegeSeparation's children are connections of this worker too:
    # they ask it for signatures (hashike.aio.privsep).
    while (server.connections or server.children) and not stop.is_set():
        if loop.time() >= deadline:
            log.info(
                "drain timeout: closing %d connections", len(server.connections) + len(server.children or ())
            )
            return
        await asyncio.sleep(min(0.5, deadline - loop.time()))
