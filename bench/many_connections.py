"""1000 simultaneous connections through one -L, -R and -D: hashike and OpenSSH side by side.

Run ``python -m bench.many_connections [--modes L,R,D] [--connections 1000] [--size 64K]
[--runs 3] [--deadline 1800] [--json]``.

Theory of operation. The lab is :mod:`bench.connection_setup`'s: hashiked
and a private sshd on 127.0.0.1, clients started as a user would start them
(``hashike -N`` / ``ssh -N``), and an asyncio echo server (backlog 1024) in a
process of its own as the target of every tunnel. Per mode, one tunnel per
pairing is started and made usable first; then each run bursts through every
tunnel in turn, so a noisy neighbour hurts them alike:

* ``-L``: the burst connects to the client's listener; the server connects
  to the echo server.
* ``-R``: the burst connects to the listener the client asked the *server*
  for; the client connects to the echo server.
* ``-D``: the burst connects to the client's SOCKS listener and each
  connection first makes its own SOCKS5 CONNECT (RFC 1928, no
  authentication) to the echo server; its latency includes that handshake.

A burst is :func:`bench.connection_setup.burst`: ``--connections`` opened at
once from this process, each sending ``--size`` bytes, half-closing and
reading the same bytes back before EOF; the same bursts straight to the echo
server come first, as the floor. Reported per mode and pairing: the
median over ``--runs`` of the burst's wall time and its p50 and p99
per-connection latency, all failures by kind (refused, reset, timed out,
wrong data; a failed connection has no latency), and each median's ratio to
ssh → sshd's in the same mode and run. OpenSSH listens with a backlog of 128
(``ssh`` for -L/-D, ``sshd`` for -R), so part of its bursts is reset: its
percentiles cover the connections that got through.

Every wait is bounded: tunnel start-up by a fixed deadline, each connection
by ``--timeout``, the whole run by ``--deadline`` (bursts past it are not
run and say so). This is a benchmark: never assert on its numbers in tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from bench.connection_setup import (
    PAIRINGS,
    PROBE,
    BurstResult,
    burst,
    cell,
    echo_server,
    pairing_name,
    parse_size,
    raise_fd_limit,
)
from bench.lab import Lab, lab, loadavg, output_options, start_server, tail
from bench.tunnel_throughput import (
    BASELINE,
    MODES,
    Tunnel,
    client_available,
    environment,
    server_available,
    start_tunnel,
)

__all__ = ["Summary", "main", "markdown", "run", "summarise"]

DEFAULT_CIPHER = "aes128-gcm@openssh.com"
DIRECT = "direct (no tunnel)"  # the same bursts straight to the echo server: the floor
PAST_DEADLINE = "not run: past --deadline"


@dataclass(frozen=True, slots=True)
class Summary:
    """One mode and pairing over every run; ratios are to ssh → sshd's medians."""

    mode: str
    pairing: str
    runs: int
    seconds: float | None  # medians over the runs that happened
    p50_ms: float | None
    p99_ms: float | None
    failures: int  # over all runs
    failure_kinds: dict[str, int]
    client_cpu: float | None
    server_cpu: float | None
    ratio_seconds: float | None = None
    ratio_p50: float | None = None
    ratio_p99: float | None = None
    error: str | None = None


def _failed(label: str, connections: int, size: int, run_no: int, error: str) -> BurstResult:
    return BurstResult(label, run_no, connections, size, None, 0, {}, None, None, None, error=error)


def _bursts(
    tunnels: dict[str, Tunnel],
    connections: int,
    size: int,
    timeout: float,
    runs: int,
    deadline: float,
    progress: Callable[[str], None],
) -> dict[str, list[BurstResult]]:
    """``runs`` rounds; in each, one burst through every tunnel in turn."""
    results: dict[str, list[BurstResult]] = {label: [] for label in tunnels}
    for run_no in range(1, runs + 1):
        for label, tunnel in tunnels.items():
            left = deadline - time.monotonic()
            if left <= 0:
                results[label].append(_failed(label, connections, size, run_no, PAST_DEADLINE))
                continue
            result = burst(
                label,
                tunnel.local_port,
                connections,
                size,
                min(timeout, left),
                run_no,
                tunnel.process.pid,
                tunnel.server.process.pid,
                tunnel.socks_to,
            )
            if tunnel.process.poll() is not None:
                error = f"client exited {tunnel.process.returncode}: {tail(tunnel.log, 300)}"
                result = BurstResult(**{**asdict(result), "error": error})
            results[label].append(result)
            progress(f"-{tunnel.mode} {result}")
    return results


def run_mode(
    the_lab: Lab,
    mode: str,
    pairings: Sequence[tuple[str, str]],
    cipher: str,
    echo_port: int,
    connections: int,
    size: int,
    timeout: float,
    runs: int,
    deadline: float,
    progress: Callable[[str], None],
) -> dict[str, list[BurstResult]]:
    """Every pairing's tunnel in ``mode`` started, then ``runs`` rounds of bursts."""
    if time.monotonic() >= deadline:
        return {
            pairing_name(p): [_failed(pairing_name(p), connections, size, 1, PAST_DEADLINE)] for p in pairings
        }
    tunnels: dict[str, Tunnel] = {}
    failed: dict[str, list[BurstResult]] = {}
    try:
        for pairing in pairings:
            label = pairing_name(pairing)
            try:
                server = start_server(the_lab, pairing[1])
                tunnels[label] = start_tunnel(
                    the_lab, pairing[0], server, cipher, echo_port, PROBE, PROBE, mode=mode
                )
            except (RuntimeError, OSError) as exc:
                failed[label] = [_failed(label, connections, size, 1, str(exc))]
        results = _bursts(tunnels, connections, size, timeout, runs, deadline, progress)
    finally:
        for tunnel in tunnels.values():
            tunnel.stop()
    return {pairing_name(p): failed.get(pairing_name(p)) or results[pairing_name(p)] for p in pairings}


def _median(values: Sequence[float | None], digits: int) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), digits) if present else None


def _ratio(value: float | None, reference: float | None) -> float | None:
    return round(value / reference, 2) if value is not None and reference else None


def summarise(mode: str, results: dict[str, list[BurstResult]]) -> list[Summary]:
    """Medians per pairing, and their ratios to the baseline's in this mode."""
    summaries = []
    for label, bursts in results.items():
        kinds: Counter[str] = Counter()
        for b in bursts:
            kinds.update(b.failure_kinds)
        done = [b for b in bursts if b.seconds is not None]
        summaries.append(
            Summary(
                mode=mode,
                pairing=label,
                runs=len(done),
                seconds=_median([b.seconds for b in done], 3),
                p50_ms=_median([b.p50_ms for b in done], 1),
                p99_ms=_median([b.p99_ms for b in done], 1),
                failures=sum(b.failures for b in done),
                failure_kinds=dict(kinds),
                client_cpu=_median([b.client_cpu for b in done], 2),
                server_cpu=_median([b.server_cpu for b in done], 2),
                error=next((b.error for b in bursts if b.error), None),
            )
        )
    base = next((s for s in summaries if s.pairing == pairing_name(BASELINE)), None)
    if base is None:
        return summaries
    return [
        Summary(
            **{
                **asdict(s),
                "ratio_seconds": _ratio(s.seconds, base.seconds),
                "ratio_p50": _ratio(s.p50_ms, base.p50_ms),
                "ratio_p99": _ratio(s.p99_ms, base.p99_ms),
            }
        )
        for s in summaries
    ]


def run(
    the_lab: Lab,
    modes: Sequence[str],
    pairings: Sequence[tuple[str, str]],
    cipher: str,
    connections: int,
    size: int,
    timeout: float,
    runs: int,
    deadline: float,
    progress: Callable[[str], None],
) -> tuple[list[Summary], list[BurstResult]]:
    summaries: list[Summary] = []
    bursts: list[BurstResult] = []
    with echo_server(the_lab.env) as echo_port:
        floor = [burst(DIRECT, echo_port, connections, size, timeout, n) for n in range(1, runs + 1)]
        summaries += summarise("none", {DIRECT: floor})
        bursts += floor
        for mode in modes:
            results = run_mode(
                the_lab,
                mode,
                pairings,
                cipher,
                echo_port,
                connections,
                size,
                timeout,
                runs,
                deadline,
                progress,
            )
            summaries += summarise(mode, results)
            bursts += [b for per_pairing in results.values() for b in per_pairing]
    return summaries, bursts


def markdown(summaries: Sequence[Summary]) -> str:
    base = pairing_name(BASELINE)
    lines = [
        f"| mode | client → server | total s | p50 ms | p99 ms | failures | total, p50, p99 ÷ {base} "
        "| client CPU s | server CPU s |",
        "|---|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for s in summaries:
        failures = str(s.failures)
        if s.failure_kinds:
            failures += " (" + ", ".join(f"{k} {n}" for k, n in sorted(s.failure_kinds.items())) + ")"
        if s.error:
            failures += f"; error: {s.error[:120]}"
        ratios = " / ".join(cell(r, ".2f") for r in (s.ratio_seconds, s.ratio_p50, s.ratio_p99))
        mode = "—" if s.pairing == DIRECT else f"-{s.mode}"
        lines.append(
            f"| {mode} | {s.pairing} | {cell(s.seconds, '.2f')} | {cell(s.p50_ms, '.0f')} "
            f"| {cell(s.p99_ms, '.0f')} | {failures} | {ratios} "
            f"| {cell(s.client_cpu, '.2f')} | {cell(s.server_cpu, '.2f')} |"
        )
    return "\n".join(lines)


def _modes(text: str) -> list[str]:
    modes = [m.strip().lstrip("-").upper() for m in text.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise argparse.ArgumentTypeError(f"modes are a comma-separated subset of {','.join(MODES)}")
    return modes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.many_connections", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--modes", type=_modes, default=list(MODES), help="default L,R,D")
    p.add_argument("--runs", type=int, default=3, help="bursts per pairing and mode (default 3)")
    p.add_argument("--connections", type=int, default=1000, help="connections in a burst (default 1000)")
    p.add_argument("--size", type=parse_size, default=64 * 1024, help="bytes each connection echoes (64K)")
    p.add_argument("--cipher", default=DEFAULT_CIPHER, help=f"forced on every client ({DEFAULT_CIPHER})")
    p.add_argument("--timeout", type=float, default=60.0, help="bound of one connection, s (default 60)")
    p.add_argument("--deadline", type=float, default=1800.0, help="bound of the whole run, s (default 1800)")
    output_options(p, "a Markdown table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.runs < 1 or not 1 <= args.connections <= 10_000 or args.timeout <= 0 or args.deadline <= 0:
        print(
            "--runs must be positive, --connections 1..10000, --timeout and --deadline positive",
            file=sys.stderr,
        )
        return 2
    raise_fd_limit(args.connections)

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    deadline = started + args.deadline
    with lab(keep=args.keep) as the_lab:
        pairings = [
            p for p in PAIRINGS if client_available(the_lab, p[0]) and server_available(the_lab, p[1])
        ]
        env = environment(the_lab)
        summaries, bursts = run(
            the_lab,
            args.modes,
            pairings,
            args.cipher,
            args.connections,
            args.size,
            args.timeout,
            args.runs,
            deadline,
            progress,
        )
    env.update(
        loadavg_after=loadavg(),
        wall_seconds=round(time.monotonic() - started, 1),
        cipher=args.cipher,
        connections=args.connections,
        size=args.size,
        runs=args.runs,
    )
    if args.json:
        report = {"env": env, "summary": [asdict(s) for s in summaries], "burst": [asdict(b) for b in bursts]}
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"Python {env['python']}, cryptography {env['cryptography']}, {env['openssh']}, "
        f"hashike {env['hashike']}; {env['machine']} x{env['cpus']}"
    )
    print(
        f"cipher {args.cipher}; {args.connections} connections x {args.size} bytes echoed, at once, "
        f"through one tunnel; medians of {args.runs} bursts; wall time {env['wall_seconds']} s; "
        f"load average {env['loadavg_before']} before, {env['loadavg_after']} after"
    )
    print()
    print(markdown(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
