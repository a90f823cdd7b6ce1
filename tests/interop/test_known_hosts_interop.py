"""hashike.keys.known_hosts against OpenSSH: files from ssh-keyscan, ssh-keygen -H and ssh are
read the same way, files hashike writes are found by ssh-keygen -F and accepted by ssh, and
the StrictHostKeyChecking messages are ssh's own, byte for byte.

(hashike.keys.authorized_keys against sshd lives here too, at the end: same fixtures.)"""

from __future__ import annotations

import io
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.keys.authorized_keys import find_authorized_key, load_authorized_keys
from hashike.keys.keypair import generate_private_key, load_public_key_file, write_private_key
from hashike.keys.known_hosts import (
    HostKeyStatus,
    KnownHosts,
    append_known_host,
    evaluate_host_key,
)
from hashike.proto.hostkey import PublicKey

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient, SshdServer

pytestmark = pytest.mark.interop


def host_key(server: SshdServer, key_type: str) -> PublicKey:
    return load_public_key_file(f"{server.host_keys[key_type]}.pub")


def name(server: SshdServer) -> str:
    return f"[{server.host}]:{server.port}"


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def keyscan(paths: dict[str, str], server: SshdServer, path: Path) -> None:
    result = run(
        [paths["ssh-keyscan"], "-T", "10", "-t", "ed25519,ecdsa,rsa", "-p", str(server.port), server.host]
    )
    assert result.returncode == 0, result.stderr
    path.write_text(result.stdout)


def test_keyscan_file_hashed_by_ssh_keygen_matches(
    sshd_server: SshdServer, openssh_paths: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "known_hosts"
    keyscan(openssh_paths, sshd_server, path)
    plain = KnownHosts.load([path])
    assert len(plain.entries) == 3 and plain.warnings == ()
    result = run([openssh_paths["ssh-keygen"], "-H", "-f", str(path)])
    assert result.returncode == 0, result.stderr
    hashed = KnownHosts.load([path])
    assert len(hashed.entries) == 3 and all(entry.hashed for entry in hashed.entries)
    assert hashed.warnings == ()
    for known in (plain, hashed):
        for key_type in sshd_server.host_keys:
            key = host_key(sshd_server, key_type)
            status, entries = known.check(sshd_server.host, sshd_server.port, key)
            assert status is HostKeyStatus.MATCH, key_type
            assert [entry.key for entry in entries] == [key]
        other = host_key(sshd_server, "ed25519")
        assert known.check(sshd_server.host, sshd_server.port + 1, other)[0] is HostKeyStatus.UNKNOWN
        assert known.check(sshd_server.host, 22, other)[0] is HostKeyStatus.UNKNOWN


@pytest.mark.parametrize("hashed", [False, True], ids=["plain", "hashed"])
def test_ssh_keygen_finds_lines_we_append(
    sshd_server: SshdServer, openssh_paths: dict[str, str], tmp_path: Path, hashed: bool
) -> None:
    path = tmp_path / "known_hosts"
    for key_type in sshd_server.host_keys:
        append_known_host(path, sshd_server.host, sshd_server.port, host_key(sshd_server, key_type), hashed)
    append_known_host(path, "Example.COM", 22, host_key(sshd_server, "ed25519"), hashed)
    for host, count in ((name(sshd_server), 3), ("example.com", 1)):
        result = run([openssh_paths["ssh-keygen"], "-F", host, "-f", str(path)])
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count(f"# Host {host} found: line") == count
    result = run([openssh_paths["ssh-keygen"], "-F", f"[{sshd_server.host}]:1", "-f", str(path)])
    assert result.returncode != 0


@pytest.mark.parametrize("hashed", [False, True], ids=["plain", "hashed"])
def test_ssh_accepts_a_file_we_wrote(
    sshd_server: SshdServer, ssh_client: SshClient, tmp_path: Path, hashed: bool
) -> None:
    path = tmp_path / "known_hosts"
    err = io.StringIO()
    verdict = evaluate_host_key(
        sshd_server.host,
        sshd_server.port,
        host_key(sshd_server, "ed25519"),
        strict="accept-new",
        known_hosts_files=[path],
        err=err,
        hash_known_hosts=hashed,
    )
    assert verdict.accepted and verdict.added
    assert (
        err.getvalue()
        == f"Warning: Permanently added '{name(sshd_server)}' (ED25519) to the list of known hosts.\n"
    )
    result = ssh_client.run(
        sshd_server.port,
        "true",
        user=sshd_server.user,
        identity=sshd_server.client_key,
        options={
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(path),
            "HostKeyAlgorithms": "ssh-ed25519",
        },
        args=["-v"],
    )
    assert result.returncode == 0, result.stderr
    assert f"Host '{name(sshd_server)}' is known and matches the ED25519 host key." in result.stderr


def test_we_accept_the_line_ssh_adds(sshd_server: SshdServer, ssh_client: SshClient, tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    for hashed in ("no", "yes"):
        result = ssh_client.run(
            sshd_server.port,
            "true",
            user=sshd_server.user,
            identity=sshd_server.client_key,
            options={
                "StrictHostKeyChecking": "accept-new",
                "UserKnownHostsFile": str(path),
                "HostKeyAlgorithms": "ssh-ed25519",
                "HashKnownHosts": hashed,
            },
        )
        assert result.returncode == 0, result.stderr
        known = KnownHosts.load([path])
        assert known.entries[-1].hashed is (hashed == "yes")
        assert known.check(sshd_server.host, sshd_server.port, host_key(sshd_server, "ed25519"))[0] is (
            HostKeyStatus.MATCH
        )
        path.unlink()


def ssh_stderr(ssh_client: SshClient, server: SshdServer, known_hosts: Path, strict: str) -> str:
    result = ssh_client.run(
        server.port,
        "true",
        user=server.user,
        identity=server.client_key,
        options={
            "StrictHostKeyChecking": strict,
            "UserKnownHostsFile": str(known_hosts),
            "HostKeyAlgorithms": "ssh-ed25519",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
        },
    )
    return result.stderr


@pytest.mark.parametrize("case", ["changed", "changed-other-type", "unknown", "revoked"])
@pytest.mark.parametrize("strict", ["yes", "accept-new", "no"])
def test_messages_are_ssh_messages(
    sshd_server: SshdServer, ssh_client: SshClient, tmp_path: Path, case: str, strict: str
) -> None:
    key = host_key(sshd_server, "ed25519")
    wrong = host_key(sshd_server, "rsa")
    client_key = load_public_key_file(f"{sshd_server.client_key}.pub")
    text = {
        "changed": f"# old\n{name(sshd_server)} {client_key.openssh_line()}\n",
        "changed-other-type": f"{name(sshd_server)} {wrong.openssh_line()}\n",
        "unknown": "",
        "revoked": f"{name(sshd_server)} {key.openssh_line()}\n@revoked * {key.openssh_line()}\n",
    }[case]
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.write_text(text)
    theirs.write_text(text)
    err = io.StringIO()
    verdict = evaluate_host_key(
        sshd_server.host, sshd_server.port, key, strict=strict, known_hosts_files=[ours], err=err
    )
    expected = ssh_stderr(ssh_client, sshd_server, theirs, strict)
    ours_text = err.getvalue().replace(str(ours), str(theirs))
    assert ours_text
    if case == "revoked" and strict == "no":
        # A deliberate difference: ssh goes on (restricted) with a revoked key under "no";
        # hashike refuses it always. The warning itself is the same.
        assert "Host key verification failed." not in expected
        assert ours_text.endswith("\nHost key verification failed.\n")
        assert expected.startswith(ours_text.removesuffix("Host key verification failed.\n"))
        assert not verdict.accepted
        return
    # ssh goes on to authenticate (and says so) when it accepts; our part is the start.
    assert expected.startswith(ours_text), (expected, ours_text)
    assert ours.read_text() == theirs.read_text()
    assert verdict.accepted is ("Host key verification failed." not in expected)


# --- authorized_keys: sshd and hashike read the same file the same way ------------------------

# Options lines that sshd accepts or refuses for a login from 127.0.0.1 (UseDNS no).
AUTHORIZED_OPTIONS = [
    "",
    "restrict",
    'restrict,port-forwarding,permitopen="127.0.0.1:9"',
    "NO-PTY",
    "no-pty,",
    ",no-pty",
    "no-pty ,no-pty",
    "bogus",
    "no-restrict",
    "no-cert-authority",
    'no-pty="x"',
    "command=foo",
    'command="unterminated',
    r'command="a\\"',
    r'command="echo \"hi\""',
    'command="a",command="b"',
    'Command="true"',
    'tunnel="any"',
    'tunnel="x"',
    'permitopen="h:0"',
    'permitopen="::1:22"',
    'permitopen="[::1]:22"',
    'permitopen=":22"',
    'permitopen="*:*"',
    'permitlisten="1234"',
    'permitlisten="h:0"',
    'permitlisten="[::1]:*"',
    'environment="1A=b"',
    'environment="=b"',
    'environment="A=b",environment="A=c"',
    'from="127.0.0.0/8"',
    'from="127.0.0.1/8"',
    'from="127.0.0.1/33"',
    'from="!127.0.0.1,*"',
    'from="10.0.0.0/8"',
    'from="127.0.0.*"',
    'from=""',
    'from="localhost"',
    'from="127.0.0.1/32,!127.0.0.1"',
    'expiry-time="20990101"',
    'expiry-time="20990101Z"',
    'expiry-time="2099010112"',
    'expiry-time="200001010000"',
    'principals="a"',
    "cert-authority",
    "port-forwarding,restrict",
    "verify-required",
    "no-touch-required",
]


def test_sshd_and_we_agree_on_which_lines_log_in(
    sshd_server: SshdServer, ssh_client: SshClient, tmp_path: Path
) -> None:
    # One key per options line, all in one file, so the logins can run side by side.
    identities = []
    lines = []
    for i, options in enumerate(AUTHORIZED_OPTIONS):
        private = generate_private_key("ssh-ed25519")
        write_private_key(private, tmp_path / f"id_{i}")
        identities.append(tmp_path / f"id_{i}")
        lines.append(
            f"{options} {private.public_key.openssh_line()}" if options else private.public_key.openssh_line()
        )
    sshd_server.authorized_keys.write_text("\n".join(lines) + "\n")
    keys = load_authorized_keys(sshd_server.authorized_keys)
    now = datetime.now(UTC)

    def login(identity: Path) -> subprocess.CompletedProcess[str]:
        return ssh_client.run(
            sshd_server.port,
            "true",
            user=sshd_server.user,
            identity=identity,
            options={"KexAlgorithms": "curve25519-sha256"},
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(login, identities))
    # Both outcomes occur: a plain line logs in, an unknown option does not.
    assert results[AUTHORIZED_OPTIONS.index("")].returncode == 0
    assert results[AUTHORIZED_OPTIONS.index("bogus")].returncode == 255
    disagreements = []
    for options, identity, result in zip(AUTHORIZED_OPTIONS, identities, results, strict=True):
        # 255 is ssh's own failure; a forced command that fails exits otherwise.
        theirs = result.returncode != 255
        ours = (
            find_authorized_key(keys, load_public_key_file(f"{identity}.pub"), "127.0.0.1", now) is not None
        )
        if ours != theirs:
            disagreements.append((options, theirs, result.stderr))
    assert disagreements == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_restrict_port_forwarding_permitopen(sshd_server: SshdServer, ssh_client: SshClient) -> None:
    client = load_public_key_file(f"{sshd_server.client_key}.pub")
    listen = free_port()
    options = f'restrict,port-forwarding,permitopen="127.0.0.1:9",permitlisten="localhost:{listen}"'
    sshd_server.authorized_keys.write_text(f"{options} {client.openssh_line()}\n")
    warnings: list[tuple[int, str]] = []
    (entry,) = load_authorized_keys(sshd_server.authorized_keys, warnings)
    assert warnings == []
    ours = entry.options

    def ssh(*args: str, command: str = "true") -> subprocess.CompletedProcess[str]:
        return ssh_client.run(
            sshd_server.port,
            command,
            user=sshd_server.user,
            identity=sshd_server.client_key,
            options={"ExitOnForwardFailure": "yes"},
            args=args,
        )

    # Commands still run under restrict.
    result = ssh(command="echo ran")
    assert result.returncode == 0 and result.stdout == "ran\n", result.stderr
    # No pty.
    assert not ours.allows_pty()
    assert "PTY allocation request failed" in ssh("-tt").stderr
    # permitopen: only 127.0.0.1:9 may be opened (ssh -W opens a direct-tcpip channel).
    for port, allowed in ((9, True), (10, False)):
        assert ours.permits_open("127.0.0.1", port) is allowed
        refused = "administratively prohibited" in ssh("-W", f"127.0.0.1:{port}").stderr
        assert refused is not allowed
    assert not ours.permits_open("localhost", 9)
    # permitlisten: ssh sends "localhost" when no listen address is given.
    for spec, host, allowed in (
        (f"{listen}", "localhost", True),
        (f"127.0.0.1:{listen}", "127.0.0.1", False),
    ):
        assert ours.permits_listen(host, listen) is allowed
        result = ssh("-R", f"{spec}:127.0.0.1:9")
        assert (result.returncode == 0) is allowed, result.stderr
