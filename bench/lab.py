"""The benchmarks' lab: everything on 127.0.0.1, in processes of its own.

A temporary directory holds one host key and one authorized client key, the
known_hosts file for them and each server's config and log; hashiked runs as
its CLI (``python -m hashike.cli.server``), OpenSSH's sshd as ``sshd -D -e -f
cfg`` on a free port. CPU time comes from ``/proc/PID/stat`` summed over a
process tree; the machine's busy time from ``/proc/stat``. Every wait for a
process is bounded by a fixed deadline."""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hashike.keys.keypair import generate_private_key, write_private_key

HOST = "127.0.0.1"
MiB = 1 << 20
GiB = 1 << 30
CHUNK = MiB  # the sender's preallocated buffer, and the sink's
WARMUP_BYTES = 32 * MiB
STARTUP_TIMEOUT = 20.0  # a server listening, or a tunnel answering
STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.002  # between attempts to connect to a tunnel not up yet
MAX_REPLY = 64  # the sink's answer is a decimal count and a newline
# Bytecode of the Python processes started here, outside the source tree.
PYCACHE = Path(tempfile.gettempdir()) / "hashike-bench-pycache"

# --- /proc ---------------------------------------------------------------------------

_TICK = float(os.sysconf("SC_CLK_TCK"))


class Proc(NamedTuple):
    """One process's line of /proc/PID/stat, the fields measured here."""

    ppid: int
    cpu: float  # utime + stime, seconds, all threads
    faults: int  # minflt + majflt: page faults, minor (no I/O) and major


def process_table() -> dict[int, Proc]:
    """pid -> its parent, CPU seconds and page faults so far, from /proc."""
    table: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
        except OSError:
            continue  # gone since scandir
        # Field 2 (the name) may hold spaces and ')'; the rest follow the last ')'.
        # After it: [0] state, [1] ppid, [7] minflt, [9] majflt, [11] utime,
        # [12] stime (fields 3, 4, 10, 12, 14, 15 of proc(5)).
        fields = text[text.rfind(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICK
        table[int(entry.name)] = Proc(int(fields[1]), cpu, int(fields[7]) + int(fields[9]))
    return table


def descendants(pid: int, table: dict[int, Proc]) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, proc in table.items():
        children.setdefault(proc.ppid, []).append(child)
    found: list[int] = []
    stack = [pid]
    while stack and len(found) < len(table):  # bounded even if /proc raced into a cycle
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def tree_cpu(pid: int, table: dict[int, Proc]) -> float:
    """CPU seconds of ``pid`` and every process below it."""
    return sum(table[p].cpu for p in (pid, *descendants(pid, table)) if p in table)


def tree_faults(pid: int, table: dict[int, Proc]) -> int:
    """Page faults (minor + major) of ``pid`` and every process below it."""
    return sum(table[p].faults for p in (pid, *descendants(pid, table)) if p in table)


def machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK  # user..steal; guest is already in user


def status_kib(pid: int, path: str, name: str) -> int:
    """A ``Name:   N kB`` field of /proc/PID/``path`` (``status``: VmRSS, VmHWM;
    ``smaps_rollup``: Pss), 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --- processes -------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (callers retry on the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """TERM the process and everything it forked (sshd's per-connection children
    start sessions of their own and outlive the listener); KILL what lingers."""
    if process.poll() is not None:
        return
    pids = [*descendants(process.pid, process_table()), process.pid]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)
    deadline = time.monotonic() + STOP_TIMEOUT
    for pid in pids[:-1]:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid):
            _signal(pid, signal.SIGKILL)


def tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""


# --- the lab: keys, servers, known_hosts ------------------------------------------------


@dataclass
class Server:
    """A running hashiked or sshd on 127.0.0.1."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Lab:
    """A temporary directory with one host key, one client key that may log in
    as ``user``, and a known_hosts file naming every server started."""

    directory: Path
    user: str
    host_key: Path
    client_key: Path
    authorized_keys: Path
    known_hosts: Path
    ssh: str | None
    sshd: str | None
    host_key_line: str
    env: dict[str, str]  # for the Python processes started here
    servers: dict[str, Server] = field(default_factory=dict)

    def add_known_host(self, port: int) -> None:
        with open(self.known_hosts, "a") as f:
            f.write(f"[{HOST}]:{port} {self.host_key_line}\n")


def _openssh(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def python_env(bytecode_cache: bool = True) -> dict[str, str]:
    """The environment of the Python processes started here.

    With ``bytecode_cache``, bytecode is written and read as for an installed
    program (pip compiles it at install time), but under PYCACHE rather than
    in the source tree: without it, a PYTHONDONTWRITEBYTECODE=1 environment
    recompiles every module at every start. Otherwise: this process's own."""
    env = dict(os.environ)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


@contextlib.contextmanager
def lab(keep: bool = False, bytecode_cache: bool = True) -> Iterator[Lab]:
    """A Lab whose servers are stopped, and whose directory is removed, on exit."""
    env = python_env(bytecode_cache)
    if bytecode_cache:  # fill the cache before anything is timed
        subprocess.run(
            [sys.executable, "-c", "import hashike.cli.client, hashike.cli.server"],
            env=env,
            check=True,
            timeout=120,
        )
    directory = Path(tempfile.mkdtemp(prefix="hashike-bench-"))
    try:
        host_key = generate_private_key(comment="bench host key")
        client_key = generate_private_key(comment="bench client key")
        write_private_key(host_key, directory / "host_ed25519")
        write_private_key(client_key, directory / "id_ed25519")
        authorized_keys = directory / "authorized_keys"
        authorized_keys.write_text(client_key.public_key.openssh_line() + "\n")
        known_hosts = directory / "known_hosts"
        known_hosts.write_text("")
        the_lab = Lab(
            directory=directory,
            user=pwd.getpwuid(os.geteuid()).pw_name,
            host_key=directory / "host_ed25519",
            client_key=directory / "id_ed25519",
            authorized_keys=authorized_keys,
            known_hosts=known_hosts,
            ssh=_openssh("ssh"),
            sshd=_openssh("sshd"),
            host_key_line=host_key.public_key.openssh_line(),
            env=env,
        )
        try:
            yield the_lab
        finally:
            for server in the_lab.servers.values():
                server.stop()
    finally:
        if keep:
            print(f"kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)


def read_line(stream: Any, timeout: float) -> str:
    """One line from a pipe, or '' after ``timeout`` (the reader thread is a daemon)."""
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0].decode(errors="replace") if line else ""


def start_hashiked(the_lab: Lab, options: Sequence[str] = (), name: str = "hashiked") -> Server:
    """``python -m hashike.cli.server -p 0 ... -o OPTION...``; the port comes from its first line."""
    log = the_lab.directory / f"{name.replace(' ', '-')}.log"
    argv = [
        sys.executable, "-m", "hashike.cli.server", "-p", "0", "-h", str(the_lab.host_key),
        "-o", f"ListenAddress={HOST}",
        "-o", f"AuthorizedKeysFile={the_lab.authorized_keys}",
        "-o", f"AllowUsers={the_lab.user}",
        *(arg for option in options for arg in ("-o", option)),
    ]  # fmt: skip
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file, env=the_lab.env
        )
    line = read_line(process.stdout, STARTUP_TIMEOUT)
    found = re.search(r"listening on \S+ port (\d+)", line)
    if found is None:
        stop_process(process)
        raise RuntimeError(f"hashiked did not start: {line.strip()!r}; log: {tail(log)}")
    # stdout stays open and unread: hashiked prints nothing more there.
    return Server(name, int(found.group(1)), process, log)


def _banner(port: int) -> bytes | None:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data
    except OSError:
        return None


def start_sshd(the_lab: Lab) -> Server:
    """A private ``sshd -D -e -f cfg`` on a free port (retried if another program wins it)."""
    if the_lab.sshd is None:
        raise RuntimeError("sshd not found")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation needs it
    config = the_lab.directory / "sshd_config"
    log = the_lab.directory / "sshd.log"
    for _attempt in range(5):
        port = free_port()
        config.write_text(
            "\n".join([
                f"ListenAddress {HOST}",
                f"Port {port}",
                f"HostKey {the_lab.host_key}",
                f"PidFile {the_lab.directory / 'sshd.pid'}",
                f"AuthorizedKeysFile {the_lab.authorized_keys}",
                f"AllowUsers {the_lab.user}",
                "UsePAM no",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "AllowTcpForwarding yes",
                "LogLevel INFO",
            ]) + "\n"
        )  # fmt: skip
        check = subprocess.run(
            [the_lab.sshd, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejected its config: {check.stderr.strip()}")
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [the_lab.sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            banner = _banner(port)
            if banner is not None and process.poll() is None:
                if banner.startswith(b"SSH-2.0-OpenSSH"):
                    return Server("sshd", port, process, log)
                break  # someone else's server won the port
            time.sleep(0.05)
        stop_process(process)
    raise RuntimeError(f"sshd did not start; log: {tail(log)}")


def start_server(the_lab: Lab, name: str, options: Sequence[str] = ()) -> Server:
    """Start ``sshd``, or a hashiked called ``name`` with ``-o`` ``options``
    (e.g. ``Workers=2``), once per lab, and record it in known_hosts."""
    if name not in the_lab.servers:
        server = start_sshd(the_lab) if name == "sshd" else start_hashiked(the_lab, options, name)
        the_lab.servers[name] = server
        the_lab.add_known_host(server.port)
    return the_lab.servers[name]


def output_options(p: argparse.ArgumentParser, tables: str = "a Markdown table") -> None:
    """--json, --keep and --quiet, as every benchmark that starts servers takes them."""
    p.add_argument("--json", action="store_true", help=f"print JSON instead of {tables}")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
