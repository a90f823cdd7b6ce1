"""The ssh-agent client against OpenSSH's real ssh-agent, started by the test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hashike.aio.agent import AgentClient, AgentError
from hashike.keys.keypair import generate_private_key, write_private_key


@pytest.mark.parametrize(
    ("key_type", "algorithms"),
    [
        ("ssh-ed25519", ("ssh-ed25519",)),
        ("ecdsa", ("ecdsa-sha2-nistp256",)),
        ("rsa", ("rsa-sha2-512", "rsa-sha2-256")),
    ],
)
async def test_list_and_sign(
    ssh_agent: str, tmp_path: Path, key_type: str, algorithms: tuple[str, ...]
) -> None:
    key = generate_private_key(key_type, comment="test key")
    path = tmp_path / "id"
    write_private_key(key, path)
    env = {**os.environ, "SSH_AUTH_SOCK": ssh_agent}
    added = subprocess.run(["ssh-add", str(path)], env=env, capture_output=True, text=True, timeout=30)
    assert added.returncode == 0, added.stderr
    async with await AgentClient.connect(ssh_agent) as client:
        identities = await client.identities()
        assert [k for k, _ in identities] == [key.public_key]
        # cryptography writes no comment into the key file, so ssh-add names it by path.
        assert identities[0][1] in ("test key", str(path))
        for algorithm in algorithms:
            signature = await client.sign(key.public_key, b"data to sign", algorithm)
            assert key.public_key.verify(signature, b"data to sign", (algorithm,))
            assert not key.public_key.verify(signature, b"other data", (algorithm,))


async def test_sign_with_unknown_key_is_refused(ssh_agent: str) -> None:
    async with await AgentClient.connect(ssh_agent) as client:
        assert await client.identities() == []
        with pytest.raises(AgentError, match="refused"):
            await client.sign(generate_private_key().public_key, b"x", "ssh-ed25519")


async def test_no_agent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="Error connecting to agent"):
        await AgentClient.connect(str(tmp_path / "missing.sock"))
