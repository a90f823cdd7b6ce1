"""Forwards added and cancelled while a connection runs: ``-O forward`` and
``-O cancel`` through a master's control socket, and the ``~C`` command line
(``-L``, ``-R``, ``-D``, ``-KL``, ``-KR``, ``-KD``). One table serves both, so
a forward added one way can be cancelled the other. Under Reconnect the
table tells the supervisor of each -R added or cancelled, so that the next
connection asks for the same ones, and keeps the listener each reconnect
brings, so that a cancel reaches the connection that holds it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from hashike.aio.client import SSHClient
from hashike.aio.forward import ForwardListener
from hashike.aio.remote import RemoteListener
from hashike.aio.supervisor import RemoteSpec, Supervisor
from hashike.config.forward import Forward, ForwardKind
from hashike.config.ssh_config import ClientSettings

from .forwards import bind_host, start_listener
from .remote import remote_spec, remote_target

__all__ = ["ForwardTable", "Listener"]

Listener = ForwardListener | RemoteListener


@dataclass(slots=True)
class ForwardTable:
    client: SSHClient
    settings: ClientSettings
    forwards: dict[Forward, Listener] = field(default_factory=dict)
    supervisor: Supervisor | None = None  # under Reconnect

    async def add(self, fwd: Forward) -> Listener:
        """The listener for ``fwd``, opened now unless it is already there.
        Raises OSError (a local bind) or RemoteForwardFailed (the server's no)."""
        existing = self.forwards.get(fwd)
        if existing is None:
            existing = await self._open(fwd)
            self.forwards[fwd] = existing
            if fwd.kind == "remote" and self.supervisor is not None:
                self.supervisor.forward_remote(remote_spec(fwd))
        return existing

    async def _open(self, fwd: Forward) -> Listener:
        if fwd.kind != "remote":
            host = bind_host(fwd.listen_host, self.settings.gateway_ports)
            return await start_listener(self.client, fwd, host)
        return await self.client.forward_remote(
            fwd.listen_host, fwd.listen_port or 0, remote_target(fwd), listen_socket=fwd.listen_socket
        )

    def cancel(self, fwd: Forward) -> bool:
        """Close ``fwd``'s listener; False if there is none."""
        listener = self.forwards.pop(fwd, None)
        if listener is None:
            return False
        listener.close()
        if fwd.kind == "remote" and self.supervisor is not None:
            with contextlib.suppress(ValueError):  # not listed there: nothing to forget
                self.supervisor.remote.remove(remote_spec(fwd))
        return True

    def reestablished(self, spec: RemoteSpec, listener: RemoteListener) -> None:
        """A reconnect requested ``spec`` again and got ``listener``."""
        for fwd in [*self.forwards, *self.settings.remote_forwards]:
            if fwd.kind == "remote" and remote_spec(fwd) == spec:
                self.forwards[fwd] = listener
                return

    def find(self, kind: ForwardKind, host: str | None, port: int | str) -> Forward | None:
        """The forward of ``kind`` listening on ``port`` (a number, or a socket
        path), on ``host`` if one is given: what ``~C -KL [host:]port`` names.
        A port the server or the OS chose (``-R 0``) is matched as chosen."""
        for fwd, listener in self.forwards.items():
            if fwd.kind != kind:
                continue
            if isinstance(port, str):
                if fwd.listen_socket == port:
                    return fwd
            elif port in (fwd.listen_port, listener.port) and (host is None or fwd.listen_host == host):
                return fwd
        return None

    def close(self) -> None:
        for listener in self.forwards.values():
            listener.close()
        self.forwards.clear()
