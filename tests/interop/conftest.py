"""Fixtures that drive the real OpenSSH binaries: an ``sshd`` per test and an ``ssh`` runner.

Theory of operation. ``start_sshd(*lines, **options)`` starts a private sshd
on 127.0.0.1 and a port chosen at run time, in a temporary directory of its
own: its config, host keys (ed25519, ECDSA P-256, RSA 3072), an
authorized_keys file holding a client key, its pid file and its log. It
returns once the port answers with an ``SSH-2.0-OpenSSH`` banner, and stops
sshd (and the per-connection children it forked) when the test ends. Keys are
generated once per session and copied into each server's directory, since RSA
key generation is slow.

sshd keeps the *first* value it reads for most keywords, so the caller's lines
go at the top of the config, before this module's defaults, and the caller's
``Match`` blocks (which must come last) at the bottom.

Every test under tests/interop gets the ``interop`` mark. Missing binaries
skip those tests, unless ``HASHIKE_REQUIRE_INTEROP=1`` (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

__all__ = [
    "KEY_TYPES",
    "SshClient",
    "SshdServer",
    "StartSshd",
    "find_binary",
    "free_port",
    "interop_required",
    "openssh_ciphers",
    "openssh_kex",
    "openssh_key_types",
    "openssh_macs",
    "openssh_version",
    "require_openssh",
    "ssh_query",
]

HOST = "127.0.0.1"
# Host key types the fixture generates: name -> ssh-keygen arguments.
KEY_TYPES: dict[str, tuple[str, ...]] = {
    "ed25519": ("-t", "ed25519"),
    "ecdsa": ("-t", "ecdsa", "-b", "256"),
    "rsa": ("-t", "rsa", "-b", "3072"),
}
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_BIND_FAILURE = re.compile(r"Bind to port \d+ .* failed|Cannot bind any address|Address already in use")
_INTEROP_DIR = Path(__file__).resolve().parent


# --- finding OpenSSH ------------------------------------------------------------


def interop_required() -> bool:
    """True when interop tests must run (CI sets HASHIKE_REQUIRE_INTEROP=1)."""
    return os.environ.get("HASHIKE_REQUIRE_INTEROP", "") not in ("", "0")


def find_binary(name: str) -> str | None:
    """Absolute path of an OpenSSH program. ``HASHIKE_OPENSSH_PATH``, if set, is
    the only place searched (to test against another build); otherwise PATH and
    the sbin directories, since sshd is often not on PATH."""
    search = os.environ.get("HASHIKE_OPENSSH_PATH")
    if search is None:
        search = os.pathsep.join(filter(None, (os.environ.get("PATH"), "/usr/sbin:/usr/local/sbin:/sbin")))
    found = shutil.which(name, path=search)
    return os.path.abspath(found) if found else None


def require_openssh(*names: str) -> dict[str, str]:
    """Paths of the named programs (default: ssh, sshd, ssh-keygen, ssh-keyscan).

    Skips the test when one is missing, or fails it when interop is required.
    """
    names = names or ("ssh", "sshd", "ssh-keygen", "ssh-keyscan")
    paths = {name: find_binary(name) for name in names}
    missing = sorted(name for name, path in paths.items() if path is None)
    if missing:
        message = f"OpenSSH programs not found: {', '.join(missing)} (Debian: openssh-server openssh-client)"
        if interop_required():
            pytest.fail(f"HASHIKE_REQUIRE_INTEROP is set but {message}", pytrace=False)
        pytest.skip(message)
    return {name: path for name, path in paths.items() if path is not None}


@functools.cache
def openssh_version() -> tuple[int, int]:
    """(major, minor) of the installed ssh, e.g. (9, 2); (0, 0) if there is none."""
    ssh = find_binary("ssh")
    if ssh is None:
        return (0, 0)
    out = subprocess.run([ssh, "-V"], capture_output=True, text=True, timeout=10, check=False)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@functools.cache
def ssh_query(what: str) -> tuple[str, ...]:
    """``ssh -Q what`` (cipher, kex, mac, key, HostKeyAlgorithms ...); () without ssh."""
    ssh = find_binary("ssh")
    if ssh is None:
        return ()
    out = subprocess.run([ssh, "-Q", what], capture_output=True, text=True, timeout=10, check=True)
    return tuple(line.strip() for line in out.stdout.splitlines() if line.strip())


def openssh_ciphers() -> tuple[str, ...]:
    return ssh_query("cipher")


def openssh_kex() -> tuple[str, ...]:
    return ssh_query("kex")


def openssh_macs() -> tuple[str, ...]:
    return ssh_query("mac")


def openssh_key_types() -> tuple[str, ...]:
    return ssh_query("HostKeyAlgorithms")


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (the caller must still handle a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


# --- sshd --------------------------------------------------------------------------


@dataclass
class SshdServer:
    """A running OpenSSH sshd. ``host_keys`` maps key type to the private key
    path (``.pub`` beside it); ``client_key`` may log in as ``user``."""

    host: str
    port: int
    directory: Path
    config: Path
    log: Path
    host_keys: dict[str, Path]
    client_key: Path
    authorized_keys: Path
    user: str
    process: subprocess.Popen[bytes]
    _stopped: bool = field(default=False, repr=False)

    def public_key(self, key_type: str) -> tuple[str, str]:
        """(algorithm, base64 blob) of one host key's .pub file."""
        fields = Path(f"{self.host_keys[key_type]}.pub").read_text().split()
        return fields[0], fields[1]

    def known_hosts_line(self, key_type: str = "ed25519") -> str:
        """A known_hosts(5) line for one host key: ``[127.0.0.1]:PORT ssh-ed25519 AAAA...``."""
        alg, blob = self.public_key(key_type)
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{name} {alg} {blob}"

    def known_hosts_lines(self) -> str:
        """known_hosts(5) text with a line for every host key."""
        return "".join(self.known_hosts_line(t) + "\n" for t in self.host_keys)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Stop sshd and the per-connection processes it forked (bounded wait)."""
        if self._stopped:
            return
        self._stopped = True
        # The children sshd forked for connections start their own sessions and
        # outlive the listener, so find them before it goes.
        pids = [*_descendants(self.process.pid), self.process.pid]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        for pid in pids[:-1]:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):
                _signal(pid, signal.SIGKILL)


class StartSshd(Protocol):
    """The ``start_sshd`` fixture: extra config lines, ``Keyword=value`` options,
    and which host key types to configure."""

    def __call__(self, *lines: str, key_types: Sequence[str] = ..., **options: str | int) -> SshdServer: ...


def _descendants(pid: int) -> list[int]:
    """Linux: every process below ``pid``, read from /proc (empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; field 2 (the name) may hold spaces and ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        # A zombie waiting for its (new) parent to reap it counts as gone.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _keygen(keygen: str, path: Path, args: Sequence[str]) -> None:
    subprocess.run(
        [keygen, "-q", *args, "-N", "", "-C", f"hashike-test-{path.name}", "-f", str(path)],
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _banner(host: str, port: int) -> bytes | None:
    """The first line the port sends, or None if it does not accept or answer."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.split(b"\n", 1)[0].rstrip(b"\r")
    except OSError:
        return None


def _config_text(
    *, directory: Path, port: int, host_keys: Mapping[str, Path], lines: Sequence[str], authorized_keys: Path
) -> str:
    # Caller's lines first (sshd: first value wins), their Match blocks last.
    caller = list(lines)
    for line in caller:
        if re.split(r"[\s=]", line.strip(), maxsplit=1)[0].lower() in ("port", "listenaddress"):
            raise ValueError(f"the fixture chooses the address and port itself: {line!r}")
    match_at = next(
        (i for i, ln in enumerate(caller) if ln.strip().lower().startswith("match ")), len(caller)
    )
    defaults = [
        f"ListenAddress {HOST}",
        f"Port {port}",
        *(f"HostKey {path}" for path in host_keys.values()),
        f"PidFile {directory / 'sshd.pid'}",
        "UsePAM no",
        "StrictModes no",
        f"AuthorizedKeysFile {authorized_keys}",
        "LogLevel DEBUG3",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
    ]
    return "\n".join([*caller[:match_at], *defaults, *caller[match_at:]]) + "\n"


@pytest.fixture(scope="session")
def _openssh_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Host keys and a client key, generated once per session."""
    keygen = require_openssh("ssh-keygen")["ssh-keygen"]
    directory = tmp_path_factory.mktemp("openssh-keys")
    keys: dict[str, Path] = {}
    for key_type, args in (*KEY_TYPES.items(), ("client", KEY_TYPES["ed25519"])):
        path = directory / f"ssh_host_{key_type}_key"
        _keygen(keygen, path, args)
        keys[key_type] = path
    return keys


@pytest.fixture
def start_sshd(
    _openssh_keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartSshd]:
    """Factory: ``start_sshd("Ciphers aes128-ctr", KexAlgorithms="curve25519-sha256")``."""
    paths = require_openssh("sshd", "ssh-keygen")
    servers: list[SshdServer] = []

    def start(*lines: str, key_types: Sequence[str] = tuple(KEY_TYPES), **options: str | int) -> SshdServer:
        all_lines = [*lines, *(f"{key} {value}" for key, value in options.items())]
        # pytest's temporary directories: kept for the last few runs, for the logs.
        directory = tmp_path_factory.mktemp("sshd")
        server = _start(paths["sshd"], directory, _openssh_keys, key_types, all_lines)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def _start(
    sshd: str, directory: Path, keys: Mapping[str, Path], key_types: Sequence[str], lines: Sequence[str]
) -> SshdServer:
    if os.geteuid() == 0:
        # sshd's privilege-separation chroot; it refuses to start as root without it.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_keys: dict[str, Path] = {}
    for key_type in key_types:
        host_keys[key_type] = directory / keys[key_type].name
        shutil.copy2(keys[key_type], host_keys[key_type])
        shutil.copy2(f"{keys[key_type]}.pub", f"{host_keys[key_type]}.pub")
    client_key = directory / "id_ed25519"
    shutil.copy2(keys["client"], client_key)
    shutil.copy2(f"{keys['client']}.pub", f"{client_key}.pub")
    authorized_keys = directory / "authorized_keys"
    shutil.copy2(f"{keys['client']}.pub", authorized_keys)
    config = directory / "sshd_config"
    log = directory / "sshd.log"
    failures: list[str] = []
    for _attempt in range(5):
        port = free_port()
        config.write_text(
            _config_text(
                directory=directory,
                port=port,
                host_keys=host_keys,
                lines=lines,
                authorized_keys=authorized_keys,
            )
        )
        # Validate first: a config error is a test bug, not a port race.
        check = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejected its config {config}: {check.stderr.strip()}")
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = SshdServer(
            host=HOST,
            port=port,
            directory=directory,
            config=config,
            log=log,
            host_keys=host_keys,
            client_key=client_key,
            authorized_keys=authorized_keys,
            user=_user(),
            process=process,
        )
        if _wait_ready(server):
            return server
        server.stop()
        text = server.log_text()
        failures.append(text[-2000:])
        if not _BIND_FAILURE.search(text):
            break
    raise RuntimeError(f"sshd did not start within {STARTUP_TIMEOUT}s; log tail:\n{failures[-1]}")


def _wait_ready(server: SshdServer) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        banner = _banner(server.host, server.port)
        # Check sshd is still ours: another program may have won the port.
        if banner is not None and server.process.poll() is None:
            return banner.startswith(b"SSH-2.0-OpenSSH")
        time.sleep(0.05)
    return False


def _user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def sshd_server(start_sshd: StartSshd) -> SshdServer:
    """A running sshd with the default settings."""
    return start_sshd()


# --- ssh -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SshClient:
    """Builds and runs OpenSSH ``ssh`` command lines that ignore the user's config,
    known hosts, agent and keys: everything a test needs is given explicitly."""

    binary: str
    timeout: float = 30.0

    def argv(
        self,
        port: int,
        *command: str,
        host: str = HOST,
        user: str | None = None,
        identity: str | os.PathLike[str] | None = None,
        options: Mapping[str, str | int] | None = None,
        args: Sequence[str] = (),
    ) -> list[str]:
        """``ssh -F /dev/null -o BatchMode=yes ... -p PORT [user@]host [command...]``.

        ``options`` become ``-o Key=value`` and come before the defaults, so
        they win (ssh, too, keeps the first value); ``args`` are raw flags
        such as ``-N``, ``-L 1234:host:80`` or ``-vvv``.
        """
        argv = [self.binary, "-F", "/dev/null"]
        for key, value in (options or {}).items():
            argv += ["-o", f"{key}={value}"]
        argv += [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentityAgent=none",
            "-o", "IdentitiesOnly=yes",
            "-o", f"IdentityFile={os.fspath(identity) if identity is not None else 'none'}",
            "-o", "ConnectTimeout=10",
            "-p", str(port),
        ]  # fmt: skip
        argv += args
        argv.append(f"{user}@{host}" if user else host)
        argv += command
        return argv

    def run(
        self,
        port: int,
        *command: str,
        input: str | None = None,
        timeout: float | None = None,
        check: bool = False,
        host: str = HOST,
        user: str | None = None,
        identity: str | os.PathLike[str] | None = None,
        options: Mapping[str, str | int] | None = None,
        args: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run ssh to completion (bounded by ``timeout``) and capture its output."""
        argv = self.argv(port, *command, host=host, user=user, identity=identity, options=options, args=args)
        return subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout if timeout is None else timeout,
            check=check,
        )


@pytest.fixture
def openssh_paths() -> dict[str, str]:
    """Absolute paths of ssh, sshd, ssh-keygen and ssh-keyscan."""
    return require_openssh()


@pytest.fixture
def ssh_client() -> SshClient:
    """Runs OpenSSH's ssh against a given port (for OpenSSH ssh -> hashiked tests)."""
    return SshClient(require_openssh("ssh")["ssh"])


# --- marks and parametrization --------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # tryfirst: marks must exist before `-m "not interop"` deselects by them.
    for item in items:
        if _INTEROP_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.interop)


_QUERY_FIXTURES = {
    "openssh_cipher": openssh_ciphers,
    "openssh_kex": openssh_kex,
    "openssh_mac": openssh_macs,
    "openssh_key_type": openssh_key_types,
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``openssh_cipher`` (``_kex``, ``_mac``, ``_key_type``) runs once
    for each name ``ssh -Q`` lists. Without ssh it runs once, to be skipped (or
    failed, in CI) by ``require_openssh``."""
    for name, query in _QUERY_FIXTURES.items():
        if name in metafunc.fixturenames:
            values = query() or ("<openssh missing>",)
            metafunc.parametrize(name, values)


@pytest.fixture(autouse=True)
def _interop_binaries() -> None:
    # Every interop test needs OpenSSH: skip or fail before it starts, not midway.
    require_openssh()
