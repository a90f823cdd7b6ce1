"""Fresh starts: is a server's first GiB as fast, and as cheap, as its steady state?

Run ``python -m bench.fresh_starts [--starts 10] [--mib 1024] [--client hashike]
[--server hashiked] [--cipher aes128-gcm@openssh.com]``.

Theory of operation. A page-fault storm shows only in a process that has not
yet grown its heap to the working set: glibc trims the top of the heap when
big transient objects are freed and faults the pages back in on the next
allocation. The steady-state benchmark (``bench.tunnel_throughput``) warms
every tunnel up first, so it cannot see that. Here each start is a new server
and a new client (``-L``, the same processes a user starts); the first
transfer after the tunnel answers is the *first* GiB, the next one is the
*steady* GiB. Each is reported with MB/s, server CPU s/GiB and server page
faults per GiB (``/proc/PID/stat``), and the first over the steady one as a
ratio. Every wait is bounded; the benchmark never asserts on its numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence

from bench.lab import CHUNK, MiB, lab, start_server
from bench.tunnel_throughput import Sample, Sink, sample, start_tunnel

__all__ = ["main"]


def _line(n: int, first: Sample, steady: Sample) -> str:
    assert first.server_cpu is not None and steady.server_cpu is not None
    return (
        f"| {n} | {first.mbps:,.0f} | {steady.mbps:,.0f} | {first.mbps / steady.mbps:.2f} "
        f"| {first.server_cpu:.2f} | {steady.server_cpu:.2f} | {first.server_cpu / steady.server_cpu:.2f} "
        f"| {first.server_faults:,.0f} | {steady.server_faults:,.0f} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.fresh_starts", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--starts", type=int, default=10)
    p.add_argument("--mib", type=int, default=1024, help="MiB per transfer (default 1024)")
    p.add_argument("--client", default="hashike")
    p.add_argument("--server", default="hashiked")
    p.add_argument("--cipher", default="aes128-gcm@openssh.com")
    args = p.parse_args(argv)
    nbytes = args.mib * MiB
    timeout = 60 + args.mib / 2
    buffer = memoryview(os.urandom(CHUNK))
    rows: list[tuple[Sample, Sample]] = []
    print(
        "| start | first MB/s | steady MB/s | ratio | first server CPU s/GiB | steady | ratio "
        "| first server faults/GiB | steady |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with lab() as the_lab, Sink(timeout) as sink:
        for n in range(1, args.starts + 1):
            server = start_server(the_lab, args.server)
            tunnel = start_tunnel(the_lab, args.client, server, args.cipher, sink.port, b"", b"0\n")
            try:
                pids = (tunnel.process.pid, server.process.pid)
                first = sample(tunnel.local_port, buffer, nbytes, timeout, *pids)
                steady = sample(tunnel.local_port, buffer, nbytes, timeout, *pids)
            finally:
                tunnel.stop()
                server.stop()
                del the_lab.servers[args.server]  # the next start is a new process
            rows.append((first, steady))
            print(_line(n, first, steady), flush=True)
    mbps = [f.mbps / s.mbps for f, s in rows]
    cpu = [f.server_cpu / s.server_cpu for f, s in rows if f.server_cpu and s.server_cpu]
    print(
        f"\nfirst/steady: MB/s median {statistics.median(mbps):.2f}, worst {min(mbps):.2f}; "
        f"server CPU median {statistics.median(cpu):.2f}, worst {max(cpu):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
