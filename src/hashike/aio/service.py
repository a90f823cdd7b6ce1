"""Running as a service: systemd's notification protocol and socket activation.

Both are small documented protocols, spoken here without libsystemd:

- **Notification** (sd_notify(3), ``Type=notify``): when ``NOTIFY_SOCKET``
  names an AF_UNIX datagram socket (a path, or ``@name`` in the abstract
  namespace), each state change is one datagram of ``KEY=value`` lines:
  ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``. Without the
  variable every call is a no-op, so callers need no "are we a service?"
  test. ``WATCHDOG_USEC`` (for us, unless ``WATCHDOG_PID`` names another
  process) is how often the manager wants ``WATCHDOG=1``.
- **Socket activation** (sd_listen_fds(3)): ``LISTEN_FDS`` sockets from fd 3
  on, meant for us when ``LISTEN_PID`` is our pid.

The variables are removed from the environment once read, as
``sd_listen_fds(1)`` and ``sd_notify(1, ...)`` do, so that the shells a
server starts neither inherit our sockets' numbers nor speak for us.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

__all__ = ["LISTEN_FDS_START", "Notifier", "ServiceError", "listen_sockets"]

log = logging.getLogger("hashike")

LISTEN_FDS_START = 3  # sd_listen_fds(3): SD_LISTEN_FDS_START


class ServiceError(Exception):
    """What the service manager handed us is unusable; the message is one line."""


class Notifier:
    """Sends sd_notify(3) datagrams to ``address`` (None: nowhere)."""

    def __init__(self, address: str | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog  # seconds between the WATCHDOG=1 the manager expects
        self._socket: socket.socket | None = None

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        """The notifier ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` ask for
        (removed from ``environ`` once read)."""
        address = environ.pop("NOTIFY_SOCKET", None)
        usec, pid = environ.pop("WATCHDOG_USEC", ""), environ.pop("WATCHDOG_PID", "")
        watchdog = None
        if usec.isdigit() and int(usec) > 0 and pid in ("", str(os.getpid())):
            watchdog = int(usec) / 1e6
        return cls(address or None, watchdog)

    @property
    def active(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def alive(self) -> None:
        """The watchdog keep-alive (only when the manager asked for one)."""
        if self.watchdog is not None:
            self.send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.send(f"STOPPING=1\nSTATUS={status}")

    def send(self, text: str) -> None:
        """One datagram; a manager that cannot take it loses it (a service
        never stalls on its notifications)."""
        if self.address is None:
            return
        # sd_notify(3): "@" stands for the abstract namespace's leading NUL.
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(text.encode("utf-8", "replace"), target)
        except OSError as exc:
            log.debug("sd_notify %s: %s", self.address, exc)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def listen_sockets(environ: MutableMapping[str, str] = os.environ) -> list[socket.socket]:
    """The listening TCP sockets handed to us (``LISTEN_FDS``, ``LISTEN_PID``),
    none if there are none for this process. Raises ServiceError for a
    descriptor that is not a listening TCP socket."""
    pid, count = environ.pop("LISTEN_PID", ""), environ.pop("LISTEN_FDS", "")
    environ.pop("LISTEN_FDNAMES", None)
    if pid != str(os.getpid()) or not count.isdigit():
        return []
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
        sockets.append(_listening_socket(fd))
    return sockets


def _listening_socket(fd: int) -> socket.socket:
    try:
        os.set_inheritable(fd, False)  # ours alone, not the sessions'
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ServiceError(f"LISTEN_FDS: fd {fd}: {exc.strerror or exc}") from None
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    tcp = sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
    if not (tcp and listening):
        sock.detach()
        raise ServiceError(f"LISTEN_FDS: fd {fd} is not a listening TCP socket")
    return sock
