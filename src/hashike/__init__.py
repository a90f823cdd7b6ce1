"""hashike: an SSH-2 client and server for port forwarding."""

__version__ = "0.1.0"
