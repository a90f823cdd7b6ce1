"""hashike: an SSH-2 client and server for port forwarding.

The library API is asyncio-based::

    server = await hashike.listen("127.0.0.1", 0, host_keys=[key])
    client = await hashike.connect("127.0.0.1", server.port, check_host_key=...)

Names are imported on first use, so that the ``hashike`` command does not pay
for loading the server (its start-up time is measured in bench/).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hashike.aio.client import SSHClient, connect
    from hashike.aio.server import Server, ServerOptions, listen
    from hashike.aio.supervisor import ReconnectPolicy, Supervisor

__all__ = [
    "ReconnectPolicy",
    "SSHClient",
    "Server",
    "ServerOptions",
    "Supervisor",
    "__version__",
    "connect",
    "listen",
]

__version__ = "0.1.0"

_LAZY = {
    "SSHClient": "hashike.aio.client",
    "connect": "hashike.aio.client",
    "Server": "hashike.aio.server",
    "ServerOptions": "hashike.aio.server",
    "listen": "hashike.aio.server",
    "ReconnectPolicy": "hashike.aio.supervisor",
    "Supervisor": "hashike.aio.supervisor",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hashike' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
