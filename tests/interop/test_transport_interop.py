"""Transport interop with real OpenSSH, both directions, for every cipher and
every kex that both OpenSSH on this machine and hashike support.

- OpenSSH ``ssh -vvv`` against the ``hashiked`` command reaches user
  authentication: checked from ssh's own debug output.
- hashike's client against a private OpenSSH ``sshd`` reaches the userauth
  service, with sshd's host key checked against its .pub file.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.aio.client import connect
from hashike.keys.keypair import generate_private_key, write_private_key
from hashike.proto.config import SUPPORTED_CIPHERS, SUPPORTED_KEX, TransportConfig
from hashike.proto.hostkey import PublicKey
from tests.helpers import eventually
from tests.interop.conftest import openssh_ciphers, openssh_kex

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient, StartSshd

CIPHERS = [c for c in SUPPORTED_CIPHERS if c in openssh_ciphers()]
KEXES = [k for k in SUPPORTED_KEX if k in openssh_kex()]
# Each ctr cipher is tried with each EtM MAC; AEAD ciphers ignore the MAC.
CIPHER_MACS = [
    (c, m)
    for c in CIPHERS
    for m in (
        ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com") if c.endswith("-ctr") else ("",)
    )
]


def test_the_matrix_is_not_empty() -> None:
    # Guards the parametrization below against silently testing nothing.
    assert "aes128-gcm@openssh.com" in CIPHERS and "chacha20-poly1305@openssh.com" in CIPHERS
    assert "curve25519-sha256" in KEXES


class Hashiked:
    def __init__(self, process: subprocess.Popen[str], port: int, key: PublicKey) -> None:
        self.process = process
        self.port = port
        self.key = key


@pytest.fixture
def hashiked(tmp_path: Path) -> Iterator[Hashiked]:
    """The real ``hashiked`` command on 127.0.0.1 and a free port."""
    key = generate_private_key("ssh-ed25519")
    key_path = tmp_path / "host_ed25519"
    write_private_key(key, key_path)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hashike.cli.server",
            "-p",
            "0",
            "-h",
            str(key_path),
            "-o",
            "ListenAddress=127.0.0.1",
            # ecdh-sha2-nistp256 is accepted but not offered by default.
            "-o",
            "KexAlgorithms=+ecdh-sha2-nistp256",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1 port (\d+); host key (SHA256:\S+)", line)
        assert match, f"unexpected first line: {line!r}"
        assert match.group(2) == key.public_key.fingerprint()
        yield Hashiked(process, int(match.group(1)), key.public_key)
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize(("cipher", "mac"), CIPHER_MACS)
@pytest.mark.parametrize("kex", KEXES)
def test_openssh_ssh_reaches_auth_on_hashiked(
    hashiked: Hashiked, ssh_client: SshClient, kex: str, cipher: str, mac: str
) -> None:
    options = {"KexAlgorithms": kex, "Ciphers": cipher, "HostKeyAlgorithms": "ssh-ed25519"}
    if mac:
        options["MACs"] = mac
    result = ssh_client.run(hashiked.port, "true", options=options, args=["-vvv"], timeout=30)
    log = result.stderr
    assert f"kex: algorithm: {kex}" in log, log
    assert f"kex: server->client cipher: {cipher}" in log, log
    assert f"kex: client->server cipher: {cipher}" in log, log
    if mac:
        assert f"MAC: {mac}" in log, log
    # ssh checked the host key signature and shows hashiked's fingerprint.
    assert f"Server host key: ssh-ed25519 {hashiked.key.fingerprint()}" in log, log
    assert "SSH2_MSG_SERVICE_ACCEPT received" in log, log
    assert "Authentications that can continue: publickey" in log, log
    # hashiked refuses every method until user authentication is configured.
    assert "Permission denied (publickey)." in log, log
    assert result.returncode == 255


def test_openssh_ssh_sees_strict_kex_and_ext_info(hashiked: Hashiked, ssh_client: SshClient) -> None:
    result = ssh_client.run(hashiked.port, "true", args=["-vvv"])
    log = result.stderr
    assert "Remote protocol version 2.0, remote software version hashike" in log, log
    assert "kex_input_ext_info: server-sig-algs=<" in log, log
    assert "ping@openssh.com" in log, log
    assert "SSH2_MSG_SERVICE_ACCEPT received" in log, log


def _expected_host_key(path: Path) -> PublicKey:
    return PublicKey.from_openssh_line(Path(f"{path}.pub").read_text())


@pytest.mark.parametrize(("cipher", "mac"), CIPHER_MACS)
@pytest.mark.parametrize("kex", KEXES)
async def test_hashike_client_reaches_userauth_on_sshd(
    start_sshd: StartSshd, kex: str, cipher: str, mac: str
) -> None:
    sshd = start_sshd()
    expected = _expected_host_key(sshd.host_keys["ed25519"])
    config = replace(
        TransportConfig(),
        kex_algorithms=(kex,),
        ciphers=(cipher,),
        host_key_algorithms=("ssh-ed25519",),
        macs=(mac,) if mac else TransportConfig().macs,
    )
    async with await connect(
        sshd.host, sshd.port, check_host_key=lambda k: k == expected, config=config
    ) as client:
        assert client.server_version.startswith("OpenSSH_")
        assert client.negotiated.kex == kex
        assert client.negotiated.cipher_c2s == cipher and client.negotiated.cipher_s2c == cipher
        assert client.negotiated.strict  # OpenSSH 9.2 speaks strict kex
        assert client.core.service_accepted
        assert "server-sig-algs" in client.core.transport.peer_extensions


@pytest.mark.parametrize(
    ("key_type", "algorithm"),
    [
        ("ed25519", "ssh-ed25519"),
        ("ecdsa", "ecdsa-sha2-nistp256"),
        ("rsa", "rsa-sha2-512"),
        ("rsa", "rsa-sha2-256"),
    ],
)
async def test_hashike_verifies_every_sshd_host_key_type(
    start_sshd: StartSshd, key_type: str, algorithm: str
) -> None:
    sshd = start_sshd()
    expected = _expected_host_key(sshd.host_keys[key_type])
    config = replace(TransportConfig(), host_key_algorithms=(algorithm,))
    async with await connect(
        sshd.host, sshd.port, check_host_key=lambda k: k == expected, config=config
    ) as client:
        assert client.negotiated.host_key == algorithm
        assert client.core.service_accepted


async def test_rekey_refused_by_sshd_before_auth_fails_cleanly(start_sshd: StartSshd) -> None:
    """sshd answers a KEXINIT sent before authentication with UNIMPLEMENTED.
    hashike must end the connection with a clear reason rather than hang."""
    sshd = start_sshd()
    expected = _expected_host_key(sshd.host_keys["ed25519"])
    client = await connect(sshd.host, sshd.port, check_host_key=lambda k: k == expected)
    client.rekey()
    await asyncio.wait_for(client.wait_closed(), 10)
    disconnect = client.disconnect_event
    assert disconnect is not None and not disconnect.by_peer
    assert "refused key re-exchange" in disconnect.description
    # sshd's pre-auth child logs through its monitor: give the line a moment.
    await eventually(
        lambda: "dispatch_protocol_error: type 20" in sshd.log_text(),
        what=lambda: f"sshd's log has no dispatch_protocol_error; it ends:\n{sshd.log_text()[-2000:]}",
    )
