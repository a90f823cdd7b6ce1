"""An echo server for forwarding tests: echoes every byte, and after the
client's EOF (its half-close) flushes the echo and half-closes its side."""

from __future__ import annotations

import asyncio
import hashlib
import os


async def start_echo_server(backlog: int = 1024) -> asyncio.Server:
    """Listen on 127.0.0.1 and a free port; ``backlog`` for bursts."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(1 << 18):
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, backlog=backlog)


# What the integrity tests push each way (HASHIKE_INTEGRITY_MIB to change it).
INTEGRITY_SIZE = int(os.environ.get("HASHIKE_INTEGRITY_MIB", "256")) << 20


async def round_trip(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    size: int = INTEGRITY_SIZE,
    timeout: float = 300.0,
) -> tuple[int, str, str]:
    """Write ``size`` bytes in 1 MiB blocks (each rotated, so no two are
    alike), half-close, and read until EOF while writing: (bytes read back,
    SHA-256 of what came back, SHA-256 of what was sent). The wait for the
    echo is bounded by ``timeout`` and fails on it."""
    sent, got = hashlib.sha256(), hashlib.sha256()
    received = 0

    async def read_all() -> None:
        nonlocal received
        while chunk := await reader.read(1 << 20):
            got.update(chunk)
            received += len(chunk)

    reading = asyncio.ensure_future(read_all())
    block = os.urandom(1 << 20)
    for i in range(size >> 20):
        chunk = block[i:] + block[:i]
        sent.update(chunk)
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()  # half-close: the echo must still come back whole
    await asyncio.wait_for(reading, timeout)
    return received, got.hexdigest(), sent.hexdigest()
