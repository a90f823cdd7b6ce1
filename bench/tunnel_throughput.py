"""Bulk throughput through -L, -R and -D tunnels: hashike and OpenSSH, each as client and as server.

Run ``python -m bench.tunnel_throughput [--mib 1024 | --quick] [--ciphers a,b] [--modes L,R,D]
[--runs N] [--json]``.

Theory of operation. Everything runs on 127.0.0.1 in processes of its own,
started the way a user would start them: the ``hashiked`` CLI
(``python -m hashike.cli.server``), a private OpenSSH ``sshd -D -e -f cfg``
on a free port with its own config and keys, the ``hashike`` CLI
(``python -m hashike.cli.client -N -L``), OpenSSH ``ssh -N -L``, and
AsyncSSH's client when ``import asyncssh`` works (it is not installed for
this; nothing here installs it). All servers share one host key and one
authorized client key, written to a temporary directory; each client forces
the cipher under test with ``-o Ciphers=...``.

This process holds both ends of every tunnel. The *sink* is a threaded TCP
server that reads into one preallocated buffer and discards; after EOF it
sends back the byte count in ASCII and closes. A *transfer* connects to the
tunnel's local port, ``sendall``\\ s N MiB from a preallocated 1 MiB buffer,
shuts down its write side and waits for the sink's count: the time from
connect to that answer gives MB/s (10**6 bytes/s), and the count must equal
what was sent. EOF and the answer cross the tunnel too, so half-close is
exercised on every run. The mode says which tunnel: ``-L`` (the client
listens), ``-R`` (the server listens, on loopback, and the client connects
to the sink) or ``-D`` (the client serves SOCKS; each transfer first makes
its own SOCKS5 CONNECT to the sink). AsyncSSH runs ``-L`` only.

CPU per GiB comes from ``/proc/PID/stat`` (utime + stime, every thread),
read just before and just after a transfer, summed over the client's
process tree and over the server's (sshd forks a monitor and an
unprivileged child per connection, so its whole tree is counted). Page
faults per GiB (minflt + majflt, same file, same trees) come next to it: a
heap that glibc trims and grows back shows up there as a fault storm. The
machine's busy time from ``/proc/stat`` over the same interval, minus this
benchmark's own processes, is reported as the *background* load: other
people's work on a shared machine.

Per cipher, every tunnel is started (and warmed up with a short transfer)
before any is measured, and the pairings take turns within each run, so a
noisy neighbour hurts them alike. Loopback TCP with no tunnel is the
ceiling. Every transfer is bounded by ``--timeout``; every wait for a
process by a fixed deadline. This is a benchmark: never assert on its
numbers in tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cryptography

from bench.lab import (
    CHUNK,
    HOST,
    MAX_REPLY,
    POLL_INTERVAL,
    STARTUP_TIMEOUT,
    WARMUP_BYTES,
    GiB,
    Lab,
    MiB,
    Server,
    free_port,
    lab,
    loadavg,
    machine_busy,
    output_options,
    own_cpu,
    process_table,
    start_server,
    stop_process,
    tail,
    tree_cpu,
    tree_faults,
)

__all__ = [
    "ARROW",
    "BASELINE",
    "PAIRINGS",
    "MODES",
    "Result",
    "SOCKS5_GRANTED",
    "SOCKS5_REPLY_SIZE",
    "Sink",
    "Tunnel",
    "client_argv",
    "client_available",
    "environment",
    "main",
    "markdown",
    "request_reply",
    "run",
    "server_available",
    "socks5_connect",
    "start_tunnel",
    "transfer",
]


DEFAULT_CIPHERS = ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com")
# (client, server), in table order. "ssh → sshd" is the reference.
PAIRINGS: tuple[tuple[str, str], ...] = (
    ("hashike", "hashiked"),
    ("hashike", "sshd"),
    ("ssh", "hashiked"),
    ("ssh", "sshd"),
    ("asyncssh", "sshd"),
)
BASELINE = ("ssh", "sshd")
MODES = ("L", "R", "D")
ARROW = "→"

# AsyncSSH as a -L client, run only when ``import asyncssh`` works. Arguments:
# host port user key known_hosts cipher listen_port target_port.
ASYNCSSH_CLIENT = """
import asyncio, sys
import asyncssh

async def main():
    host, port, user, key, known, cipher, lport, tport = sys.argv[1:]
    async with asyncssh.connect(
        host, int(port), username=user, client_keys=[key], known_hosts=known,
        encryption_algs=[cipher], agent_path=None, config=None,
    ) as conn:
        listener = await conn.forward_local_port(host, int(lport), host, int(tport))
        await listener.wait_closed()

asyncio.run(main())
"""


# --- tunnels ---------------------------------------------------------------------------


def client_available(the_lab: Lab, client: str) -> bool:
    if client == "ssh":
        return the_lab.ssh is not None
    if client == "asyncssh":
        return importlib.util.find_spec("asyncssh") is not None
    return True


def server_available(the_lab: Lab, server: str) -> bool:
    return server == "hashiked" or the_lab.sshd is not None


def client_argv(
    client: str,
    the_lab: Lab,
    server_port: int,
    cipher: str | None,
    local_port: int,
    target_port: int,
    mode: str = "L",
) -> list[str]:
    """The command line of one ``-N -L local_port:127.0.0.1:target_port``
    client (``-R`` the same with the server listening, ``-D local_port``)."""
    forward = f"{HOST}:{local_port}" if mode == "D" else f"{HOST}:{local_port}:{HOST}:{target_port}"
    destination = f"{the_lab.user}@{HOST}"
    common = [
        "-o", f"UserKnownHostsFile={the_lab.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "IdentityAgent=none",
        "-o", "IdentitiesOnly=yes",
        "-o", "ExitOnForwardFailure=yes",
        *(["-o", f"Ciphers={cipher}"] if cipher else []),
        "-i", str(the_lab.client_key),
        "-p", str(server_port),
        "-N", f"-{mode}", forward,
        destination,
    ]  # fmt: skip
    if client == "hashike":
        return [sys.executable, "-m", "hashike.cli.client", "-F", "none", *common]
    if client == "ssh":
        assert the_lab.ssh is not None
        return [the_lab.ssh, "-F", "/dev/null", "-o", "ConnectTimeout=10", *common]
    if client == "asyncssh" and mode == "L":
        return [
            sys.executable, "-c", ASYNCSSH_CLIENT, HOST, str(server_port), the_lab.user,
            str(the_lab.client_key), str(the_lab.known_hosts),
            cipher or "aes128-gcm@openssh.com", str(local_port), str(target_port),
        ]  # fmt: skip
    raise ValueError(f"unknown client {client!r}")


# The answer to socks5_connect(): the method chosen ("no authentication") and
# the reply "succeeded" (RFC 1928 sections 3 and 6), then the rest of that
# reply's IPv4 bound address and port.
SOCKS5_GRANTED = b"\x05\x00\x05\x00"
SOCKS5_REPLY_SIZE = 12


def socks5_connect(port: int) -> bytes:
    """The greeting (one method: no authentication) and the CONNECT request to
    127.0.0.1:``port``, sent at once: the server reads them in order."""
    return b"\x05\x01\x00" + b"\x05\x01\x00\x01" + socket.inet_aton(HOST) + port.to_bytes(2, "big")


def connect(port: int, timeout: float, socks_to: int | None = None) -> socket.socket:
    """Connect to a tunnel; through a SOCKS5 CONNECT (RFC 1928, no
    authentication) to 127.0.0.1:``socks_to`` when it is given (``-D``)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    if socks_to is not None:
        s.sendall(socks5_connect(socks_to))
        reply = b""
        while len(reply) < SOCKS5_REPLY_SIZE and (chunk := s.recv(SOCKS5_REPLY_SIZE - len(reply))):
            reply += chunk
        if not reply.startswith(SOCKS5_GRANTED):
            s.close()
            raise ConnectionRefusedError(f"SOCKS5 CONNECT refused: {reply!r}")
    return s


def request_reply(port: int, payload: bytes, timeout: float, socks_to: int | None = None) -> bytes:
    """Connect, send ``payload``, half-close, and read the answer to EOF."""
    with connect(port, timeout, socks_to) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) <= len(payload) + MAX_REPLY:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


@dataclass
class Tunnel:
    """A client process holding ``-L local_port`` open to a server."""

    client: str
    server: Server
    cipher: str | None
    mode: str
    local_port: int
    socks_to: int | None  # -D: where each connection asks to go
    process: subprocess.Popen[bytes]
    log: Path
    started: float  # perf_counter() just before the process was started
    ready: float  # perf_counter() when the first request got its answer

    @property
    def label(self) -> str:
        return pairing_label((self.client, self.server.name), self.mode)

    def stop(self) -> None:
        stop_process(self.process)


def start_tunnel(
    the_lab: Lab,
    client: str,
    server: Server,
    cipher: str | None,
    target_port: int,
    probe: bytes,
    expect: bytes,
    timeout: float = STARTUP_TIMEOUT,
    mode: str = "L",
) -> Tunnel:
    """Start a client and wait until a request through its -L gets ``expect`` back.

    ``ready - started`` is the time from process start to a usable forward
    (polled every POLL_INTERVAL). Retries with another local port if the
    client lost a race for the one chosen."""
    log = the_lab.directory / f"{client}-{mode}-{server.name}-{cipher or 'default'}.log"
    socks_to = target_port if mode == "D" else None
    failure = ""
    for _attempt in range(3):
        local_port = free_port()
        argv = client_argv(client, the_lab, server.port, cipher, local_port, target_port, mode)
        with open(log, "wb") as log_file:
            started = time.perf_counter()
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=the_lab.env
            )
        deadline = started + timeout
        while time.perf_counter() < deadline and process.poll() is None:
            try:
                wait = max(0.1, deadline - time.perf_counter())
                reply = request_reply(local_port, probe, wait, socks_to)
            except OSError:
                reply = None
            if reply == expect:
                ready = time.perf_counter()
                return Tunnel(
                    client, server, cipher, mode, local_port, socks_to, process, log, started, ready
                )
            time.sleep(POLL_INTERVAL)
        stop_process(process)
        failure = tail(log) or f"exit status {process.returncode}"
        if not re.search(r"[Aa]ddress already in use|cannot listen|forwarding failed", failure):
            break
    label = pairing_label((client, server.name), mode)
    raise RuntimeError(f"{label} ({cipher}): tunnel not usable: {failure}")


def pairing_label(pairing: tuple[str, str], mode: str) -> str:
    """``client → server`` for -L (as before -R and -D were measured), else ``client -R → server``."""
    client = pairing[0] if mode == "L" else f"{pairing[0]} -{mode}"
    return f"{client} {ARROW} {pairing[1]}"


# --- the sink and the sender -------------------------------------------------------------


class Sink:
    """Threaded TCP server: reads and discards; after EOF answers with the count."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._sock = socket.create_server((HOST, 0), backlog=128)
        self._sock.settimeout(0.2)  # so that the accept loop sees close()
        self.port: int = self._sock.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="sink", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        buf = bytearray(CHUNK)
        total = 0
        with conn:
            conn.settimeout(self.timeout)
            try:
                while n := conn.recv_into(buf):
                    total += n
                conn.sendall(f"{total}\n".encode())
            except OSError:
                pass  # the sender times out and reports it

    def close(self) -> None:
        self._closed.set()
        self._thread.join(1.0)
        self._sock.close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def transfer(
    port: int, buffer: memoryview, nbytes: int, timeout: float, socks_to: int | None = None
) -> float:
    """Send ``nbytes`` through ``port`` to the sink; seconds until its count
    came back (the SOCKS handshake, for -D, included)."""
    start = time.perf_counter()
    deadline = start + timeout
    with connect(port, timeout, socks_to) as s:
        sent = 0
        while sent < nbytes:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"sent {sent} of {nbytes} bytes in {timeout:.0f} s")
            s.settimeout(remaining)  # sendall's timeout bounds the whole call
            n = min(len(buffer), nbytes - sent)
            s.sendall(buffer[:n])
            sent += n
        s.shutdown(socket.SHUT_WR)
        s.settimeout(max(0.1, deadline - time.perf_counter()))
        reply = b""
        while len(reply) <= MAX_REPLY:
            chunk = s.recv(MAX_REPLY)
            if not chunk:
                break
            reply += chunk
    elapsed = time.perf_counter() - start
    if reply != f"{nbytes}\n".encode():
        raise RuntimeError(f"the sink answered {reply!r} after {nbytes} bytes were sent")
    return elapsed


# --- measuring ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    mbps: float
    client_cpu: float | None  # CPU s/GiB
    server_cpu: float | None
    background_cores: float  # other processes' CPU over the transfer, in cores
    client_faults: float | None = None  # page faults (minor + major) per GiB
    server_faults: float | None = None


def sample(
    port: int,
    buffer: memoryview,
    nbytes: int,
    timeout: float,
    client_pid: int | None,
    server_pid: int | None,
    socks_to: int | None = None,
) -> Sample:
    def snapshot() -> tuple[float, float, float, float, float, int, int]:
        table = process_table()
        c = tree_cpu(client_pid, table) if client_pid is not None else 0.0
        s = tree_cpu(server_pid, table) if server_pid is not None else 0.0
        cf = tree_faults(client_pid, table) if client_pid is not None else 0
        sf = tree_faults(server_pid, table) if server_pid is not None else 0
        return time.perf_counter(), c, s, own_cpu(), machine_busy(), cf, sf

    t0, c0, s0, o0, b0, cf0, sf0 = snapshot()
    elapsed = transfer(port, buffer, nbytes, timeout, socks_to)
    t1, c1, s1, o1, b1, cf1, sf1 = snapshot()
    gib = nbytes / GiB
    ours = (c1 - c0) + (s1 - s0) + (o1 - o0)
    return Sample(
        mbps=nbytes / elapsed / 1e6,
        client_cpu=(c1 - c0) / gib if client_pid is not None else None,
        server_cpu=(s1 - s0) / gib if server_pid is not None else None,
        background_cores=max(0.0, (b1 - b0) - ours) / (t1 - t0),
        client_faults=(cf1 - cf0) / gib if client_pid is not None else None,
        server_faults=(sf1 - sf0) / gib if server_pid is not None else None,
    )


@dataclass(frozen=True, slots=True)
class Result:
    pairing: str
    cipher: str | None
    mbps: float | None  # median of the runs
    client_cpu_s_per_gib: float | None
    server_cpu_s_per_gib: float | None
    ratio: float | None  # MB/s over ssh → sshd's with the same cipher
    runs_mbps: list[float]
    runs_client_cpu: list[float]
    runs_server_cpu: list[float]
    background_cores: float | None  # median, over the runs
    error: str | None = None
    mode: str = "L"  # the tunnel: -L, -R or -D
    client_faults_per_gib: float | None = None  # median, minor + major
    server_faults_per_gib: float | None = None


def _median(values: Sequence[float | None], digits: int) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), digits) if present else None


def _result(
    pairing: str, cipher: str | None, samples: Sequence[Sample], error: str | None, mode: str = "L"
) -> Result:
    return Result(
        mode=mode,
        pairing=pairing,
        cipher=cipher,
        mbps=_median([s.mbps for s in samples], 1),
        client_cpu_s_per_gib=_median([s.client_cpu for s in samples], 2),
        server_cpu_s_per_gib=_median([s.server_cpu for s in samples], 2),
        ratio=None,
        runs_mbps=[round(s.mbps, 1) for s in samples],
        runs_client_cpu=[round(s.client_cpu, 2) for s in samples if s.client_cpu is not None],
        runs_server_cpu=[round(s.server_cpu, 2) for s in samples if s.server_cpu is not None],
        background_cores=_median([s.background_cores for s in samples], 2),
        error=error,
        client_faults_per_gib=_median([s.client_faults for s in samples], 0),
        server_faults_per_gib=_median([s.server_faults for s in samples], 0),
    )


def _with_ratios(results: list[Result]) -> list[Result]:
    base = {(r.mode, r.cipher): r.mbps for r in results if r.pairing == pairing_label(BASELINE, r.mode)}
    out = []
    for r in results:
        b = base.get((r.mode, r.cipher)) if r.cipher is not None else None
        ratio = round(r.mbps / b, 2) if r.mbps is not None and b else None
        out.append(Result(**{**asdict(r), "ratio": ratio}))
    return out


def run(
    the_lab: Lab,
    pairings: Sequence[tuple[str, str]],
    ciphers: Sequence[str],
    nbytes: int,
    runs: int,
    timeout: float,
    progress: Callable[[str], None],
    modes: Sequence[str] = ("L",),
) -> list[Result]:
    buffer = memoryview(os.urandom(CHUNK))
    results: list[Result] = []
    with Sink(timeout) as sink:
        # The ceiling: the same sender and sink, no tunnel.
        loop_samples: list[Sample] = []
        transfer(sink.port, buffer, min(nbytes, WARMUP_BYTES), timeout)
        for _ in range(runs):
            loop_samples.append(sample(sink.port, buffer, nbytes, timeout, None, None))
            progress(f"loopback: {loop_samples[-1].mbps:,.0f} MB/s")
        results.append(_result("loopback TCP, no tunnel", None, loop_samples, None))
        for mode in modes:
            usable = [p for p in pairings if mode == "L" or p[0] != "asyncssh"]
            for cipher in ciphers:
                results += _measure(
                    the_lab, sink, usable, cipher, mode, buffer, nbytes, runs, timeout, progress
                )
    return _with_ratios(results)


def _measure(
    the_lab: Lab,
    sink: Sink,
    pairings: Sequence[tuple[str, str]],
    cipher: str,
    mode: str,
    buffer: memoryview,
    nbytes: int,
    runs: int,
    timeout: float,
    progress: Callable[[str], None],
) -> list[Result]:
    """Every pairing with one cipher and one mode: all started and warmed up
    first, then measured taking turns."""
    tunnels: dict[tuple[str, str], Tunnel] = {}
    errors: dict[tuple[str, str], str] = {}
    samples: dict[tuple[str, str], list[Sample]] = {p: [] for p in pairings}
    try:
        for pairing in pairings:
            try:
                server = start_server(the_lab, pairing[1])
                tunnel = start_tunnel(the_lab, pairing[0], server, cipher, sink.port, b"", b"0\n", mode=mode)
                tunnels[pairing] = tunnel
                transfer(tunnel.local_port, buffer, min(nbytes, WARMUP_BYTES), timeout, tunnel.socks_to)
            except (RuntimeError, OSError) as exc:
                errors[pairing] = str(exc)
                progress(f"{pairing_label(pairing, mode)} {cipher}: {exc}")
        for run_no in range(runs):
            for pairing, tunnel in tunnels.items():
                if pairing in errors:
                    continue
                try:
                    s = sample(
                        tunnel.local_port, buffer, nbytes, timeout,
                        tunnel.process.pid, tunnel.server.process.pid, tunnel.socks_to,
                    )  # fmt: skip
                except (RuntimeError, OSError) as exc:
                    errors[pairing] = f"run {run_no + 1}: {exc}; log: {tail(tunnel.log, 300)}"
                    progress(f"{tunnel.label} {cipher}: {errors[pairing]}")
                    continue
                samples[pairing].append(s)
                progress(
                    f"{tunnel.label} {cipher} run {run_no + 1}/{runs}: {s.mbps:,.0f} MB/s, "
                    f"CPU s/GiB {s.client_cpu:.2f} / {s.server_cpu:.2f}, "
                    f"faults/GiB {s.client_faults:,.0f} / {s.server_faults:,.0f}, "
                    f"background {s.background_cores:.2f} cores"
                )
    finally:
        for tunnel in tunnels.values():
            tunnel.stop()
    return [_result(pairing_label(p, mode), cipher, samples[p], errors.get(p), mode) for p in pairings]


# --- output ------------------------------------------------------------------------------


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown(results: Sequence[Result]) -> str:
    lines = [
        "| pairing | cipher | MB/s | client CPU s/GiB | server CPU s/GiB | client faults/GiB "
        "| server faults/GiB | ratio vs ssh→sshd | each run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        cipher = r.cipher or "—"
        if r.error is not None and r.mbps is None:
            lines.append(f"| {r.pairing} | {cipher} | — | — | — | — | — | — | error: {r.error[:120]} |")
            continue
        runs = ", ".join(f"{x:,.0f}" for x in r.runs_mbps) + (" (then failed)" if r.error else "")
        lines.append(
            f"| {r.pairing} | {cipher} | {_cell(r.mbps, ',.0f')} | {_cell(r.client_cpu_s_per_gib, '.2f')} "
            f"| {_cell(r.server_cpu_s_per_gib, '.2f')} | {_cell(r.client_faults_per_gib, ',.0f')} "
            f"| {_cell(r.server_faults_per_gib, ',.0f')} | {_cell(r.ratio, '.2f')} | {runs} |"
        )
    return "\n".join(lines)


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{' + uncommitted changes in src/' if dirty else ''}" if rev else "unknown"


def environment(the_lab: Lab) -> dict[str, Any]:
    openssh = "not found"
    if the_lab.ssh is not None:
        openssh = subprocess.run(
            [the_lab.ssh, "-V"], capture_output=True, text=True, timeout=10
        ).stderr.strip()
    return {
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssh": openssh,
        "asyncssh": importlib.util.find_spec("asyncssh") is not None,
        "hashike": _git_revision(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": loadavg(),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.tunnel_throughput", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument(
        "--mib", type=int, default=1024, help="MiB pushed through each tunnel per run (default 1024)"
    )
    p.add_argument("--quick", action="store_true", help="256 MiB per run (overrides --mib)")
    p.add_argument("--runs", type=int, default=3, help="runs per pairing and cipher; the median is reported")
    p.add_argument(
        "--ciphers",
        type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        default=list(DEFAULT_CIPHERS),
        help="comma-separated; each is forced on every client with -o Ciphers=",
    )
    p.add_argument(
        "--pairings",
        type=lambda s: [tuple(part.strip().split(":", 1)) for part in s.split(",") if part.strip()],
        default=None,
        help="subset, e.g. hashike:hashiked,ssh:sshd (default: all that are available)",
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="bound of one transfer, s (default 60 + MiB / 2)"
    )
    p.add_argument(
        "--modes",
        type=lambda s: [m.strip().lstrip("-").upper() for m in s.split(",") if m.strip()],
        default=list(MODES),
        help="comma-separated tunnels to measure: L, R, D (default all)",
    )
    output_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    mib = 256 if args.quick else args.mib
    if mib < 1 or args.runs < 1:
        print("--mib and --runs must be positive", file=sys.stderr)
        return 2
    timeout = args.timeout if args.timeout is not None else 60 + mib / 2
    wanted: list[tuple[str, str]] = [tuple(p) for p in args.pairings] if args.pairings else list(PAIRINGS)
    unknown = [p for p in wanted if p not in PAIRINGS]
    if unknown:
        print(f"unknown pairing(s): {unknown}; known: {PAIRINGS}", file=sys.stderr)
        return 2
    if not args.modes or any(m not in MODES for m in args.modes):
        print(f"--modes takes some of {', '.join(MODES)}", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    with lab(keep=args.keep) as the_lab:
        pairings = [p for p in wanted if client_available(the_lab, p[0]) and server_available(the_lab, p[1])]
        skipped = [f"{c} {ARROW} {s}" for c, s in wanted if (c, s) not in pairings]
        env = environment(the_lab)
        results = run(the_lab, pairings, args.ciphers, mib * MiB, args.runs, timeout, progress, args.modes)
    env.update(
        loadavg_after=loadavg(),
        wall_seconds=round(time.monotonic() - started, 1),
        mib=mib,
        runs=args.runs,
        modes=args.modes,
        skipped=skipped,
    )
    if args.json:
        print(json.dumps({"env": env, "results": [asdict(r) for r in results]}, indent=2))
        return 0
    background = [r.background_cores for r in results if r.background_cores is not None]
    print(
        f"Python {env['python']}, cryptography {env['cryptography']}, {env['openssh']}, "
        f"hashike {env['hashike']}; {env['machine']} x{env['cpus']}"
    )
    print(
        f"{mib} MiB per transfer, median of {args.runs} run(s); MB/s = 10**6 bytes/s; "
        f"wall time {env['wall_seconds']} s; load average {env['loadavg_before']} before, "
        f"{env['loadavg_after']} after; other processes' CPU during transfers: median "
        f"{statistics.median(background) if background else 0:.2f} cores"
    )
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")
    print()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
