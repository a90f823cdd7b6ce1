"""A long fat network: one download through a tunnel across 50 ms of RTT.

``python -m bench.lfn [--mib N] [--delay-ms D]`` puts a delay line in front
of hashiked and of a private sshd (bench/lab.py), all on 127.0.0.1: a relay
process that holds every byte, each way, for D ms before passing it on, so
a round trip through it takes 2·D plus the loopback's own. (The issue
suggested ``tc qdisc netem`` in network namespaces; this machine's kernel has
no netem, and the relay shows the same limit.) A client (``hashike -L`` or
``ssh -L``) logs in through the relay and a reader times the download of N
MiB from a local source through the tunnel.

An SSH channel carries at most one receive window per round trip, so the
window the client grants is what limits a download: ssh grants 2 MiB (about
40 MB/s at 50 ms); hashike starts at 2 MiB and grows the window while the
sender stalls on it (proto/window.py). ``--rows`` picks the pairs. The relay's
plain TCP figure (no SSH) comes first, for what the delay line itself
carries; each line then gives MB/s and the client's and the server's peak
resident set (VmHWM, summed over the server's process tree). Bounded: every
download has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time

from bench.lab import (
    HOST,
    Lab,
    MiB,
    descendants,
    free_port,
    lab,
    process_table,
    read_line,
    start_server,
    stop_process,
)

DEADLINE = 600.0  # one download, at the slowest
CHUNK = 1 << 20


# --- the delay line (its own process: ``python -m bench.lfn --relay``) -------------------


async def _delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it came."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.ensure_future(send())
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            queue.put_nowait((loop.time() + delay, data))
    queue.put_nowait((loop.time() + delay, b""))
    with contextlib.suppress(OSError):
        await sender


async def _relay(target: int, delay: float) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, target)
        await asyncio.gather(_delayed(reader, up_writer, delay), _delayed(up_reader, writer, delay))
        writer.close()
        up_writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def start_relay(target: int, delay_ms: int) -> tuple[subprocess.Popen[bytes], int]:
    argv = [sys.executable, "-m", "bench.lfn", "--relay", str(target), "--delay-ms", str(delay_ms)]
    relay = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    return relay, int(read_line(relay.stdout, 20))


# --- the download ----------------------------------------------------------------------


def start_source(total: int) -> int:
    """A thread serving ``total`` bytes to every connection; its port."""
    listener = socket.create_server((HOST, 0))
    block = memoryview(bytes(CHUNK))

    def send(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            left = total
            while left > 0:
                left -= conn.send(block[: min(left, CHUNK)])

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=send, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


def download(port: int) -> tuple[int, float]:
    """Read to EOF from ``port`` (retried while a tunnel comes up): bytes, seconds."""
    deadline = time.monotonic() + 30
    while True:  # bounded by the deadline
        try:
            sock = socket.create_connection((HOST, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with sock:
        sock.settimeout(DEADLINE)
        buf = bytearray(CHUNK)
        got, start = 0, time.monotonic()
        while n := sock.recv_into(buf):
            got += n
        return got, time.monotonic() - start


def peak_kib(pid: int) -> int:
    """VmHWM of ``pid`` and its descendants, KiB."""
    total = 0
    for p in [pid, *descendants(pid, process_table())]:
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            total += next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    return total


def client_argv(the_lab: Lab, program: str, port: int, local: int, source: int) -> list[str]:
    head = [sys.executable, "-m", "hashike.cli.client", "-F", "none"]
    if program == "ssh":
        head = [str(the_lab.ssh), "-F", "/dev/null"]
    return [
        *head, "-N", "-i", str(the_lab.client_key),
        "-o", f"UserKnownHostsFile={the_lab.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "Ciphers=aes128-gcm@openssh.com",
        "-o", "ExitOnForwardFailure=yes",
        "-L", f"{HOST}:{local}:{HOST}:{source}", "-p", str(port), f"{the_lab.user}@{HOST}",
    ]  # fmt: skip


def measure(the_lab: Lab, args: argparse.Namespace) -> None:
    source = start_source(args.mib * MiB)
    relays: list[subprocess.Popen[bytes]] = []
    try:
        relay, port = start_relay(source, args.delay_ms)
        relays.append(relay)
        got, seconds = download(port)
        print(
            f"{'plain TCP, relayed':24} {got / seconds / 1e6:8.1f} MB/s"
            f"  ({got // MiB} MiB, RTT {2 * args.delay_ms} ms)"
        )
        for program, name in args.rows:
            server = start_server(the_lab, name)
            relay, port = start_relay(server.port, args.delay_ms)
            relays.append(relay)
            the_lab.add_known_host(port)
            local = free_port()
            client = subprocess.Popen(
                client_argv(the_lab, program, port, local, source),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=the_lab.env,
            )  # fmt: skip
            try:
                got, seconds = download(local)
                print(
                    f"{program + ' -L -> ' + name:24} {got / seconds / 1e6:8.1f} MB/s"
                    f"  client peak {peak_kib(client.pid) / 1024:.0f} MiB,"
                    f" server peak {peak_kib(server.process.pid) / 1024:.0f} MiB"
                )
            finally:
                stop_process(client)
    finally:
        for relay in relays:
            stop_process(relay)


ROWS = "hashike:hashiked,hashike:sshd,ssh:sshd"


def _rows(text: str) -> list[tuple[str, str]]:
    rows = [tuple(row.split(":", 1)) for row in text.split(",")]
    for row in rows:
        if row not in {("hashike", "hashiked"), ("hashike", "sshd"), ("ssh", "sshd"), ("ssh", "hashiked")}:
            raise argparse.ArgumentTypeError(f"unknown row {':'.join(row)!r}")
    return [(program, server) for program, server in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--delay-ms", type=int, default=25, help="the relay's delay each way (RTT is twice)")
    parser.add_argument(
        "--rows",
        type=_rows,
        default=ROWS,
        help="client:server pairs to measure, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--relay", type=int, metavar="PORT", help=argparse.SUPPRESS
    )  # the delay line's process
    args = parser.parse_args()
    if args.relay is not None:
        asyncio.run(_relay(args.relay, args.delay_ms / 1000))
        return
    with lab() as the_lab:
        measure(the_lab, args)


if __name__ == "__main__":
    main()
