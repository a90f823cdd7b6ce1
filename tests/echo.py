"""An echo server for forwarding tests: echoes every byte, and after the
client's EOF (its half-close) flushes the echo and half-closes its side."""

from __future__ import annotations

import asyncio


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
