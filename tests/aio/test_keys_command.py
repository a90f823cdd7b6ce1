"""hashiked's AuthorizedKeysCommand: a program's authorized_keys lines, with
sshd's tokens; it runs off the event loop with a time limit and a bound on
its output, and any failure denies the login and is logged."""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest

from hashike.aio.keys_command import KeysCommand
from hashike.keys.command_tokens import check_tokens, expand_command
from hashike.proto.events import AuthFailed, AuthSucceeded
from tests.aio.test_server_auth import TinyClient, options, records, start
from tests.helpers import eventually
from tests.proto.authkit import user_key

__all__ = ["records"]  # a fixture used here
ME = pwd.getpwuid(os.geteuid()).pw_name


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "keys-command"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def command(tmp_path: Path, body: str, *args: str, timeout: float = 10, user: str | None = ME) -> KeysCommand:
    return KeysCommand(argv=(script(tmp_path, body), *args), user=user, timeout=timeout, max_output=64 * 1024)


async def login(port: int, slot: int = 0) -> object:
    client = await TinyClient.connect(port)
    try:
        return await client.publickey("alice", user_key(slot=slot))
    finally:
        await client.close()


def test_tokens() -> None:
    key = user_key().public_key
    argv = expand_command(
        ["/bin/k", "%u", "%h", "%t", "%k", "%f", "100%%", "%%u"], user="alice", home="/h", key=key
    )
    base64 = key.openssh_line().split()[1]
    assert argv == ["/bin/k", "alice", "/h", "ssh-ed25519", base64, key.fingerprint(), "100%", "%u"]
    assert expand_command(["/bin/k"], user="alice", home="/h", key=key) == ["/bin/k", "alice"]
    for bad in ("%x", "trailing%", "%U"):
        with pytest.raises(ValueError, match="unknown token"):
            check_tokens(["/bin/k", bad])


async def test_the_printed_key_logs_in(tmp_path: Path, records: Callable[[], list[str]]) -> None:
    line = user_key().public_key.openssh_line()
    seen = tmp_path / "argv"
    keys = command(tmp_path, f'echo "$@" > {seen}\necho "{line}"', "%u", "%t", "%f")
    async with await start(options(tmp_path / "none", keys_command=keys)) as server:
        assert isinstance(await login(server.port), AuthSucceeded)
    assert seen.read_text() == f"alice ssh-ed25519 {user_key().public_key.fingerprint()}\n"
    assert any(m.startswith("Accepted publickey for alice") for m in records())


async def test_key_options_from_the_command_apply(tmp_path: Path) -> None:
    line = user_key().public_key.openssh_line()
    keys = command(tmp_path, f"echo 'from=\"10.9.9.9\" {line}'")
    async with await start(options(tmp_path / "none", keys_command=keys)) as server:
        assert isinstance(await login(server.port), AuthFailed)


async def test_printing_nothing_refuses(tmp_path: Path) -> None:
    keys = command(tmp_path, "exit 0")
    async with await start(options(tmp_path / "none", keys_command=keys)) as server:
        assert isinstance(await login(server.port), AuthFailed)


async def test_a_failing_command_refuses_even_with_the_key(
    tmp_path: Path, records: Callable[[], list[str]]
) -> None:
    keys = command(tmp_path, f'echo "{user_key().public_key.openssh_line()}"; exit 3')
    async with await start(options(tmp_path / "none", keys_command=keys)) as server:
        assert isinstance(await login(server.port), AuthFailed)
    assert f"AuthorizedKeysCommand {keys.argv[0]} failed, status 3" in records()


async def test_no_command_user_refuses(tmp_path: Path, records: Callable[[], list[str]]) -> None:
    keys = command(tmp_path, f'echo "{user_key().public_key.openssh_line()}"', user=None)
    async with await start(options(tmp_path / "none", keys_command=keys)) as server:
        assert isinstance(await login(server.port), AuthFailed)
    assert "No user for AuthorizedKeysCommand specified, skipping" in records()


async def test_a_hanging_command_times_out_and_the_server_stays_responsive(
    tmp_path: Path, records: Callable[[], list[str]]
) -> None:
    # The command hangs for alice's first key only; the other key is in a file.
    hanging, started = user_key().public_key.fingerprint(), tmp_path / "started"
    body = f'[ "$1" = "{hanging}" ] && touch {started} && exec sleep 60\nexit 0'
    keys = command(tmp_path, body, "%f", timeout=5)
    keys_file = tmp_path / "authorized_keys"
    keys_file.write_text(user_key(slot=1).public_key.openssh_line() + "\n")
    async with await start(options(keys_file, keys_command=keys)) as server:
        stuck = asyncio.create_task(login(server.port))
        await eventually(started.exists, timeout=10, what="the command to start")
        assert isinstance(await login(server.port, slot=1), AuthSucceeded)  # while the first one waits
        assert not stuck.done()
        assert isinstance(await asyncio.wait_for(stuck, 20), AuthFailed)
    assert f"AuthorizedKeysCommand {keys.argv[0]} timed out after 5 seconds: killed" in records()


async def test_megabytes_of_output_are_cut_off(tmp_path: Path, records: Callable[[], list[str]]) -> None:
    line = user_key().public_key.openssh_line()
    keys = command(tmp_path, f'echo "{line}"\nexec yes "# filler filler filler filler"')
    async with await start(options(tmp_path / "none", keys_command=keys)) as server:
        assert isinstance(await asyncio.wait_for(login(server.port), 20), AuthFailed)
    assert f"AuthorizedKeysCommand {keys.argv[0]} printed more than 65536 bytes: killed" in records()
