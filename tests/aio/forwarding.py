"""A hashiked in-process with one authorized client key, and a hashike
client logged in to it: the two ends of the forwarding tests."""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from hashike.aio.client import SSHClient, connect
from hashike.aio.client_auth import AuthSettings, Identity
from hashike.aio.keepalive import KeepaliveOptions
from hashike.aio.server import Server, ServerOptions, listen
from hashike.keys.keypair import generate_private_key
from hashike.proto.hostkey import PrivateKey
from tests.proto.pair import host_key

CLIENT_KEY = generate_private_key()


@asynccontextmanager
async def hashike_pair(
    tmp_path: Path,
    options: ServerOptions | None = None,
    key_options: str = "",
    keepalive: KeepaliveOptions | None = None,
) -> AsyncIterator[tuple[Server, SSHClient]]:
    """hashiked on 127.0.0.1 (a free port) and a hashike client logged in."""
    keys = tmp_path / "authorized_keys"
    keys.write_text(f"{key_options + ' ' if key_options else ''}{CLIENT_KEY.public_key.openssh_line()}\n")
    user = getpass.getuser()
    opts = replace(options or ServerOptions(), authorized_keys_files=(str(keys),), allow_users=(user,))
    server_key = host_key()
    async with await listen("127.0.0.1", 0, host_keys=[server_key], options=opts) as server:
        auth = AuthSettings(username=user, identities=[Identity(CLIENT_KEY.public_key, "test", _loader)])
        client = await connect(
            "127.0.0.1",
            server.port,
            check_host_key=lambda k: k == server_key.public_key,
            auth=auth,
            keepalive=keepalive,
        )
        async with client:
            yield server, client


async def _loader() -> PrivateKey:
    return CLIENT_KEY
