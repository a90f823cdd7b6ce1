"""``PrivilegeSeparation yes``: OpenSSH's ssh against hashiked run as root
with ``Workers 2``, logging in as two local accounts made for the module.

Who serves a connection is read from the kernel, as in test_workers.py: the
process holding the established socket on the server's port, and its
credentials in /proc/PID/status.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import pwd
import re
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hashike.cli.netstat import children, tcp_sockets
from tests.helpers import eventually_sync
from tests.interop.conftest import free_port
from tests.interop.test_auth_openssh_to_hashiked import askpass_env, password_options
from tests.interop.test_forward_openssh_to_hashiked import (
    BackgroundLoop,
    FarSide,
    Hashiked,
    SshProcess,
    echo_digest_server,
    keygen,
    public_line,
    server_port,
    ssh_forwards,
    start_hashiked,
    upload_and_echo,
)
from tests.interop.test_server_status import short_dir, status_json  # noqa: F401 (short_dir: a fixture)
from tests.interop.test_workers import read_forward, served_by, target

if TYPE_CHECKING:
    from tests.interop.conftest import SshClient

pytestmark = pytest.mark.interop

DEADLINE = 30.0
USERS = ("hashikeps1", "hashikeps2")
NO_ACCOUNT = "hashikeps-nobody"
# One line, the session's uid and whether it can read its parent's memory;
# then a session that waits for its stdin's end.
PROBE = (
    'echo "$(id -u) $(cat /proc/$PPID/environ >/dev/null 2>&1 && echo readable || echo unreadable)"; exec cat'
)


@dataclass
class Accounts:
    directory: Path
    host_key: Path
    client_key: Path
    users: dict[str, pwd.struct_passwd]

    def keys_file(self) -> Path:
        """AuthorizedKeysFile: each account's own file, then one per name in
        our directory, which also authorizes the client key for root and for
        a name with no account (so that their refusal is the server's)."""
        return Path(f"%h/.ssh/authorized_keys {self.directory}/%u.keys")


def _make_account(name: str, client_key: Path) -> pwd.struct_passwd:
    subprocess.run(["userdel", "-r", name], capture_output=True, timeout=30)  # a previous run's
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True, timeout=30)
    entry = pwd.getpwnam(name)
    ssh_dir = Path(entry.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(public_line(client_key) + "\n")
    keys.chmod(0o600)
    for path in (ssh_dir, keys):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return entry


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Accounts]:
    if os.geteuid() != 0:
        pytest.fail("PrivilegeSeparation tests create local accounts and need root (CI runs as root)")
    directory = tmp_path_factory.mktemp("privsep")
    client_key = keygen(directory / "id_ed25519")
    for name in ("root", NO_ACCOUNT):
        (directory / f"{name}.keys").write_text(public_line(client_key) + "\n")
    try:
        users = {name: _make_account(name, client_key) for name in USERS}
        yield Accounts(directory, keygen(directory / "host_ed25519"), client_key, users)
    finally:
        for name in USERS:
            subprocess.run(["userdel", "-r", name], capture_output=True, timeout=30)


def start(accounts: Accounts, tmp_path: Path, *options: str) -> Hashiked:
    return start_hashiked(
        tmp_path, accounts.host_key, accounts.keys_file(), "PrivilegeSeparation=yes", "Workers=2", *options
    )


@pytest.fixture
def hashiked(accounts: Accounts, tmp_path: Path) -> Iterator[Hashiked]:
    server = start(accounts, tmp_path)
    try:
        yield server
    finally:
        server.stop()


def status_ids(pid: int) -> tuple[list[int], list[int]]:
    """The four uids and four gids of /proc/PID/status (real, effective, saved, filesystem)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return [int(n) for n in fields["Uid"].split()], [int(n) for n in fields["Gid"].split()]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def connection_process(server: Hashiked, uid: int) -> int | None:
    """The one process of ``uid`` that holds a connection to the server, if
    there is exactly one."""
    owners = {pid for pid in served_by(server.port) if status_ids(pid)[0][0] == uid}
    return owners.pop() if len(owners) == 1 else None


def wait_for_connection_process(server: Hashiked, uid: int) -> int:
    eventually_sync(lambda: connection_process(server, uid) is not None, DEADLINE, what=f"a process of {uid}")
    pid = connection_process(server, uid)
    assert pid is not None
    return pid


def remote_forward(
    ssh_client: SshClient, port: int, user: str, identity: Path, listen: int, to: int
) -> SshProcess:
    """``ssh -v -N -R listen:127.0.0.1:to`` as ``user``, running; the caller stops it."""
    argv = ssh_client.argv(
        port,
        user=user,
        identity=identity,
        options={"ExitOnForwardFailure": "yes"},
        args=["-v", "-N", "-R", f"{listen}:127.0.0.1:{to}"],
    )
    return SshProcess.start(argv)


def read_line(process: subprocess.Popen[str], timeout: float = DEADLINE) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "no output from ssh"
    return process.stdout.readline()


def test_each_user_is_served_by_a_process_of_their_own(
    hashiked: Hashiked, accounts: Accounts, ssh_client: SshClient
) -> None:
    sessions = {
        name: subprocess.Popen(
            ssh_client.argv(hashiked.port, PROBE, user=name, identity=accounts.client_key),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in USERS
    }
    try:
        supervisor = hashiked.process.pid
        workers = children(supervisor)
        assert len(workers) == 2
        for pid in [supervisor, *workers]:
            assert status_ids(pid) == ([0] * 4, [0] * 4)
        served: dict[str, int] = {}
        for name, process in sessions.items():
            entry = accounts.users[name]
            # The session's parent, the connection's process, is the user's,
            # yet the user cannot read it: setuid made it non-dumpable.
            assert read_line(process) == f"{entry.pw_uid} unreadable\n"
            pid = wait_for_connection_process(hashiked, entry.pw_uid)
            assert status_ids(pid) == ([entry.pw_uid] * 4, [entry.pw_gid] * 4)
            assert parent_of(pid) in workers
            served[name] = pid
        # Each holds its own connection and nothing else of the worker's:
        # not the other user's, though one worker may have forked both.
        for name, pid in served.items():
            held = [s for s in tcp_sockets([pid]) if hashiked.port in (s.local[1], s.remote[1])]
            assert len(held) == 1, (name, held)
        assert len(set(served.values())) == 2
    finally:
        for process in sessions.values():
            process.communicate(timeout=DEADLINE)
    assert all(process.returncode == 0 for process in sessions.values())
    hashiked.assert_healthy()


@pytest.mark.parametrize("method", ["password", "keyboard-interactive"])
def test_a_password_login_drops_too(
    accounts: Accounts, tmp_path: Path, ssh_client: SshClient, method: str
) -> None:
    # bcrypt runs in a worker's thread: the fork happens with that thread
    # alive, from the task that waited for it.
    name, entry = USERS[0], accounts.users[USERS[0]]
    password = "Correct-Horse-7"
    line = subprocess.run(
        [sys.executable, "-m", "hashike.cli.keygen", "-P", name],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    ).stdout
    (tmp_path / "passwords").write_text(line)
    server = start(accounts, tmp_path, f"PasswordFile={tmp_path / 'passwords'}", "PasswordAuthentication=yes")
    try:
        argv = ssh_client.argv(server.port, "id -u", user=name, options=password_options(method))
        login = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **askpass_env(tmp_path, password)},
            start_new_session=True,  # no terminal: ssh asks SSH_ASKPASS
        )
        assert (login.returncode, login.stdout) == (0, f"{entry.pw_uid}\n"), login.stderr
        assert f"Accepted {method} for {name} from 127.0.0.1" in server.log_text()
        server.assert_healthy()
    finally:
        server.stop()


def test_rekeys_after_the_drop_are_signed_by_the_worker(
    accounts: Accounts, tmp_path: Path, ssh_client: SshClient, background: BackgroundLoop
) -> None:
    server = start(accounts, tmp_path, "RekeyLimit=1M")
    seen: concurrent.futures.Future[FarSide] = concurrent.futures.Future()
    echo = background.run(echo_digest_server(seen))
    try:
        ssh, (local,) = ssh_forwards(
            ssh_client, server.port, accounts.client_key, [server_port(echo)], user=USERS[0]
        )
        try:
            result = upload_and_echo(local, 8)
        finally:
            ssh.stop()
        # hashiked starts each rekey after 1 MiB; ssh -v logs every KEXINIT it gets.
        rekeys = ssh.count(r"SSH2_MSG_KEXINIT received") - 1
    finally:
        echo.close()
        server.stop()
    assert result.echo_digest == result.sent_digest == seen.result(DEADLINE).digest
    assert rekeys >= 8, ssh.stderr
    log = server.log_text()
    assert "signer" not in log and "Disconnecting" not in log and "Traceback" not in log, log


@pytest.fixture(scope="module")
def background() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    try:
        yield loop
    finally:
        loop.close()


def test_remote_forwards_are_the_users(hashiked: Hashiked, accounts: Accounts, ssh_client: SshClient) -> None:
    refused = ssh_client.run(
        hashiked.port,
        "true",
        user=USERS[0],
        identity=accounts.client_key,
        options={"ExitOnForwardFailure": "yes"},
        args=["-R", "80:127.0.0.1:9"],
    )
    assert refused.returncode == 255
    assert "remote port forwarding failed for listen port 80" in refused.stderr
    with target(b"from far") as far:
        listen = free_port()
        client = remote_forward(ssh_client, hashiked.port, USERS[0], accounts.client_key, listen, far)
        try:
            assert client.wait_for(re.escape(f"remote forward success for: listen {listen}")), client.stderr
            assert read_forward(listen) == b"from far"
            pid = connection_process(hashiked, accounts.users[USERS[0]].pw_uid)
            assert pid is not None
            assert any(s.state == "LISTEN" and s.local[1] == listen for s in tcp_sockets([pid]))
        finally:
            client.stop()
    hashiked.assert_healthy()


def test_status_lists_the_users_connection_processes(
    accounts: Accounts,
    tmp_path: Path,
    short_dir: Path,  # noqa: F811
    ssh_client: SshClient,
) -> None:
    sock = short_dir / "run" / "status"
    server = start(accounts, tmp_path, f"StatusSocket={sock}")
    name, entry = USERS[0], accounts.users[USERS[0]]
    listen = free_port()
    client = remote_forward(ssh_client, server.port, name, accounts.client_key, listen, 9)
    try:
        assert client.wait_for(re.escape(f"remote forward success for: listen {listen}")), client.stderr
        pid = wait_for_connection_process(server, entry.pw_uid)
        # Asked through the supervisor, its workers and the worker's child.
        document = status_json(sock)
        (connection,) = document["connections"]
        assert (connection["pid"], connection["user"]) == (pid, name)
        assert connection["pid"] not in document["workers"]
        (listener,) = connection["listeners"]
        assert f"127.0.0.1:{listen}" in listener["listen"].split(", ")
        # A process that does not answer is left out, with a line in the log.
        os.kill(pid, signal.SIGSTOP)
        try:
            stopped = status_json(sock)
            assert (stopped["connections"], stopped["errors"]) == ([], [])  # the worker answered
        finally:
            os.kill(pid, signal.SIGCONT)
        assert f"status: connection process {pid}:" in server.log_text()
        assert status_json(sock)["connections"][0]["pid"] == pid
    finally:
        client.stop()
        server.stop()
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize("name", ["root", NO_ACCOUNT])
def test_root_and_names_without_an_account_are_refused(
    hashiked: Hashiked, accounts: Accounts, ssh_client: SshClient, name: str
) -> None:
    # Both have the client key in ACCOUNTS.directory/NAME.keys.
    login = ssh_client.run(hashiked.port, "id -u", user=name, identity=accounts.client_key)
    assert login.returncode == 255
    assert f"{name}@127.0.0.1: Permission denied (publickey)." in login.stderr
    assert login.stdout == ""
    assert f"Invalid user {name} from 127.0.0.1" in hashiked.log_text()
    hashiked.assert_healthy()


def test_a_connection_outlives_a_killed_worker(
    hashiked: Hashiked, accounts: Accounts, ssh_client: SshClient, tmp_path: Path
) -> None:
    name, entry = USERS[1], accounts.users[USERS[1]]
    control = {"ControlPath": str(tmp_path / "cm")}
    master = subprocess.Popen(
        ssh_client.argv(
            hashiked.port,
            user=name,
            identity=accounts.client_key,
            options={**control, "ControlMaster": "yes"},
            args=["-N"],
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        pid = wait_for_connection_process(hashiked, entry.pw_uid)
        worker = parent_of(pid)
        os.kill(worker, signal.SIGKILL)
        eventually_sync(lambda: f"worker {worker} died with signal 9" in hashiked.log_text(), DEADLINE)
        # The supervisor, its subreaper, has it now.
        assert parent_of(pid) == hashiked.process.pid
        second = ssh_client.run(
            hashiked.port, "id -un", user=name, identity=accounts.client_key, options=control
        )
        assert (second.returncode, second.stdout) == (0, f"{name}\n"), second.stderr
        ended = ssh_client.run(hashiked.port, user=name, options=control, args=["-O", "exit"])
        assert ended.returncode == 0, ended.stderr
        master.wait(DEADLINE)
        # Gone, not a zombie: its /proc entry goes once it is reaped.
        eventually_sync(lambda: not Path(f"/proc/{pid}").exists(), DEADLINE, what=f"process {pid} reaped")
    finally:
        if master.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(master.pid, signal.SIGKILL)
            master.wait(DEADLINE)
        if master.stderr is not None:
            master.stderr.close()
    hashiked.assert_healthy()


def test_needs_root(accounts: Accounts, tmp_path: Path) -> None:
    # As a test user, hashiked itself: runuser cannot run this interpreter
    # when it lives under /root, so the process drops to the user after
    # loading it (and what argparse loads late) and before hashiked's main runs.
    entry = accounts.users[USERS[0]]
    drop = (
        "import os, shutil, sys; import hashike.cli.server as server; "
        f"os.setgroups([]); os.setgid({entry.pw_gid}); os.setuid({entry.pw_uid}); "
        "sys.exit(server.main(sys.argv[1:]))"
    )
    key = tmp_path / "host_key"
    shutil.copy(accounts.host_key, key)
    os.chown(key, entry.pw_uid, entry.pw_gid)
    # Without pytest-cov's subprocess hook: as the test user, coverage could
    # not save its data at exit and would add a traceback to stderr.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE_", "COVERAGE_"))}
    result = subprocess.run(
        [sys.executable, "-c", drop, "-p", "0", "-h", str(key), "-o", "PrivilegeSeparation yes"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd="/",
        env=env,
    )
    assert (
        result.stderr
        == f"hashiked: PrivilegeSeparation yes needs root; hashiked runs as uid {entry.pw_uid}\n"
    )
    assert (result.returncode, result.stdout) == (255, "")


def test_a_rekey_without_its_signer_ends_the_connection(
    accounts: Accounts, tmp_path: Path, ssh_client: SshClient
) -> None:
    server = start(accounts, tmp_path, "RekeyLimit=1M")
    name, entry = USERS[0], accounts.users[USERS[0]]
    session = subprocess.Popen(
        ssh_client.argv(server.port, "echo ready; cat >/dev/null", user=name, identity=accounts.client_key),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(session) == "ready\n"
        pid = wait_for_connection_process(server, entry.pw_uid)
        worker = parent_of(pid)
        os.kill(worker, signal.SIGKILL)
        eventually_sync(lambda: f"worker {worker} died with signal 9" in server.log_text(), DEADLINE)
        # 4 MiB: hashiked's next rekey comes after 1 MiB, and nobody signs for it.
        _, err = session.communicate("x" * (4 << 20), timeout=DEADLINE)
        assert session.returncode == 255
        assert "host key signer unavailable" in err, err
        eventually_sync(lambda: not Path(f"/proc/{pid}").exists(), DEADLINE, what=f"process {pid} reaped")
        log = server.log_text()
        assert re.search(r"Disconnecting 127\.0\.0\.1 port \d+: host key signer unavailable\n", log), log
        assert "Traceback" not in log, log
    finally:
        if session.poll() is None:
            session.kill()
            session.communicate(timeout=DEADLINE)
        server.stop()


def test_client_alive_runs_in_the_users_process(
    accounts: Accounts, tmp_path: Path, ssh_client: SshClient
) -> None:
    server = start(accounts, tmp_path, "ClientAliveInterval=1", "ClientAliveCountMax=2")
    name, entry = USERS[1], accounts.users[USERS[1]]
    client = subprocess.Popen(
        ssh_client.argv(server.port, user=name, identity=accounts.client_key, args=["-N"]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pid = wait_for_connection_process(server, entry.pw_uid)
        os.kill(client.pid, signal.SIGSTOP)  # the socket stays open; nothing answers
        eventually_sync(
            lambda: f"Timeout, client not responding from user {name} 127.0.0.1 port" in server.log_text(),
            DEADLINE,
            what="ClientAlive's verdict",
        )
        eventually_sync(lambda: not Path(f"/proc/{pid}").exists(), DEADLINE, what=f"process {pid} reaped")
        server.assert_healthy()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(client.pid, signal.SIGCONT)
        client.kill()
        client.wait(DEADLINE)
        server.stop()


def test_one_process_forks_too(accounts: Accounts, tmp_path: Path, ssh_client: SshClient) -> None:
    server = start_hashiked(
        tmp_path, accounts.host_key, accounts.keys_file(), "PrivilegeSeparation=yes", "Workers=1"
    )
    name, entry = USERS[0], accounts.users[USERS[0]]
    session = subprocess.Popen(
        ssh_client.argv(server.port, "id -u; exec cat", user=name, identity=accounts.client_key),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(session) == f"{entry.pw_uid}\n"
        pid = wait_for_connection_process(server, entry.pw_uid)
        assert parent_of(pid) == server.process.pid
        # It holds its connection, not the server's listener.
        assert [s.state for s in tcp_sockets([pid])] == ["ESTABLISHED"]
    finally:
        session.communicate(timeout=DEADLINE)
        server.stop()
    assert session.returncode == 0
    assert "Traceback" not in server.log_text()


def test_a_draining_worker_stays_for_its_connection_processes(
    accounts: Accounts, tmp_path: Path, ssh_client: SshClient
) -> None:
    server = start(accounts, tmp_path, "RekeyLimit=1M")
    name, entry = USERS[0], accounts.users[USERS[0]]
    session = subprocess.Popen(
        ssh_client.argv(server.port, "echo ready; sha256sum", user=name, identity=accounts.client_key),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert session.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(session.stdout, selectors.EVENT_READ)
            assert selector.select(DEADLINE), "no output from ssh"
        assert session.stdout.readline() == b"ready\n"
        pid = wait_for_connection_process(server, entry.pw_uid)
        old, originals = parent_of(pid), set(children(server.process.pid))
        os.kill(server.process.pid, signal.SIGHUP)
        eventually_sync(
            lambda: len(set(children(server.process.pid)) - originals) == 2, DEADLINE, what="two new workers"
        )
        assert old in children(server.process.pid)
        # Drained of connections, the old worker still signs the rekeys of
        # this one (after every MiB of the 4).
        data = os.urandom(4 << 20)
        out, err = session.communicate(data, timeout=DEADLINE)
        assert session.returncode == 0, err
        assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
        eventually_sync(
            lambda: old not in children(server.process.pid), DEADLINE, what="the old worker's exit"
        )
    finally:
        if session.poll() is None:
            session.kill()
            session.communicate(timeout=DEADLINE)
        server.stop()
    log = server.log_text()
    assert "Received SIGHUP; restarting workers." in log and "signer" not in log, log
    assert "Traceback" not in log, log
