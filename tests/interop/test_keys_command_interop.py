"""OpenSSH's ssh logging in to hashiked through AuthorizedKeysCommand: the
key the command prints logs in; a command that prints nothing refuses."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.interop.test_auth_openssh_to_hashiked import USER, StartHashiked, start_hashiked, user_keys
from tests.interop.test_certs_openssh_to_hashiked import logged, run

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

__all__ = ["start_hashiked", "user_keys"]  # fixtures used here
pytestmark = pytest.mark.interop


@pytest.mark.parametrize("prints", [True, False])
def test_authorized_keys_command(
    start_hashiked: StartHashiked,
    ssh_client: SshClient,
    user_keys: dict[str, Path],
    tmp_path: Path,
    prints: bool,
) -> None:
    key = user_keys["stranger0"]  # in no authorized_keys file
    command = tmp_path / "keys-command"
    line = Path(f"{key}.pub").read_text().strip() if prints else ""
    command.write_text(f'#!/bin/sh\n[ "$1" = "{USER}" ] && [ "$2" = ssh-ed25519 ] && echo "{line}"\nexit 0\n')
    command.chmod(0o755)
    server = start_hashiked(
        f"AuthorizedKeysCommand={command} %u %t %k",
        f"AuthorizedKeysCommandUser={pwd.getpwuid(os.geteuid()).pw_name}",
    )
    result = run(ssh_client, server, key, "echo", "via-command")
    if prints:
        assert "rc=0\nvia-command" in result
        logged(server, f"Accepted publickey for {USER} from 127.0.0.1")
    else:
        assert "Permission denied (publickey)" in result
