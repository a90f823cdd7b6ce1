"""hashike: an SSH-2 client and server for port forwarding.

The library API is asyncio-based::

    server = await hashike.listen("127.0.0.1", 0, host_keys=[key])
    client = await hashike.connect("127.0.0.1", server.port, check_host_key=...)
"""

from hashike.aio.client import SSHClient, connect
from hashike.aio.server import Server, ServerOptions, listen

__all__ = ["SSHClient", "Server", "ServerOptions", "__version__", "connect", "listen"]

__version__ = "0.1.0"
