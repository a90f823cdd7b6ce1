"""-L through a real OpenSSH sshd with hashike's client: the guide's POP3
scenario, a refused target, and large transfers with half-close."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.aio.client import SSHClient, connect
from hashike.aio.client_auth import AuthSettings, file_identity
from hashike.cli.pop3 import GREETING, MESSAGES, start_pop3
from hashike.proto.errors import ChannelOpenFailed
from hashike.proto.hostkey import PublicKey

if TYPE_CHECKING:
    from tests.interop.conftest import SshdServer, StartSshd


async def login(sshd: SshdServer) -> SSHClient:
    expected = PublicKey.from_openssh_line(Path(f"{sshd.host_keys['ed25519']}.pub").read_text())
    identity = await file_identity(str(sshd.client_key), None)
    assert identity is not None
    auth = AuthSettings(username=sshd.user, identities=[identity], host_label=sshd.host)
    return await connect(sshd.host, sshd.port, check_host_key=lambda k: k == expected, auth=auth)


async def pop3_dialogue(port: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [await reader.readline()]
    for command in (b"USER a70099a", b"PASS secret", b"LIST"):
        writer.write(command + b"\r\n")
        lines.append(await reader.readline())
    while (line := await reader.readline()) != b".\r\n":
        lines.append(line)
    writer.write(b"RETR 1\r\n")
    lines.append(await reader.readline())
    body = await reader.readuntil(b"\r\n.\r\n")
    writer.write(b"QUIT\r\n")
    lines.append(await reader.readline())
    writer.close()
    return [*lines, body]


async def test_guide_pop3_scenario(start_sshd: StartSshd) -> None:
    sshd = start_sshd()
    pop3 = await start_pop3()
    async with await login(sshd) as client:
        listener = await client.forward_local(None, 0, "127.0.0.1", pop3.port)
        lines = await asyncio.wait_for(pop3_dialogue(listener.port), 20)
    pop3.close()
    assert lines[0] == GREETING + b"\r\n"
    assert lines[1].startswith(b"+OK") and lines[2].startswith(b"+OK maildrop")
    assert lines[3] == b"+OK 2 messages\r\n"
    assert lines[-1] == MESSAGES[0] + b".\r\n"
    assert lines[-2] == b"+OK bye\r\n"


async def test_refused_target_fails_the_channel_not_the_session(start_sshd: StartSshd) -> None:
    sshd = start_sshd()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    closed_port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with await login(sshd) as client:
        with pytest.raises(ChannelOpenFailed) as info:
            await client.open_connection("127.0.0.1", closed_port)
        assert info.value.reason == 2  # CONNECT_FAILED
        assert "Connection refused" in str(info.value)
        # The session survives: another channel works.
        pop3 = await start_pop3()
        reader, writer = await client.open_connection("127.0.0.1", pop3.port)
        assert await reader.readline() == GREETING + b"\r\n"
        writer.close()
        pop3.close()


async def sink_server() -> tuple[asyncio.Server, asyncio.Future[tuple[str, int]]]:
    """Reads to EOF, replies with the digest and byte count, then closes."""
    done: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        total = 0
        while chunk := await reader.read(1 << 20):
            digest.update(chunk)
            total += len(chunk)
        writer.write(f"{digest.hexdigest()} {total}\n".encode())
        await writer.drain()
        writer.close()
        if not done.done():
            done.set_result((digest.hexdigest(), total))

    return await asyncio.start_server(handle, "127.0.0.1", 0), done


SIZE = int(os.environ.get("HASHIKE_INTEGRITY_MIB", "64")) * 1024 * 1024


async def test_bulk_upload_with_half_close(start_sshd: StartSshd) -> None:
    sshd = start_sshd()
    server, done = await sink_server()
    port = server.sockets[0].getsockname()[1]
    async with await login(sshd) as client:
        reader, writer = await client.open_connection("127.0.0.1", port)
        digest = hashlib.sha256()
        block = os.urandom(1 << 20)
        for i in range(SIZE >> 20):
            chunk = block[i % 7 :] + block[: i % 7]
            digest.update(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()  # half-close: the reply must still come back
        reply = await asyncio.wait_for(reader.readline(), 120)
        assert reply.decode().split() == [digest.hexdigest(), str(SIZE)]
        writer.close()
    server.close()
    assert (await done)[1] == SIZE


async def echo_digest_server() -> tuple[asyncio.Server, asyncio.Future[tuple[str, int]]]:
    """Echoes every byte while hashing it; after the client's EOF (its
    half-close), sends one more line, ``<sha256> <count>``, then its own EOF."""
    done: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        total = 0
        try:
            while chunk := await reader.read(1 << 20):
                digest.update(chunk)
                total += len(chunk)
                writer.write(chunk)
                await writer.drain()
            if not done.done():
                done.set_result((digest.hexdigest(), total))
            writer.write(f"{digest.hexdigest()} {total}\n".encode())
            await writer.drain()
            writer.write_eof()
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), done


ECHO_SIZE = int(os.environ.get("HASHIKE_INTEGRITY_MIB", "256")) * 1024 * 1024


async def test_bulk_echo_both_directions_with_half_close(start_sshd: StartSshd) -> None:
    """ECHO_SIZE bytes up through sshd and the same bytes back down at the same
    time; after our half-close the far side's verdict still arrives, then its EOF."""
    sshd = start_sshd()
    server, done = await echo_digest_server()
    port = server.sockets[0].getsockname()[1]
    started = time.monotonic()
    async with await login(sshd) as client:
        reader, writer = await client.open_connection("127.0.0.1", port)
        sent = hashlib.sha256()
        echo = hashlib.sha256()

        async def read_echo() -> bytes:
            remaining = ECHO_SIZE
            while remaining:  # bounded: ends at ECHO_SIZE bytes or EOF
                chunk = await reader.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                echo.update(chunk)
                remaining -= len(chunk)
            assert remaining == 0, f"the echo ended {remaining} bytes short"
            return await reader.read()  # the verdict line, then EOF

        reading = asyncio.ensure_future(read_echo())
        block = os.urandom(1 << 20)
        for i in range(ECHO_SIZE >> 20):
            chunk = i.to_bytes(8, "big") + block[8:]
            sent.update(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()  # half-close: the echo's tail and the verdict must still come back
        trailer = await asyncio.wait_for(reading, 120)
        writer.close()
    server.close()
    seconds = time.monotonic() - started
    assert await done == (sent.hexdigest(), ECHO_SIZE)  # upload intact on the far side
    assert echo.hexdigest() == sent.hexdigest()  # download intact here
    assert trailer == f"{sent.hexdigest()} {ECHO_SIZE}\n".encode()
    print(f"\n{ECHO_SIZE >> 20} MiB each way through hashike and sshd in {seconds:.1f} s")
