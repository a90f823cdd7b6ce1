"""RemoteForwardTakeover across hashiked's workers (``Workers`` > 1).

A worker about to bind a fixed ``-R`` port for a login, with
RemoteForwardTakeover on, first has its own earlier connections of that
login give the forward up (:meth:`hashike.aio.server.Server.surrender`),
then tells the supervisor on its channel::

    takeover USER FINGERPRINT PORT ADDRESS

and the supervisor sends every other worker::

    surrender USER FINGERPRINT PORT ADDRESS

Each one closes that forward (the address as the client asked for it, the
port) in its connections of that same login, the user and the SHA256
fingerprint of the key it logged in with, and logs the "taken over" line.
The port closes when the other worker's loop reads the message, so the
asking worker binds again while it is in use, a bounded number of times
(:mod:`hashike.aio.remote_server`).

USER and ADDRESS are the peer's strings: they travel percent-encoded, so a
message is words of printable ASCII. A message longer than the channel's
datagram is not sent; the takeover then stays within the worker.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from hashike.aio.server import Server
from hashike.proto.text import escape_text

__all__ = ["WorkerForwards", "relay_takeover"]

log = logging.getLogger("hashike.server")

TAKEOVER = "takeover"
SURRENDER = "surrender"
_MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class _Request:
    who: tuple[str, str]  # (user, key fingerprint)
    address: str  # as the client asked for it
    port: int

    def encode(self, verb: str) -> bytes:
        user, fingerprint = self.who
        fields = (
            verb,
            quote(user, safe=""),
            quote(fingerprint, safe=""),
            str(self.port),
            quote(self.address, safe=""),
        )
        return " ".join(fields).encode("ascii")


def _decode(verb: str, data: bytes) -> _Request | None:
    """``data`` as a ``verb`` message, None unless it is one."""
    words = data.decode("ascii", "replace").split(" ")
    if len(words) != 5 or words[0] != verb or not words[3].isdigit() or len(words[3]) > 5:
        return None
    port = int(words[3])
    if not 0 < port <= _MAX_PORT:
        return None
    return _Request((unquote(words[1]), unquote(words[2])), unquote(words[4]), port)


class WorkerForwards:
    """A worker's side: ``server`` asks the other workers through ``channel``
    (its ``take_over_elsewhere``), and gives up what they ask for."""

    def __init__(self, channel: socket.socket, server: Server, limit: int) -> None:
        self._channel = channel
        self._server = server
        self._limit = limit  # the channel's datagram size
        server.take_over_elsewhere = self.ask

    def ask(self, who: tuple[str, str], address: str, port: int) -> bool:
        """Ask the other workers to give up (address, port) held by login
        ``who``; True if asked (the port may then be freed soon)."""
        request = _Request(who, address, port)
        # The supervisor sends it on as "surrender", a byte longer.
        if len(request.encode(SURRENDER)) > self._limit:
            log.debug(
                "remote forward %s port %d: too long to ask the other workers", escape_text(address), port
            )
            return False
        try:
            self._channel.send(request.encode(TAKEOVER))
        except OSError as exc:  # the supervisor is gone: serve_worker ends us
            log.debug("supervisor channel: %s", exc)
            return False
        return True

    def surrender(self, data: bytes) -> None:
        """A ``surrender`` message from the supervisor."""
        request = _decode(SURRENDER, data)
        if request is None:
            log.error("supervisor: bad message %s", escape_text(repr(data)))
            return
        self._server.surrender(request.who, request.address, request.port)


def relay_takeover(data: bytes, others: Iterable[socket.socket]) -> bool:
    """The supervisor's side: a worker's ``takeover`` message goes to the
    channel of every other worker as ``surrender``. False if ``data`` is not
    a takeover message."""
    request = _decode(TAKEOVER, data)
    if request is None:
        return False
    message = request.encode(SURRENDER)
    for channel in others:
        try:
            channel.send(message)
        except OSError as exc:  # a worker going away: it holds nothing more
            log.debug("worker channel: %s", exc)
    return True
