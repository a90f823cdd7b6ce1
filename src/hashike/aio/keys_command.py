"""sshd's AuthorizedKeysCommand: authorized_keys lines printed by a program.

The command line is split as sshd_config(5) gives it, and its tokens are
expanded as sshd expands them: ``%u`` the login name, ``%h`` the home
directory, ``%t`` the key type, ``%k`` the key in base64, ``%f`` its
fingerprint, ``%%`` a percent sign; a command without arguments gets the
login name as its only one. It runs as AuthorizedKeysCommandUser (which
sshd requires; another user than the server's own needs root), with no
stdin, its stderr discarded.

Unlike sshd, which waits for as long as the command takes, it runs with a
time limit and a limit on what it may print, on the event loop without
blocking it: a command that hangs or floods is killed, with its process
group, and denies the login; so does one that fails. Each such outcome is
logged (sshd's words where it has them: ``AuthorizedKeysCommand ... failed,
status N``), and none lets anyone in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
from collections.abc import Callable
from dataclasses import dataclass

from hashike.keys.authorized_keys import MAX_FILE_SIZE
from hashike.keys.command_tokens import expand_command
from hashike.proto.hostkey import PublicKey

__all__ = ["KeysCommand", "run_keys_command"]

_READ_CHUNK = 64 * 1024
_REAP_TIMEOUT = 5.0  # after SIGKILL, for the kernel to report the exit


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysCommand:
    """AuthorizedKeysCommand (``argv``, tokens not yet expanded) and
    AuthorizedKeysCommandUser (``user``); the limits are hashiked's own."""

    argv: tuple[str, ...]
    user: str | None
    timeout: float = 10.0  # seconds
    max_output: int = MAX_FILE_SIZE  # the limit on an authorized_keys file


def _run_as(name: str | None) -> str | None:
    """Why the command cannot run as ``name``, or None. sshd runs it as that
    user; another user than our own needs root."""
    if name is None:
        return "No user for AuthorizedKeysCommand specified, skipping"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return f'AuthorizedKeysCommandUser "{name}" not found'
    if entry.pw_uid != os.geteuid() and os.geteuid() != 0:
        return f'AuthorizedKeysCommandUser "{name}": cannot run as another user without root'
    return None


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> bytes | None:
    """Everything until EOF, or None once more than ``limit`` bytes came."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL to the command's process group (it leads its own session), so
    that what it started goes too."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_keys_command(
    command: KeysCommand, *, user: str, home: str, key: PublicKey, log: Callable[[str], None]
) -> bytes | None:
    """The command's output for this login, or None (the reason went to ``log``)."""
    argv = expand_command(command.argv, user=user, home=home, key=key)
    why = _run_as(command.user)
    if why is not None:
        log(why)
        return None
    as_user = command.user if os.geteuid() == 0 else None
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            user=as_user,
        )
    except OSError as exc:
        log(f"AuthorizedKeysCommand {argv[0]}: {exc.strerror or exc}")
        return None
    assert process.stdout is not None
    try:
        async with asyncio.timeout(command.timeout):  # for the output and the exit together
            output = await _read_bounded(process.stdout, command.max_output)
            if output is None:
                log(f"AuthorizedKeysCommand {argv[0]} printed more than {command.max_output} bytes: killed")
                return None
            status = await process.wait()
    except TimeoutError:
        log(f"AuthorizedKeysCommand {argv[0]} timed out after {command.timeout:g} seconds: killed")
        return None
    finally:
        if process.returncode is None:
            _kill(process)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), _REAP_TIMEOUT)
    if status < 0:
        log(f"AuthorizedKeysCommand {argv[0]} exited on signal {-status}")
        return None
    if status != 0:
        log(f"AuthorizedKeysCommand {argv[0]} failed, status {status}")
        return None
    return output
