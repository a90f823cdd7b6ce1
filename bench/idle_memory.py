"""What an idle, authenticated connection costs a server, hashiked next to sshd.

``python -m bench.idle_memory [--connections N]`` starts hashiked and sshd on
127.0.0.1 (bench/lab.py), logs N library clients in to each, one after the
other, and leaves them idle (no channel). It prints the server side's memory
before and with them open: the proportional set size (PSS, from
``/proc/PID/smaps_rollup``, summed over the server's process tree, so that
sshd's per-connection processes count and pages they share count once) and
the plain resident sets summed (which counts shared pages in each process).
The figure to compare is PSS per connection. Loopback only; every wait is
bounded by the client's own timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from bench.lab import HOST, Lab, Server, descendants, lab, process_table, start_server, status_kib
from hashike.aio.client import SSHClient, connect
from hashike.aio.client_auth import AuthSettings, file_identity
from hashike.proto.hostkey import PublicKey

KiB = 1024
SETTLE = 1.0  # seconds for the servers' per-connection work to finish


def tree_memory(pid: int) -> tuple[float, float, int]:
    """(PSS KiB, RSS KiB, processes) of ``pid`` and its descendants."""
    pids = [pid, *descendants(pid, process_table())]
    pss = sum(status_kib(p, "smaps_rollup", "Pss:") for p in pids)
    rss = sum(status_kib(p, "status", "VmRSS:") for p in pids)
    return pss, rss, len(pids)


async def _login(the_lab: Lab, server: Server, expected: PublicKey) -> SSHClient:
    identity = await file_identity(str(the_lab.client_key), None)
    auth = AuthSettings(username=the_lab.user, identities=[identity] if identity else [], host_label=HOST)
    return await connect(HOST, server.port, check_host_key=lambda key: key == expected, auth=auth)


async def measure(the_lab: Lab, name: str, count: int) -> None:
    server = start_server(the_lab, name)
    expected = PublicKey.from_openssh_line(the_lab.host_key_line)
    await asyncio.sleep(SETTLE)
    before = tree_memory(server.process.pid)
    clients = []
    started = time.monotonic()
    try:
        for _ in range(count):
            clients.append(await _login(the_lab, server, expected))
        elapsed = time.monotonic() - started
        await asyncio.sleep(SETTLE)
        during = tree_memory(server.process.pid)
    finally:
        for client in clients:
            client.close()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.wait_closed()
    pss = (during[0] - before[0]) / count
    rss = (during[1] - before[1]) / count
    print(
        f"{name:9} {count} idle connections (logged in over {elapsed:.1f} s): "
        f"PSS {before[0] / KiB:.1f} -> {during[0] / KiB:.1f} MiB, {pss:.0f} KiB each; "
        f"RSS summed {rss:.0f} KiB each; processes {before[2]} -> {during[2]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--servers", default="hashiked,sshd", help="comma-separated: hashiked, sshd")
    args = parser.parse_args()
    with lab() as the_lab:
        for name in args.servers.split(","):
            asyncio.run(measure(the_lab, name, args.connections))


if __name__ == "__main__":
    main()
