"""The client's ways to a server that is not straight away: jump hosts
(``-J``, ProxyJump) and stdio forwarding (``-W``), with ssh's messages.

ssh reaches ``-J a,b target`` by running ``ssh -J a -W target b``: the last
hop is reached through the ones before it, and each hop is a login of its
own, with its own Host block of the configuration file (``-F`` carries over,
``-o`` options do not) and its key checked against known_hosts under its own
name and port. hashike does the same in process: every hop is an SSHClient
whose ``direct-tcpip`` channel is the next one's transport
(``connect(tunnel=...)``). When the destination's connection ends, the hops
that carried it are closed too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable

from hashike.aio.client import SSHClient
from hashike.aio.forward import Target
from hashike.config.forward import ForwardSpecError, parse_port
from hashike.config.jump import parse_jump
from hashike.config.ssh_config import ClientSettings, ConfigError, parse_client_config
from hashike.proto.errors import ChannelOpenFailed, ConnectionClosed

from .terminal import write_all

__all__ = ["MAX_HOPS", "STDIO_OPTIONS", "connect_through", "parse_stdio_forward", "stdio_forward"]

log = logging.getLogger("hashike.client")

EXIT_FAILURE = 255
# A ProxyJump that names itself (``Host *`` with ``ProxyJump j``) would
# otherwise recurse for ever; ssh would start ssh after ssh.
MAX_HOPS = 32
CHUNK = 64 * 1024
# ssh(1) -W: "Implies -N, -T, ExitOnForwardFailure and ClearAllForwardings".
STDIO_OPTIONS = ("RequestTTY=no", "SessionType=none", "ExitOnForwardFailure=yes", "ClearAllForwardings=yes")

ConnectOne = Callable[[ClientSettings, SSHClient | None], Awaitable[tuple[SSHClient, ClientSettings]]]


def parse_stdio_forward(spec: str) -> Target:
    """``-W host:port`` (``[v6addr]:port`` too), as ssh reads it."""
    host, colon, port_text = spec.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = parse_port(port_text) if colon else None
    if not host or port is None:
        raise ForwardSpecError(f"Bad stdio forwarding specification '{spec}'")
    return Target(host, port)


async def connect_through(
    settings: ClientSettings, connect_one: ConnectOne, config_file: str | None, depth: int = 0
) -> tuple[SSHClient, ClientSettings]:
    """Log in to ``settings``' host through its ProxyJump hops, if any, each
    hop logged in by ``connect_one`` (which is given the client that carries
    it, or None for the first)."""
    hops = parse_jump(settings.proxy_jump) if settings.proxy_jump else ()
    if not hops:
        return await connect_one(settings, None)
    if depth >= MAX_HOPS:
        raise ConfigError(f"ProxyJump: more than {MAX_HOPS} hops to {settings.host} (a loop?)")
    last, before = hops[-1], ",".join(str(hop) for hop in hops[:-1])
    log.debug("Jump host %s for %s, through %s", last, settings.host, before or "no other")
    hop_settings = parse_client_config(
        last.host,
        config_file=config_file,
        options=[f"ProxyJump={before}"] if before else [],
        user=last.user,
        port=last.port,
    )
    carrier, _ = await connect_through(hop_settings, connect_one, config_file, depth + 1)
    try:
        client, settings = await connect_one(settings, carrier)
    except BaseException:
        carrier.close()
        await carrier.wait_closed()
        raise
    closing = asyncio.ensure_future(client.wait_closed())
    closing.add_done_callback(lambda _: carrier.close())  # the hop carried only this
    return client, settings


async def stdio_forward(client: SSHClient, target: Target) -> int:
    """``-W``: our stdin into a ``direct-tcpip`` channel to ``target``, the
    channel to our stdout, until the channel closes (exit 0, as ssh's
    "stdio forwarding: done"). A refused channel is ssh's
    ``stdio forwarding failed`` and 255."""
    assert target.host is not None and target.port is not None
    try:
        reader, writer = await client.open_connection(target.host, target.port)
    except ChannelOpenFailed:
        print("stdio forwarding failed", file=sys.stderr)  # the pump said why
        return EXIT_FAILURE
    except ConnectionClosed as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    loop = asyncio.get_running_loop()
    # Blocking reads in a thread, as the session does: stdin's flags stay as
    # they are, and the thread reads on only once the channel took a chunk.
    threading.Thread(target=_read_stdin, args=(loop, writer), name="hashike-stdin", daemon=True).start()
    while data := await reader.read(CHUNK):
        try:
            await asyncio.to_thread(write_all, 1, data)
        except OSError as exc:
            log.debug("write to stdout failed: %s", exc)
            break
    writer.close()
    log.debug("stdio forwarding: done")
    return 0


def _read_stdin(loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            data = os.read(0, CHUNK)
        except OSError:
            data = b""
        try:
            asyncio.run_coroutine_threadsafe(_to_channel(writer, data), loop).result()
        except Exception:  # the channel or the loop is gone
            return
        if not data:
            return


async def _to_channel(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not data:
        writer.write_eof()  # the channel's EOF (RFC 4254 §5.3)
        return
    writer.write(data)
    await writer.drain()
