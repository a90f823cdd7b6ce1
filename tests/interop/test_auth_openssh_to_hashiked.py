"""User authentication, OpenSSH ``ssh`` -> the ``hashiked`` command.

Real ``ssh`` logs in to a ``hashiked`` subprocess with ed25519, ECDSA and RSA
keys (made by ssh-keygen), through a real ``ssh-agent``, with a password
(``SSH_ASKPASS``) and with keyboard-interactive; wrong keys and passwords are
refused with ssh's own "Permission denied (...)" and MaxAuthTries ends the
connection with "Too many authentication failures".

Sessions are not implemented yet, so a successful login is read from
``ssh -v``: OpenSSH prints ``Authenticated to 127.0.0.1 ([127.0.0.1]:PORT)
using "publickey".`` and then waits for its session channel; the test stops
it at that point.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.interop.conftest import KEY_TYPES, find_binary

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

pytestmark = pytest.mark.interop

USER = pwd.getpwuid(os.geteuid()).pw_name  # the user hashiked runs as
PASSWORD = "correct horse battery staple"
DEADLINE = 30.0
_AUTHENTICATED = re.compile(r'Authenticated to 127\.0\.0\.1 \(\[127\.0\.0\.1\]:\d+\) using "([\w-]+)"\.')


# --- hashiked ---------------------------------------------------------------------


@dataclass
class Hashiked:
    process: subprocess.Popen[str]
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


StartHashiked = Callable[..., Hashiked]


@pytest.fixture(scope="module")
def user_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Client keys made by ssh-keygen: the three types, and three more ed25519
    keys that no authorized_keys file holds."""
    keygen = find_binary("ssh-keygen")
    if keygen is None:
        pytest.skip("ssh-keygen not found")
    directory = tmp_path_factory.mktemp("user-keys")
    keys: dict[str, Path] = {}
    for name, args in [*KEY_TYPES.items(), *((f"stranger{i}", KEY_TYPES["ed25519"]) for i in range(3))]:
        path = directory / f"id_{name}"
        subprocess.run(
            [keygen, "-q", *args, "-N", "", "-C", f"hashike-{name}", "-f", str(path)],
            check=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        keys[name] = path
    return keys


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    """A PasswordFile line made by ``hashike-keygen -P``, the documented way."""
    result = subprocess.run(
        [sys.executable, "-m", "hashike.cli.keygen", "-P", USER],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    path = tmp_path / "passwords"
    path.write_text(result.stdout)
    return path


@pytest.fixture
def start_hashiked(tmp_path: Path, user_keys: dict[str, Path]) -> Iterator[StartHashiked]:
    """Factory: ``start_hashiked("MaxAuthTries=3", allow_users=True)`` runs
    hashiked with its authorized_keys holding the ed25519, ECDSA and RSA keys."""
    keygen = find_binary("ssh-keygen")
    assert keygen is not None
    host_key = tmp_path / "host_ed25519"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True, timeout=60)
    authorized = tmp_path / "authorized_keys"
    authorized.write_text("".join(Path(f"{user_keys[t]}.pub").read_text() for t in KEY_TYPES))
    processes: list[subprocess.Popen[str]] = []

    def start(*options: str, allow_users: bool = True) -> Hashiked:
        argv = [sys.executable, "-m", "hashike.cli.server", "-p", "0", "-h", str(host_key)]
        settings = ["ListenAddress=127.0.0.1", f"AuthorizedKeysFile={authorized}", *options]
        if allow_users:
            settings.append(f"AllowUsers={USER}")
        for option in settings:
            argv += ["-o", option]
        log = tmp_path / f"hashiked-{len(processes)}.log"
        with open(log, "w") as log_file:
            process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, text=True
            )
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1 port (\d+);", line)
        assert match, f"unexpected first line: {line!r}; log: {log.read_text()}"
        return Hashiked(process, int(match.group(1)), log)

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        for process in processes:
            if process.stdout is not None:
                process.stdout.close()


# --- running ssh --------------------------------------------------------------------


@dataclass
class Attempt:
    stderr: str
    returncode: int | None  # None: stopped by the test after authenticating

    @property
    def method(self) -> str | None:
        """The method ssh reports it authenticated with, if it did."""
        match = _AUTHENTICATED.search(self.stderr)
        return match.group(1) if match else None


def attempt(
    ssh: SshClient,
    port: int,
    *,
    user: str = USER,
    identity: Path | None = None,
    options: Mapping[str, str | int] | None = None,
    args: Sequence[str] = ("-v",),
    env: Mapping[str, str] | None = None,
) -> Attempt:
    """Run ``ssh ... true`` until it authenticates (then stop it: there is no
    session to run ``true`` in yet) or exits by itself."""
    argv = ssh.argv(port, "true", user=user, identity=identity, options=options, args=args)
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # no controlling terminal: ssh must use SSH_ASKPASS
    )
    lines: list[str] = []
    authenticated = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if _AUTHENTICATED.search(line):
                authenticated.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + DEADLINE
    while process.poll() is None and not authenticated.is_set() and time.monotonic() < deadline:
        authenticated.wait(0.05)
    returncode = process.poll()
    if returncode is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    reader.join(10)
    if process.stderr is not None and not reader.is_alive():  # see SshProcess.stop
        process.stderr.close()
    assert authenticated.is_set() or returncode is not None, "ssh neither authenticated nor exited"
    return Attempt("".join(lines), returncode)


def askpass_env(tmp_path: Path, password: str) -> dict[str, str]:
    """ssh reads the password from a program, never from a terminal."""
    script = tmp_path / "askpass"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
    script.chmod(0o700)
    return {"SSH_ASKPASS": str(script), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}


def password_options(method: str) -> dict[str, str | int]:
    return {
        "BatchMode": "no",
        "PasswordAuthentication": "yes",
        "KbdInteractiveAuthentication": "yes",
        "PreferredAuthentications": method,
        "NumberOfPasswordPrompts": 1,
    }


def assert_clean(server: Hashiked) -> None:
    log = server.log_text()
    assert "Traceback" not in log, log
    assert server.process.poll() is None, log


# --- public keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "log_type"), [("ed25519", "ED25519"), ("ecdsa", "ECDSA"), ("rsa", "RSA")]
)
def test_publickey_login(
    start_hashiked: StartHashiked,
    ssh_client: SshClient,
    user_keys: dict[str, Path],
    key_type: str,
    log_type: str,
) -> None:
    server = start_hashiked()
    result = attempt(ssh_client, server.port, identity=user_keys[key_type])
    assert result.method == "publickey", result.stderr
    assert re.search(rf"Server accepts key: \S+ {log_type} SHA256:", result.stderr), result.stderr
    assert re.search(
        rf"Accepted publickey for {re.escape(USER)} from 127\.0\.0\.1 port \d+ ssh2: {log_type} SHA256:",
        server.log_text(),
    ), server.log_text()
    assert_clean(server)


def test_rsa_signs_with_sha2(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path]
) -> None:
    # server-sig-algs lists rsa-sha2-512 first: ssh signs with it, never ssh-rsa (SHA-1).
    server = start_hashiked()
    result = attempt(ssh_client, server.port, identity=user_keys["rsa"], args=["-vvv"])
    assert result.method == "publickey", result.stderr
    assert "sign_and_send_pubkey: signing using rsa-sha2-512 SHA256:" in result.stderr, result.stderr


def test_default_allow_users_is_the_server_user(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path]
) -> None:
    server = start_hashiked(allow_users=False)
    assert attempt(ssh_client, server.port, identity=user_keys["ed25519"]).method == "publickey"
    other = attempt(ssh_client, server.port, identity=user_keys["ed25519"], user="not-" + USER)
    assert other.returncode == 255
    assert "Permission denied (publickey)." in other.stderr
    assert f"Invalid user not-{USER} from 127.0.0.1 port" in server.log_text()
    assert_clean(server)


def test_login_through_ssh_agent(
    start_hashiked: StartHashiked,
    ssh_client: SshClient,
    user_keys: dict[str, Path],
    tmp_path: Path,
) -> None:
    agent, add = find_binary("ssh-agent"), find_binary("ssh-add")
    if agent is None or add is None:
        pytest.skip("ssh-agent or ssh-add not found")
    server = start_hashiked()
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen(
        [agent, "-D", "-a", str(sock)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline and process.poll() is None, "ssh-agent did not start"
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run([add, str(user_keys["ecdsa"])], env=env, check=True, capture_output=True, timeout=30)
        # No key file at all: the agent is the only place a key can come from.
        result = attempt(
            ssh_client, server.port, options={"IdentityAgent": str(sock), "IdentitiesOnly": "no"}
        )
    finally:
        process.terminate()
        process.wait(10)
    assert result.method == "publickey", result.stderr
    assert re.search(r"Server accepts key: hashike-ecdsa ECDSA SHA256:\S+ agent", result.stderr), (
        result.stderr
    )
    assert_clean(server)


def test_wrong_key_is_denied(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path]
) -> None:
    server = start_hashiked()
    result = attempt(ssh_client, server.port, identity=user_keys["stranger0"], args=())
    assert result.returncode == 255
    assert "Permission denied (publickey)." in result.stderr
    assert "Authenticated to" not in result.stderr
    assert_clean(server)


def test_max_auth_tries(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path]
) -> None:
    server = start_hashiked("MaxAuthTries=2")
    strangers = [arg for i in range(3) for arg in ("-i", str(user_keys[f"stranger{i}"]))]
    result = attempt(ssh_client, server.port, args=strangers)
    assert result.returncode == 255
    assert "Too many authentication failures" in result.stderr, result.stderr
    assert_clean(server)


def test_banner_is_shown(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path], tmp_path: Path
) -> None:
    banner = tmp_path / "banner"
    banner.write_text("Authorized use only.\n")
    server = start_hashiked(f"Banner={banner}")
    result = attempt(ssh_client, server.port, identity=user_keys["ed25519"])
    assert result.method == "publickey"
    assert "Authorized use only." in result.stderr


# --- passwords ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["password", "keyboard-interactive"])
def test_password_login(
    start_hashiked: StartHashiked, ssh_client: SshClient, password_file: Path, tmp_path: Path, method: str
) -> None:
    server = start_hashiked(f"PasswordFile={password_file}", "PasswordAuthentication=yes")
    result = attempt(
        ssh_client, server.port, options=password_options(method), env=askpass_env(tmp_path, PASSWORD)
    )
    assert result.method == method, result.stderr
    log = server.log_text()
    assert re.search(rf"Accepted {method} for {re.escape(USER)} from 127\.0\.0\.1 port \d+ ssh2", log), log
    assert PASSWORD not in log
    assert_clean(server)


@pytest.mark.parametrize("method", ["password", "keyboard-interactive"])
def test_wrong_password_is_denied(
    start_hashiked: StartHashiked, ssh_client: SshClient, password_file: Path, tmp_path: Path, method: str
) -> None:
    server = start_hashiked(f"PasswordFile={password_file}", "PasswordAuthentication=yes")
    result = attempt(
        ssh_client,
        server.port,
        options=password_options(method),
        env=askpass_env(tmp_path, "wrong password"),
        args=(),
    )
    assert result.returncode == 255
    assert "Permission denied (publickey,password,keyboard-interactive)." in result.stderr, result.stderr
    log = server.log_text()
    assert re.search(rf"Failed {method} for {re.escape(USER)} from 127\.0\.0\.1 port \d+ ssh2", log), log
    assert "wrong password" not in log
    assert_clean(server)


def test_passwords_are_off_by_default(
    start_hashiked: StartHashiked, ssh_client: SshClient, password_file: Path, tmp_path: Path
) -> None:
    # A PasswordFile alone offers no password method: PasswordAuthentication is no.
    server = start_hashiked(f"PasswordFile={password_file}")
    result = attempt(
        ssh_client, server.port, options=password_options("password"), env=askpass_env(tmp_path, PASSWORD)
    )
    assert result.returncode == 255
    assert "Permission denied (publickey)." in result.stderr


# --- no user enumeration ------------------------------------------------------------

# What the server said, as ssh -vvv reports it: message types received, the
# methods that can continue, and the verdict. Nothing names the user.
_REPLY_LINE = re.compile(
    r"receive packet: type \d+|Authentications that can continue: \S+|Permission denied \(\S+\)"
    r"|Server accepts key|Received disconnect.*"
)


def replies(result: Attempt) -> list[str]:
    return [m.group(0) for line in result.stderr.splitlines() if (m := _REPLY_LINE.search(line))]


def test_unknown_user_and_wrong_key_look_the_same(
    start_hashiked: StartHashiked, ssh_client: SshClient, user_keys: dict[str, Path]
) -> None:
    server = start_hashiked()
    # The unknown user even offers a key that is in authorized_keys.
    unknown = attempt(
        ssh_client, server.port, user="nobody-here", identity=user_keys["ed25519"], args=["-vvv"]
    )
    known = attempt(ssh_client, server.port, identity=user_keys["stranger0"], args=["-vvv"])
    assert unknown.returncode == known.returncode == 255
    assert replies(unknown) == replies(known)
    assert "Permission denied (publickey)" in replies(known)
    assert "Invalid user nobody-here from 127.0.0.1" in server.log_text()
    assert_clean(server)


@pytest.mark.parametrize("method", ["password", "keyboard-interactive"])
def test_unknown_user_and_wrong_password_look_the_same(
    start_hashiked: StartHashiked, ssh_client: SshClient, password_file: Path, tmp_path: Path, method: str
) -> None:
    server = start_hashiked(f"PasswordFile={password_file}", "PasswordAuthentication=yes")
    env = askpass_env(tmp_path, "wrong password")
    options = password_options(method)
    unknown = attempt(ssh_client, server.port, user="nobody-here", options=options, env=env, args=["-vvv"])
    known = attempt(ssh_client, server.port, options=options, env=env, args=["-vvv"])
    assert unknown.returncode == known.returncode == 255
    assert replies(unknown) == replies(known)
    assert "Permission denied (publickey,password,keyboard-interactive)" in replies(known)
    assert f"Failed {method} for invalid user nobody-here from 127.0.0.1" in server.log_text()
    assert_clean(server)


# --- hashiked startup with authentication settings -------------------------------------


def run_hashiked(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """hashiked with settings that make it fail at startup (it would otherwise serve)."""
    host_key = tmp_path / "startup_host_key"
    if not host_key.exists():
        keygen = find_binary("ssh-keygen")
        assert keygen is not None
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True, timeout=60)
    argv = [sys.executable, "-m", "hashike.cli.server", "-p", "0", "-h", str(host_key)]
    argv += ["-o", "ListenAddress=127.0.0.1"]
    for option in options:
        argv += ["-o", option]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


def test_missing_password_file_is_a_startup_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    result = run_hashiked(tmp_path, f"PasswordFile={missing}", "PasswordAuthentication=yes")
    assert result.returncode == 255
    assert result.stderr == f"hashiked: PasswordFile {missing}: No such file or directory\n"


def test_missing_banner_is_a_startup_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    result = run_hashiked(tmp_path, f"Banner={missing}")
    assert result.returncode == 255
    assert result.stderr == f"hashiked: Banner {missing}: No such file or directory\n"


def test_bad_auth_keyword_is_a_startup_error(tmp_path: Path) -> None:
    result = run_hashiked(tmp_path, "PasswordAuthentication=maybe")
    assert result.returncode == 255
    assert result.stderr == 'hashiked: command-line line 0: unsupported option "maybe".\n'


def test_startup_warnings(start_hashiked: StartHashiked, tmp_path: Path) -> None:
    bad = tmp_path / "passwords"
    bad.write_text(f"{USER}:not-a-hash\n")
    server = start_hashiked(f"PasswordFile={bad}", "PubkeyAuthentication=no")
    log = server.log_text()
    assert f"{bad} line 1: not a bcrypt hash ($2b$...): ignored" in log
    assert "no authentication method is enabled: nobody can log in" in log
    other = start_hashiked("PasswordAuthentication=yes")
    assert "PasswordAuthentication yes has no effect without a PasswordFile" in other.log_text()
