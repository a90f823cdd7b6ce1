"""The client's host-key decision: known_hosts as ssh checks it, and ssh's
rule for a changed key let through by StrictHostKeyChecking=no."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, replace

from hashike.aio.client_auth import AuthSettings
from hashike.config.ssh_config import ClientSettings
from hashike.keys.known_hosts import evaluate_host_key
from hashike.proto.hostkey import PublicKey

from .terminal import ask

__all__ = ["HostKeyChecker"]


@dataclass(slots=True)
class HostKeyChecker:
    settings: ClientSettings  # without its forwards once a changed key was let through
    auth: AuthSettings

    async def __call__(self, key: PublicKey) -> bool:
        s = self.settings
        prompt = None if s.batch_mode else (lambda text: ask(text, echo=True))
        verdict = await asyncio.to_thread(
            evaluate_host_key,
            s.host_key_alias or s.hostname,
            s.port,
            key,
            strict=s.strict_host_key_checking,
            known_hosts_files=s.user_known_hosts_files,
            global_known_hosts_files=s.global_known_hosts_files,
            err=sys.stderr,
            prompt=prompt,
            hash_known_hosts=s.hash_known_hosts,
            now=time.time(),
        )
        if verdict.accepted and verdict.restricted:
            return self._restrict()
        return verdict.accepted

    def _restrict(self) -> bool:
        """ssh with a changed key under StrictHostKeyChecking=no: go on, but send
        no password to what may be an impostor and forward nothing to or from it."""
        s, cancelled = self.settings, False
        if s.password_authentication:
            print("Password authentication is disabled to avoid man-in-the-middle attacks.", file=sys.stderr)
            cancelled = True
        if s.kbd_interactive_authentication:
            print(
                "Keyboard-interactive authentication is disabled to avoid man-in-the-middle attacks.",
                file=sys.stderr,
            )
            cancelled = True
        self.auth.methods = tuple(m for m in self.auth.methods if m == "publickey")
        if s.forwards:
            print("Port forwarding is disabled to avoid man-in-the-middle attacks.", file=sys.stderr)
            self.settings = replace(s, local_forwards=(), remote_forwards=(), dynamic_forwards=())
            cancelled = True
        if cancelled and s.exit_on_forward_failure:
            print("Error: forwarding disabled due to host key check failure", file=sys.stderr)
            return False
        return True
