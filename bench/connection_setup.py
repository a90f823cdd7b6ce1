"""Connection setup: time to a usable ``-L``, and a 1000-connection burst through one.

Run ``python -m bench.connection_setup [--runs 5] [--connections 1000] [--size 64K] [--json]``.

Theory of operation. The lab is :mod:`bench.tunnel_throughput`'s: hashiked
and a private sshd on 127.0.0.1, one host key, one client key, a
known_hosts file, clients started as a user would start them. The target
behind every ``-L`` is an echo server (asyncio, backlog 1024) in a process of
its own.

* **Time to a usable forward**: from just before the client process
  (``hashike -N -L`` or ``ssh -N -L``) is started to the moment the first
  connection through its ``-L`` gets its answer back: a short message sent,
  half-closed, echoed and read to EOF. Connection attempts are polled every
  2 ms, so each figure holds up to 2 ms of polling. This covers interpreter
  start-up and imports, TCP connect, key exchange, host-key check, public-key
  authentication, binding the listener, and one channel open; the median of
  ``--runs`` fresh processes is reported.
* **Burst**: once a tunnel is usable, ``--connections`` connections are
  opened through its ``-L`` at once (asyncio, in this process); each sends
  ``--size`` bytes, half-closes, and must read the same bytes back before
  EOF. Reported: the wall time of the whole burst, the number of connections
  that failed (refused, reset, timed out, wrong data), and per-connection
  latency percentiles. The same burst against the echo server directly gives
  the floor.

Every wait is bounded: process start-up by a deadline, each burst
connection by ``--timeout``. This is a benchmark: never assert on its
numbers in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.lab import (
    HOST,
    STARTUP_TIMEOUT,
    Lab,
    lab,
    loadavg,
    output_options,
    process_table,
    read_line,
    start_server,
    stop_process,
    tail,
    tree_cpu,
)
from bench.tunnel_throughput import (
    ARROW,
    SOCKS5_GRANTED,
    SOCKS5_REPLY_SIZE,
    client_available,
    environment,
    server_available,
    socks5_connect,
    start_tunnel,
)

__all__ = [
    "PAIRINGS",
    "PROBE",
    "BurstResult",
    "SetupResult",
    "burst",
    "cell",
    "echo_server",
    "main",
    "markdown",
    "pairing_name",
    "parse_size",
    "raise_fd_limit",
    "run",
]

PAIRINGS: tuple[tuple[str, str], ...] = (
    ("hashike", "hashiked"),
    ("hashike", "sshd"),
    ("ssh", "hashiked"),
    ("ssh", "sshd"),
)
DEFAULT_CIPHER = "aes128-gcm@openssh.com"
PROBE = b"hashike-bench probe\n"
ECHO_LIFETIME = 3600  # the echo server exits on its own after this many seconds

ECHO_SERVER = """
import asyncio, sys

async def handle(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def main(lifetime):
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        try:
            await asyncio.wait_for(server.serve_forever(), lifetime)
        except asyncio.TimeoutError:
            pass

asyncio.run(main(float(sys.argv[1])))
"""


@dataclass(frozen=True, slots=True)
class SetupResult:
    pairing: str
    median_ms: float | None
    min_ms: float | None
    max_ms: float | None
    runs_ms: list[float]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BurstResult:
    pairing: str
    run: int
    connections: int
    size: int
    seconds: float | None
    failures: int
    failure_kinds: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    listen_overflows: int | None = None  # machine-wide TcpExt ListenOverflows during the burst
    client_cpu: float | None = None  # seconds, the client's process tree, during the burst
    server_cpu: float | None = None
    error: str | None = None


@contextlib.contextmanager
def echo_server(env: dict[str, str]) -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER, str(ECHO_LIFETIME)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        line = read_line(process.stdout, STARTUP_TIMEOUT)
        if not line.strip().isdigit():
            raise RuntimeError(f"echo server did not start: {line!r}")
        yield int(line)
    finally:
        stop_process(process)


async def _one(port: int, payload: bytes, socks_to: int | None) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        if socks_to is not None:  # -D: a SOCKS5 CONNECT to the echo server first
            writer.write(socks5_connect(socks_to))
            reply = await reader.readexactly(SOCKS5_REPLY_SIZE)
            if not reply.startswith(SOCKS5_GRANTED):
                raise ConnectionRefusedError(f"SOCKS5 CONNECT refused: {reply!r}")
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        data = await reader.read(-1)  # to EOF
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if data != payload:
        raise ValueError(f"echo returned {len(data)} bytes, not the {len(payload)} sent")
    return loop.time() - start


async def _burst(
    port: int, connections: int, size: int, timeout: float, socks_to: int | None
) -> tuple[float, list[Any]]:
    payload = os.urandom(size)
    start = time.perf_counter()
    outcomes = await asyncio.gather(
        *(asyncio.wait_for(_one(port, payload, socks_to), timeout) for _ in range(connections)),
        return_exceptions=True,
    )
    return time.perf_counter() - start, outcomes


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} {errno.errorcode.get(exc.errno, exc.errno)}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


def listen_overflows() -> int | None:
    """TcpExt ListenOverflows: SYNs or ACKs dropped because an accept queue was full."""
    try:
        with open("/proc/net/netstat") as f:
            lines = [line.split() for line in f if line.startswith("TcpExt:")]
        return int(lines[1][lines[0].index("ListenOverflows")])
    except (OSError, ValueError, IndexError):
        return None


def burst(
    label: str,
    port: int,
    connections: int,
    size: int,
    timeout: float,
    run: int = 1,
    client_pid: int | None = None,
    server_pid: int | None = None,
    socks_to: int | None = None,
) -> BurstResult:
    """``connections`` concurrent echo round trips of ``size`` bytes through
    ``port``; each first asks for 127.0.0.1:``socks_to`` by SOCKS5 if given."""
    table = process_table()
    c0 = tree_cpu(client_pid, table) if client_pid is not None else None
    s0 = tree_cpu(server_pid, table) if server_pid is not None else None
    o0 = listen_overflows()
    seconds, outcomes = asyncio.run(_burst(port, connections, size, timeout, socks_to))
    o1 = listen_overflows()
    table = process_table()
    c1 = tree_cpu(client_pid, table) if client_pid is not None else None
    s1 = tree_cpu(server_pid, table) if server_pid is not None else None
    latencies = sorted(o * 1000 for o in outcomes if isinstance(o, float))
    kinds = Counter(_failure_kind(o) for o in outcomes if not isinstance(o, float))

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    return BurstResult(
        pairing=label,
        run=run,
        connections=connections,
        size=size,
        seconds=round(seconds, 3),
        failures=sum(kinds.values()),
        failure_kinds=dict(kinds),
        p50_ms=pct(0.5),
        p99_ms=pct(0.99),
        max_ms=round(latencies[-1], 1) if latencies else None,
        listen_overflows=o1 - o0 if o0 is not None and o1 is not None else None,
        client_cpu=round(c1 - c0, 2) if c0 is not None and c1 is not None else None,
        server_cpu=round(s1 - s0, 2) if s0 is not None and s1 is not None else None,
    )


def pairing_name(pairing: tuple[str, str]) -> str:
    """``client → server``."""
    return f"{pairing[0]} {ARROW} {pairing[1]}"


def time_to_forward(
    the_lab: Lab, pairing: tuple[str, str], cipher: str, echo_port: int, runs: int
) -> SetupResult:
    times: list[float] = []
    try:
        server = start_server(the_lab, pairing[1])
        for _ in range(runs):
            tunnel = start_tunnel(the_lab, pairing[0], server, cipher, echo_port, PROBE, PROBE)
            tunnel.stop()
            times.append((tunnel.ready - tunnel.started) * 1000)
    except (RuntimeError, OSError) as exc:
        error: str | None = str(exc)
    else:
        error = None
    return SetupResult(
        pairing=pairing_name(pairing),
        median_ms=round(statistics.median(times), 1) if times else None,
        min_ms=round(min(times), 1) if times else None,
        max_ms=round(max(times), 1) if times else None,
        runs_ms=[round(t, 1) for t in times],
        error=error,
    )


def burst_through(
    the_lab: Lab,
    pairing: tuple[str, str],
    cipher: str,
    echo_port: int,
    connections: int,
    size: int,
    timeout: float,
    runs: int,
) -> list[BurstResult]:
    """``runs`` bursts through one tunnel."""
    label = pairing_name(pairing)
    try:
        server = start_server(the_lab, pairing[1])
        tunnel = start_tunnel(the_lab, pairing[0], server, cipher, echo_port, PROBE, PROBE)
    except (RuntimeError, OSError) as exc:
        return [BurstResult(label, 1, connections, size, None, 0, {}, None, None, None, error=str(exc))]
    results = []
    try:
        for run_no in range(1, runs + 1):
            result = burst(
                label,
                tunnel.local_port,
                connections,
                size,
                timeout,
                run_no,
                tunnel.process.pid,
                server.process.pid,
            )
            if tunnel.process.poll() is not None:
                error = f"client exited {tunnel.process.returncode}: {tail(tunnel.log, 300)}"
                results.append(BurstResult(**{**asdict(result), "error": error}))
                break
            results.append(result)
    finally:
        tunnel.stop()
    return results


def python_startup_ms(env: dict[str, str], runs: int) -> float:
    """Median time of ``python -c 'import hashike.cli.client'``: the floor of hashike's set-up."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import hashike.cli.client"], check=True, timeout=60, env=env)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def run(
    the_lab: Lab,
    pairings: Sequence[tuple[str, str]],
    cipher: str,
    runs: int,
    connections: int,
    size: int,
    timeout: float,
    burst_runs: int,
    progress: Callable[[str], None],
) -> tuple[list[SetupResult], list[BurstResult]]:
    setups: list[SetupResult] = []
    bursts: list[BurstResult] = []
    with echo_server(the_lab.env) as echo_port:
        for pairing in pairings:
            setups.append(time_to_forward(the_lab, pairing, cipher, echo_port, runs))
            progress(f"setup {setups[-1]}")
        for run_no in range(1, burst_runs + 1):
            bursts.append(burst("direct (no tunnel)", echo_port, connections, size, timeout, run_no))
            progress(f"burst {bursts[-1]}")
        for pairing in pairings:
            for result in burst_through(
                the_lab, pairing, cipher, echo_port, connections, size, timeout, burst_runs
            ):
                bursts.append(result)
                progress(f"burst {result}")
    return setups, bursts


def cell(value: float | None, fmt: str) -> str:
    """A table cell: ``value`` formatted, or a dash for no value."""
    return "—" if value is None else format(value, fmt)


def markdown(setups: Sequence[SetupResult], bursts: Sequence[BurstResult]) -> str:
    lines = [
        "| client → server | time to usable -L, median ms | min ms | max ms | each run, ms |",
        "|---|---:|---:|---:|---|",
    ]
    for s in setups:
        tail = f"error: {s.error[:120]}" if s.error else ", ".join(f"{t:.0f}" for t in s.runs_ms)
        lines.append(
            f"| {s.pairing} | {cell(s.median_ms, '.0f')} | {cell(s.min_ms, '.0f')} "
            f"| {cell(s.max_ms, '.0f')} | {tail} |"
        )
    lines += [
        "",
        "| burst through | run | total s | failures | listen overflows | p50 ms | p99 ms | max ms "
        "| client CPU s | server CPU s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in bursts:
        failures = str(b.failures)
        if b.failure_kinds:
            failures += " (" + ", ".join(f"{k} {n}" for k, n in sorted(b.failure_kinds.items())) + ")"
        if b.error:
            failures += f"; error: {b.error[:120]}"
        overflows = "—" if b.listen_overflows is None else str(b.listen_overflows)
        lines.append(
            f"| {b.pairing} | {b.run} | {cell(b.seconds, '.2f')} | {failures} | {overflows} "
            f"| {cell(b.p50_ms, '.0f')} | {cell(b.p99_ms, '.0f')} | {cell(b.max_ms, '.0f')} "
            f"| {cell(b.client_cpu, '.2f')} | {cell(b.server_cpu, '.2f')} |"
        )
    return "\n".join(lines)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = 1
    if text.endswith(("k", "kib")):
        text, scale = text.rstrip("kib"), 1024
    value = int(text) * scale
    if not 1 <= value <= 16 << 20:
        raise argparse.ArgumentTypeError("size must be 1 byte to 16 MiB")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.connection_setup", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--runs", type=int, default=5, help="fresh client processes per pairing (median)")
    p.add_argument("--burst-runs", type=int, default=3, help="bursts per pairing, one tunnel (default 3)")
    p.add_argument("--connections", type=int, default=1000, help="connections in the burst (default 1000)")
    p.add_argument(
        "--size", type=parse_size, default=64 * 1024, help="bytes each burst connection echoes (64K)"
    )
    p.add_argument(
        "--cipher", default=DEFAULT_CIPHER, help=f"forced on every client (default {DEFAULT_CIPHER})"
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="bound of one burst connection, s (default 60)"
    )
    p.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="start Python processes with this environment as it is (with PYTHONDONTWRITEBYTECODE=1, "
        "every start recompiles every module); default: a bytecode cache under the temporary directory",
    )
    output_options(p, "Markdown tables")
    return p


def raise_fd_limit(connections: int) -> None:
    # Each burst connection is one descriptor here and one or two in every
    # process of the tunnel; children inherit the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * connections + 256))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.runs < 1 or args.burst_runs < 1 or not 1 <= args.connections <= 10_000 or args.timeout <= 0:
        print("--runs must be positive, --connections 1..10000, --timeout positive", file=sys.stderr)
        return 2
    raise_fd_limit(args.connections)

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    with lab(keep=args.keep, bytecode_cache=not args.no_bytecode_cache) as the_lab:
        pairings = [
            p for p in PAIRINGS if client_available(the_lab, p[0]) and server_available(the_lab, p[1])
        ]
        env = environment(the_lab)
        env["import_hashike_cli_ms"] = python_startup_ms(the_lab.env, args.runs)
        env["bytecode_cache"] = not args.no_bytecode_cache
        setups, bursts = run(
            the_lab,
            pairings,
            args.cipher,
            args.runs,
            args.connections,
            args.size,
            args.timeout,
            args.burst_runs,
            progress,
        )
    env.update(
        loadavg_after=loadavg(),
        wall_seconds=round(time.monotonic() - started, 1),
        cipher=args.cipher,
        runs=args.runs,
        connections=args.connections,
        size=args.size,
    )
    if args.json:
        print(
            json.dumps(
                {"env": env, "setup": [asdict(s) for s in setups], "burst": [asdict(b) for b in bursts]},
                indent=2,
            )
        )
        return 0
    print(
        f"Python {env['python']}, cryptography {env['cryptography']}, {env['openssh']}, "
        f"hashike {env['hashike']}; {env['machine']} x{env['cpus']}"
    )
    print(
        f"cipher {args.cipher}; setup: median of {args.runs} fresh processes; burst: {args.connections} "
        f"connections x {args.size} bytes echoed, at once; "
        f"`python -c 'import hashike.cli.client'` alone: {env['import_hashike_cli_ms']} ms "
        f"({'with' if env['bytecode_cache'] else 'without'} a bytecode cache); "
        f"wall time {env['wall_seconds']} s; load average {env['loadavg_before']} before, "
        f"{env['loadavg_after']} after"
    )
    print()
    print(markdown(setups, bursts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
