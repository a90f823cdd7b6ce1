"""The ``~C`` command line, as ssh's: ``-L``, ``-R`` and ``-D`` add a
forward to the running connection, ``-KL``, ``-KR`` and ``-KD`` cancel one
(``[bind_address:]port``), ``?`` or ``-h`` lists the commands. Forwards go
to the same table as ``-O forward``/``cancel``. ssh's lines answer:
``Forwarding port.``, ``Canceled forwarding.``, ``Bad forwarding
specification.``, ``Unknown port forwarding.``, ``Invalid command.``; as in
OpenSSH 9.2 and later it is off unless EnableEscapeCommandline is yes
(``commandline disabled``). ``!command`` (a local shell) is not offered.
"""

from __future__ import annotations

import logging
import os

from hashike.aio.remote import RemoteForwardFailed
from hashike.config.forward import ForwardKind, ForwardSpecError, parse_forward

from .runtime_forwards import ForwardTable

__all__ = ["COMMANDS_HELP", "MAX_LINE", "run_command_line"]

log = logging.getLogger("hashike.client")

MAX_LINE = 1024  # what ssh's command line holds
COMMANDS_HELP = (
    "Commands:\n"
    "      -L[bind_address:]port:host:hostport    Request local forward\n"
    "      -R[bind_address:]port:host:hostport    Request remote forward\n"
    "      -D[bind_address:]port                  Request dynamic forward\n"
    "      -KL[bind_address:]port                 Cancel local forward\n"
    "      -KR[bind_address:]port                 Cancel remote forward\n"
    "      -KD[bind_address:]port                 Cancel dynamic forward\n"
)
_KINDS: dict[str, ForwardKind] = {"L": "local", "R": "remote", "D": "dynamic"}


def _cancel_target(spec: str) -> tuple[str | None, int | str] | None:
    """``[bind_address:]port`` (or a socket path) of a -K command, or None."""
    if spec.startswith("/"):
        return None, spec
    host, _, port = spec.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        return None
    return (host.strip("[]") or None), int(port)


async def run_command_line(line: str, table: ForwardTable) -> str:
    """Carry out one command line; what to tell the user (lines end in \\n)."""
    line = line.strip(" \t\r\n")
    if line in ("", "?", "-h"):
        return COMMANDS_HELP if line else ""
    if len(line) < 2 or line[0] != "-":
        return "Invalid command.\n"
    cancel = line[1] == "K"
    kind = _KINDS.get(line[2:3] if cancel else line[1])
    if kind is None:
        return "Invalid command.\n"
    spec = line[3 if cancel else 2 :].strip(" \t")
    if cancel:
        target = _cancel_target(spec)
        fwd = table.find(kind, *target) if target is not None else None
        if fwd is None:
            return "Bad forwarding close port.\n" if target is None else "Unknown port forwarding.\n"
        table.cancel(fwd)
        return "Canceled forwarding.\n"
    try:
        fwd = parse_forward(kind, spec)
    except ForwardSpecError:
        return "Bad forwarding specification.\n"
    try:
        listener = await table.add(fwd)
    except (OSError, RemoteForwardFailed) as exc:
        why = os.strerror(exc.errno or 0) if isinstance(exc, OSError) else str(exc)
        log.debug("~C %s failed: %s", fwd.describe(), why)
        return "Port forwarding failed.\n"
    if kind == "remote" and fwd.listen_socket is None and fwd.listen_port == 0:
        return f"Allocated port {listener.port} for remote forward to {fwd.describe()}\nForwarding port.\n"
    return "Forwarding port.\n"
