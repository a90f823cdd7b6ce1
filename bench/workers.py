"""Simultaneous OpenSSH clients pushing bulk data: hashiked with ``Workers N`` next to sshd.

``python -m bench.workers [--mib 512] [--streams 4] [--workers 2 | 1,2] [--runs 1] [--json]``.

Theory of operation. Everything runs on 127.0.0.1 (bench/lab.py): one
hashiked per value of ``--workers`` (``-o Workers=N``) and a private sshd.
Each server gets ``--streams`` OpenSSH ``ssh -N -L`` clients, one connection
each, started one after the other (so round robin gives every worker its
share) with the cipher forced (aes128-gcm@openssh.com). A run sends
``--mib`` MiB through every tunnel of one server at the same time, each from
its own thread of this process, to the threaded sink of
bench/tunnel_throughput.py, which answers with the byte count it got; the
count must match. Aggregate MB/s = all bytes / (first connect -> last count).
The servers take turns within each run.

CPU is utime + stime from ``/proc/PID/stat`` before and after a run, for
every server-side process: hashiked's supervisor and each worker (with
``Workers 1``, the one process), sshd's listener and each connection's
process with whatever it forked (a root login stays in the one privileged
process; another user's gets an unprivileged child, OpenSSH README.privsep).
Memory comes from ``/proc/PID/status`` once the runs are over: VmHWM
(peak resident set) per process. A hashiked worker's cost per connection is
its VmHWM minus its VmRSS before any client connected, divided by the
connections it holds (its sockets in ``/proc/net/tcp``, as
hashike.cli.netstat reads them); sshd's is the VmHWM of the connection's
processes summed. Every transfer is bounded by ``--timeout``, every process
start by a fixed deadline, and every process is stopped on exit. This is a
benchmark: tests check that it runs, never its numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.lab import (
    CHUNK,
    HOST,
    STARTUP_TIMEOUT,
    WARMUP_BYTES,
    GiB,
    Lab,
    MiB,
    Proc,
    Server,
    descendants,
    lab,
    machine_busy,
    output_options,
    own_cpu,
    process_table,
    start_server,
    status_kib,
    tree_cpu,
)
from bench.tunnel_throughput import Sink, Tunnel, environment, start_tunnel, transfer
from hashike.cli.netstat import tcp_sockets

CIPHER = "aes128-gcm@openssh.com"
SETTLE = 0.5  # a worker's resident set unchanged this long: it has started
MAX_WORKERS = 64


# --- the server side's processes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unit:
    """hashiked's supervisor or one worker; sshd's listener or one connection's processes."""

    label: str
    pids: tuple[int, ...]


def units(server: Server, table: dict[int, Proc]) -> list[Unit]:
    """The server's process, then each child with its own descendants.

    hashiked's children are its workers (none with ``Workers 1``); sshd's are
    one process per connection, with its unprivileged child if it has one."""
    top = server.process.pid
    children = sorted(pid for pid, proc in table.items() if proc.ppid == top)
    is_sshd = server.name == "sshd"
    found = [Unit("listener" if is_sshd else ("supervisor" if children else "hashiked"), (top,))]
    for i, child in enumerate(children, 1):
        found.append(Unit(f"{'conn' if is_sshd else 'worker'} {i}", (child, *descendants(child, table))))
    return found


def connections_held(unit: Unit, port: int) -> int:
    """Established connections to local ``port`` whose socket the unit's processes hold."""
    return len(
        {
            (sock.local, sock.remote)
            for sock in tcp_sockets(list(unit.pids))
            if sock.state == "ESTABLISHED" and sock.local[1] == port
        }
    )


def wait_started(server: Server, workers: int) -> dict[int, int]:
    """Wait until hashiked's workers exist and their resident sets stopped
    growing (they have read the configuration and keys); pid -> VmRSS KiB."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    previous: dict[int, int] = {}
    while time.monotonic() < deadline:
        table = process_table()
        pids = [pid for unit in units(server, table) for pid in unit.pids]
        current = {pid: status_kib(pid, "status", "VmRSS:") for pid in pids}
        if len(pids) == (workers + 1 if workers > 1 else 1) and current == previous:
            return current
        previous = current
        time.sleep(SETTLE)
    raise RuntimeError(f"{server.name}: {workers} worker(s) did not settle in {STARTUP_TIMEOUT:.0f} s")


# --- one server under test ----------------------------------------------------------------


@dataclass
class Side:
    server: Server
    tunnels: list[Tunnel]
    rss_before: dict[int, int]  # KiB, before any client connected
    runs_mbps: list[float] = field(default_factory=list)
    runs_cpu: list[dict[str, list[float]]] = field(default_factory=list)  # unit -> its processes'
    runs_client_cpu: list[float] = field(default_factory=list)
    runs_faults: list[int] = field(default_factory=list)  # page faults of every server process
    runs_background: list[float] = field(default_factory=list)
    error: str | None = None


def _parallel(tunnels: Sequence[Tunnel], buffer: memoryview, nbytes: int, timeout: float) -> None:
    """One transfer per tunnel, all at once, each in its own thread; raises the first failure."""
    errors: list[BaseException] = []

    def send(tunnel: Tunnel) -> None:
        try:
            transfer(tunnel.local_port, buffer, nbytes, timeout)
        except (RuntimeError, OSError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(t,), daemon=True) for t in tunnels]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + STARTUP_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"a transfer still ran after {timeout + STARTUP_TIMEOUT:.0f} s")
    if errors:
        raise errors[0]


def measure(side: Side, buffer: memoryview, nbytes: int, timeout: float) -> None:
    """One run: every tunnel of ``side`` at once; adds this run's figures to it."""
    before, busy0, own0, t0 = process_table(), machine_busy(), own_cpu(), time.perf_counter()
    _parallel(side.tunnels, buffer, nbytes, timeout)
    elapsed = time.perf_counter() - t0
    after, busy1, own1 = process_table(), machine_busy(), own_cpu()

    def spent(pid: int) -> float:
        start = before[pid].cpu if pid in before else 0.0
        return after[pid].cpu - start if pid in after else 0.0

    def faulted(pid: int) -> int:
        start = before[pid].faults if pid in before else 0
        return after[pid].faults - start if pid in after else 0

    server_units = units(side.server, after)
    cpu = {u.label: [round(spent(p), 3) for p in u.pids] for u in server_units}
    side.runs_faults.append(sum(faulted(p) for u in server_units for p in u.pids))
    clients = sum(tree_cpu(t.process.pid, after) - tree_cpu(t.process.pid, before) for t in side.tunnels)
    ours = sum(map(sum, cpu.values())) + clients + (own1 - own0)
    side.runs_mbps.append(round(len(side.tunnels) * nbytes / elapsed / 1e6, 1))
    side.runs_cpu.append(cpu)
    side.runs_client_cpu.append(round(clients, 3))
    side.runs_background.append(round(max(0.0, (busy1 - busy0) - ours) / elapsed, 2))


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    server: str
    mbps: float | None  # aggregate, median of the runs
    ratio: float | None  # over sshd's
    server_cpu_s: float | None  # all server-side processes, median of the runs
    server_cpu_s_per_gib: float | None
    server_faults_per_gib: float | None  # minor + major, all server-side processes
    client_cpu_s_per_gib: float | None  # the ssh processes, for reference
    process_cpu_s: dict[str, list[float]]  # unit -> each process's CPU s, mean per run
    peak_rss_kib: dict[str, int]  # unit -> VmHWM summed over its processes
    connections: dict[str, int]  # unit -> connections it holds
    per_connection_kib: dict[str, float]  # unit holding connections -> peak cost of one
    background_cores: float | None
    runs_mbps: list[float]
    error: str | None = None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean_per_process(runs: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Each process's CPU seconds, mean over the runs; a unit whose processes
    changed between runs (one died) is left out rather than mixed up."""
    last = runs[-1] if runs else {}
    mean: dict[str, list[float]] = {}
    for label, pids in last.items():
        if all(len(run.get(label, ())) == len(pids) for run in runs):
            mean[label] = [round(statistics.mean(run[label][i] for run in runs), 2) for i in range(len(pids))]
    return mean


def memory(side: Side) -> tuple[dict[str, int], dict[str, int], dict[str, float]]:
    """Peak RSS, connections held and peak KiB per connection, per unit, now."""
    table = process_table()
    peak: dict[str, int] = {}
    held: dict[str, int] = {}
    each: dict[str, float] = {}
    for unit in units(side.server, table):
        peak[unit.label] = sum(status_kib(p, "status", "VmHWM:") for p in unit.pids)
        held[unit.label] = connections_held(unit, side.server.port)
        if held[unit.label]:
            grown = peak[unit.label] - sum(side.rss_before.get(p, 0) for p in unit.pids)
            each[unit.label] = round(grown / held[unit.label], 0)
    return peak, held, each


def result(side: Side, nbytes: int) -> Result:
    peak, held, each = memory(side)
    totals = [sum(map(sum, run.values())) for run in side.runs_cpu]
    gib = len(side.tunnels) * nbytes / GiB
    mean = _mean_per_process(side.runs_cpu)
    cpu = _median(totals)
    client = _median(side.runs_client_cpu)
    faults = _median(side.runs_faults)
    background = _median(side.runs_background)
    return Result(
        server=side.server.name,
        mbps=_median(side.runs_mbps),
        ratio=None,
        server_cpu_s=None if cpu is None else round(cpu, 2),
        server_cpu_s_per_gib=None if cpu is None else round(cpu / gib, 2),
        server_faults_per_gib=None if faults is None else round(faults / gib),
        client_cpu_s_per_gib=None if client is None else round(client / gib, 2),
        process_cpu_s=mean,
        peak_rss_kib=peak,
        connections=held,
        per_connection_kib=each,
        background_cores=background,
        runs_mbps=side.runs_mbps,
        error=side.error,
    )


def with_ratios(results: Sequence[Result]) -> list[Result]:
    base = next((r.mbps for r in results if r.server == "sshd"), None)
    return [
        Result(**{**asdict(r), "ratio": round(r.mbps / base, 2) if r.mbps and base else None})
        for r in results
    ]


# --- running ------------------------------------------------------------------------------


def start_side(the_lab: Lab, name: str, workers: int) -> Side:
    """Start the server and wait for it to settle; no client yet."""
    if name == "sshd":
        server = start_server(the_lab, name)
        return Side(server, [], {server.process.pid: status_kib(server.process.pid, "status", "VmRSS:")})
    server = start_server(the_lab, name, [f"Workers={workers}"])
    return Side(server, [], wait_started(server, workers))


def connect_clients(the_lab: Lab, side: Side, streams: int, sink: Sink, nbytes: int, timeout: float) -> None:
    """``streams`` clients, one after the other, each warmed up; every one
    started is in ``side.tunnels`` at once, for the caller to stop."""
    warmup = memoryview(bytes(CHUNK))
    for _ in range(streams):
        side.tunnels.append(start_tunnel(the_lab, "ssh", side.server, CIPHER, sink.port, b"", b"0\n"))
        transfer(side.tunnels[-1].local_port, warmup, min(nbytes, WARMUP_BYTES), timeout)


def run(
    the_lab: Lab,
    servers: Sequence[tuple[str, int]],
    nbytes: int,
    streams: int,
    runs: int,
    timeout: float,
    progress: Callable[[str], None],
) -> list[Result]:
    buffer = memoryview(os.urandom(CHUNK))
    sides: list[Side] = []
    try:
        with Sink(timeout) as sink:
            for name, workers in servers:
                sides.append(start_side(the_lab, name, workers))
                connect_clients(the_lab, sides[-1], streams, sink, nbytes, timeout)
            for run_no in range(runs):
                for side in sides:
                    if side.error is not None:
                        continue
                    try:
                        measure(side, buffer, nbytes, timeout)
                    except (RuntimeError, OSError) as exc:
                        side.error = f"run {run_no + 1}: {exc}"
                        progress(f"{side.server.name}: {side.error}")
                        continue
                    progress(
                        f"{side.server.name} run {run_no + 1}/{runs}: {side.runs_mbps[-1]:,.0f} MB/s, "
                        f"server CPU {sum(map(sum, side.runs_cpu[-1].values())):.2f} s, "
                        f"background {side.runs_background[-1]:.2f} cores"
                    )
            return with_ratios([result(side, nbytes) for side in sides])
    finally:
        for side in sides:
            for tunnel in side.tunnels:
                tunnel.stop()


# --- output -------------------------------------------------------------------------------


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _spread(values: dict[str, Any], fmt: str) -> str:
    return " · ".join(f"{label} {value:{fmt}}" for label, value in values.items())


def markdown(results: Sequence[Result]) -> str:
    lines = [
        "| server | MB/s | vs sshd | server CPU s | CPU s/GiB | faults/GiB | CPU s per process "
        "| peak RSS MiB (VmHWM) | peak KiB per connection (connections held) |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        cpu = {k: "+".join(f"{x:.2f}" for x in v) for k, v in r.process_cpu_s.items()}
        rss = {k: v / 1024 for k, v in r.peak_rss_kib.items()}
        each = " · ".join(f"{k} {v:,.0f} ({r.connections[k]})" for k, v in r.per_connection_kib.items())
        error = f" error: {r.error[:120]}" if r.error else ""
        lines.append(
            f"| {r.server} | {_cell(r.mbps, ',.0f')} | {_cell(r.ratio, '.2f')} "
            f"| {_cell(r.server_cpu_s, '.2f')} | {_cell(r.server_cpu_s_per_gib, '.2f')} "
            f"| {_cell(r.server_faults_per_gib, ',.0f')} | {_spread(cpu, 's')}{error} "
            f"| {_spread(rss, '.1f')} | {each} |"
        )
    return "\n".join(lines)


def _workers(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(not 1 <= v <= MAX_WORKERS for v in values):
        raise argparse.ArgumentTypeError(f"a comma-separated list of 1..{MAX_WORKERS}")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.workers", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--mib", type=int, default=512, help="MiB per stream per run (default 512)")
    p.add_argument("--streams", type=int, default=4, help="simultaneous connections per server (default 4)")
    p.add_argument("--workers", type=_workers, default=[2], help="hashiked's Workers, e.g. 1,2 (default 2)")
    p.add_argument("--runs", type=int, default=1, help="runs per server; the median is reported (default 1)")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="bound of one transfer, s (default 60 + MiB * streams / 2)",
    )
    output_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.mib <= 65536 or not 1 <= args.streams <= 64 or not 1 <= args.runs <= 100:
        print("--mib must be 1..65536, --streams 1..64, --runs 1..100", file=sys.stderr)
        return 2
    # The streams share the cores: each may take as long as one transfer of all their bytes.
    timeout = args.timeout if args.timeout is not None else 60 + args.mib * args.streams / 2

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    servers = [(f"hashiked Workers {n}", n) for n in args.workers] + [("sshd", 0)]
    started = time.monotonic()
    try:
        with lab(keep=args.keep) as the_lab:
            if the_lab.ssh is None or the_lab.sshd is None:
                print("bench.workers needs OpenSSH's ssh and sshd", file=sys.stderr)
                return 1
            env = environment(the_lab)
            results = run(the_lab, servers, args.mib * MiB, args.streams, args.runs, timeout, progress)
    except (RuntimeError, OSError) as exc:
        print(f"bench.workers: {exc}", file=sys.stderr)
        return 1
    env.update(wall_seconds=round(time.monotonic() - started, 1), mib=args.mib, streams=args.streams)
    if args.json:
        print(json.dumps({"env": env, "results": [asdict(r) for r in results]}, indent=2))
        return 0
    background = [r.background_cores for r in results if r.background_cores is not None]
    print(
        f"{env['openssh']}, hashike {env['hashike']}; {env['machine']} x{env['cpus']}; "
        f"{args.streams} x {args.mib} MiB at once per server, {CIPHER}, ssh -L to a sink on {HOST}, "
        f"median of {args.runs} run(s); wall {env['wall_seconds']} s; load average "
        f"{env['loadavg_before']} before; other processes' CPU {max(background, default=0):.2f} cores at most"
    )
    print()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
