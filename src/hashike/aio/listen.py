"""Binding listening sockets, for hashiked and for ``-L`` alike."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable, Collection, Sequence

__all__ = ["LISTEN_BACKLOG", "BindError", "bind_all"]

# A burst of 1000 simultaneous connections must not overflow the accept
# queue (sshtunnel's backlog of 5 fails 25-100% of a 200-connection burst).
LISTEN_BACKLOG = 1024

_NO_SUCH_FAMILY = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


class BindError(OSError):
    """A listening address could not be bound; the message is sshd's line."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        # asyncio rewords the OS error; sshd prints the C library's text.
        reason = os.strerror(error.errno) if error.errno else str(error)
        super().__init__(error.errno, f"Bind to port {port} on {host} failed: {reason}.")
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


async def bind_all(
    factory: Callable[[], asyncio.BaseProtocol],
    endpoints: Sequence[tuple[str | None, int]],
    *,
    optional: Collection[str] = (),
) -> list[asyncio.Server]:
    """Listen on every (host, port) in order (host None: every address).
    Port 0 picks one free port, then used for all the others. A host in
    ``optional`` that this machine lacks (``::1`` without IPv6) is skipped.

    Raises BindError naming the address that failed; nothing stays bound."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    chosen = 0
    try:
        for host, port in endpoints:
            try:
                server = await loop.create_server(
                    factory, host, port or chosen, backlog=LISTEN_BACKLOG, reuse_address=True
                )
            except OSError as exc:
                if host in optional and exc.errno in _NO_SUCH_FAMILY:
                    continue
                raise BindError(host or "0.0.0.0", port or chosen, exc) from exc
            servers.append(server)
            chosen = chosen or server.sockets[0].getsockname()[1]
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers
