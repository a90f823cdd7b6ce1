"""hashike's client authenticating to a real OpenSSH sshd: every key type, an
encrypted key, keys held by OpenSSH's ssh-agent, and password login with a
test account that the fixture creates and removes."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.aio.agent import AgentClient
from hashike.aio.client import connect
from hashike.aio.client_auth import AuthSettings, Identity, file_identity
from hashike.keys.keypair import generate_private_key, write_private_key
from hashike.proto.errors import AuthenticationFailed
from hashike.proto.hostkey import PublicKey

if TYPE_CHECKING:
    from tests.interop.conftest import SshdServer, StartSshd


def host_key_check(sshd: SshdServer) -> Callable[[PublicKey], bool]:
    expected = PublicKey.from_openssh_line(Path(f"{sshd.host_keys['ed25519']}.pub").read_text())
    return lambda key: key == expected


def authorize(sshd: SshdServer, pub: Path) -> None:
    with sshd.authorized_keys.open("a") as f:
        f.write(pub.read_text())


def no_passphrase() -> Callable[[str], Awaitable[str | None]]:
    async def ask(_prompt: str) -> str | None:
        raise AssertionError("no passphrase should be asked for")

    return ask


@pytest.mark.parametrize("key_type", ["ssh-ed25519", "ecdsa", "rsa"])
async def test_publickey_each_type(start_sshd: StartSshd, tmp_path: Path, key_type: str) -> None:
    sshd = start_sshd()
    path = tmp_path / "id"
    write_private_key(generate_private_key(key_type), path)
    authorize(sshd, Path(f"{path}.pub"))
    identity = await file_identity(str(path), no_passphrase())
    assert identity is not None
    auth = AuthSettings(username=sshd.user, identities=[identity], host_label=sshd.host)
    async with await connect(sshd.host, sshd.port, check_host_key=host_key_check(sshd), auth=auth) as client:
        assert client.auth_method == "publickey"
        assert client.core.authenticated
    assert f"Accepted publickey for {sshd.user}" in sshd.log_text()


async def test_encrypted_key_asks_for_its_passphrase_only_when_accepted(
    start_sshd: StartSshd, tmp_path: Path
) -> None:
    sshd = start_sshd()
    unknown, known = tmp_path / "unknown", tmp_path / "known"
    write_private_key(generate_private_key(), unknown, b"never asked")
    write_private_key(generate_private_key(), known, b"open sesame")
    authorize(sshd, Path(f"{known}.pub"))
    asked: list[str] = []

    async def ask(prompt: str) -> str | None:
        asked.append(prompt)
        return "open sesame"

    identities = [i for p in (unknown, known) if (i := await file_identity(str(p), ask)) is not None]
    auth = AuthSettings(username=sshd.user, identities=identities)
    async with await connect(sshd.host, sshd.port, check_host_key=host_key_check(sshd), auth=auth) as client:
        assert client.auth_method == "publickey"
    assert asked == [f"Enter passphrase for key '{known}': "]


@pytest.mark.parametrize("key_type", ["ssh-ed25519", "rsa"])
async def test_publickey_through_openssh_agent(
    start_sshd: StartSshd, tmp_path: Path, ssh_agent: str, key_type: str
) -> None:
    sshd = start_sshd()
    path = tmp_path / "agent_key"
    write_private_key(generate_private_key(key_type), path)
    authorize(sshd, Path(f"{path}.pub"))
    env = {**os.environ, "SSH_AUTH_SOCK": ssh_agent}
    subprocess.run(["ssh-add", str(path)], env=env, check=True, capture_output=True, timeout=30)
    path.unlink()  # only the agent holds the private key now
    async with await AgentClient.connect(ssh_agent) as agent:
        identities = [Identity(key, f"agent: {comment}") for key, comment in await agent.identities()]
        auth = AuthSettings(username=sshd.user, identities=identities, agent=agent)
        async with await connect(
            sshd.host, sshd.port, check_host_key=host_key_check(sshd), auth=auth
        ) as client:
            assert client.auth_method == "publickey"


async def test_wrong_key_is_permission_denied(start_sshd: StartSshd, tmp_path: Path) -> None:
    sshd = start_sshd()
    path = tmp_path / "stranger"
    write_private_key(generate_private_key(), path)
    identity = await file_identity(str(path), None)
    assert identity is not None
    auth = AuthSettings(username=sshd.user, identities=[identity], host_label=sshd.host)
    with pytest.raises(AuthenticationFailed) as info:
        await connect(sshd.host, sshd.port, check_host_key=host_key_check(sshd), auth=auth)
    assert str(info.value) == f"{sshd.user}@{sshd.host}: Permission denied (publickey)."


TEST_USER = "hashiketest"
TEST_PASSWORD = "Correct-Horse-7"


@pytest.fixture
def test_account() -> Iterator[str]:
    """A local account with a password, for sshd's own password check."""
    if os.geteuid() != 0:
        pytest.fail("password interop tests create a local account and need root (CI runs as root)")
    subprocess.run(["userdel", "-r", TEST_USER], capture_output=True, timeout=30)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", TEST_USER], check=True, capture_output=True, timeout=30)
    try:
        subprocess.run(
            ["chpasswd"],
            input=f"{TEST_USER}:{TEST_PASSWORD}\n",
            text=True,
            check=True,
            capture_output=True,
            timeout=30,
        )
        assert pwd.getpwnam(TEST_USER)
        yield TEST_USER
    finally:
        subprocess.run(["userdel", "-r", TEST_USER], capture_output=True, timeout=30)


@pytest.mark.parametrize("methods", [("password",), ("keyboard-interactive",)])
async def test_password_login(start_sshd: StartSshd, test_account: str, methods: tuple[str, ...]) -> None:
    # sshd answers keyboard-interactive through PAM only.
    sshd = start_sshd("PasswordAuthentication yes", "KbdInteractiveAuthentication yes", "UsePAM yes")
    prompts: list[str] = []

    def prompt(text: str, echo: bool) -> str:
        prompts.append(text)
        assert not echo
        return TEST_PASSWORD

    auth = AuthSettings(username=test_account, prompt=prompt, methods=methods, host_label=sshd.host)
    async with await connect(sshd.host, sshd.port, check_host_key=host_key_check(sshd), auth=auth) as client:
        assert client.auth_method == methods[0]
    # The prompts ssh shows: "(user@host) Password: " from PAM, "user@host's password: ".
    expected = {
        "keyboard-interactive": f"({test_account}@{sshd.host}) Password: ",
        "password": f"{test_account}@{sshd.host}'s password: ",
    }
    assert prompts == [expected[methods[0]]]


async def test_wrong_password_three_times(start_sshd: StartSshd, test_account: str) -> None:
    sshd = start_sshd("PasswordAuthentication yes")
    notices: list[str] = []
    auth = AuthSettings(
        username=test_account,
        prompt=lambda text, echo: "wrong",
        methods=("password",),
        host_label=sshd.host,
        notice=notices.append,
    )
    with pytest.raises(AuthenticationFailed, match=r"Permission denied \(publickey,password\)\."):
        await connect(sshd.host, sshd.port, check_host_key=host_key_check(sshd), auth=auth)
    assert notices == ["Permission denied, please try again."] * 2


async def test_batch_mode_never_prompts(start_sshd: StartSshd, test_account: str) -> None:
    sshd = start_sshd("PasswordAuthentication yes")
    auth = AuthSettings(username=test_account, prompt=None)
    with pytest.raises(AuthenticationFailed, match="Permission denied"):
        await connect(sshd.host, sshd.port, check_host_key=host_key_check(sshd), auth=auth)
