"""``python -m hashike.cli.demo``: the README's first command, the guide's
POP-over-SSH scenario on loopback.

1. ``hashiked`` starts with a fresh host key and one authorized user key;
2. a small POP3 server stands in for the mail server;
3. ``hashike -N -L 40000:127.0.0.1:<pop3 port>`` logs in and forwards;
4. a mail client connects to localhost:40000 and gets ``+OK ... ready``
   from the POP3 server, through the tunnel, then lists and reads mail;
5. a table shows the ports and connections at both ends, like the guide's
   netstat figures.

Every program is a separate process, as it would be on real machines.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hashike.keys.keypair import generate_private_key, write_private_key

from .netstat import Socket, children, tcp_sockets

__all__ = ["main"]

GUIDE_PORT = 40000  # the guide's local port; another free one if taken
TIMEOUT = 20.0


class DemoError(Exception):
    pass


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _first_line(proc: subprocess.Popen[str], what: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise DemoError(f"{what} did not start: {err.strip()}")
    return line.strip()


def _local_port() -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", GUIDE_PORT))
            return GUIDE_PORT
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:  # bounded
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise DemoError(f"hashike exited: {err.strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise DemoError(f"the forward on port {port} did not come up")


def _mail_session(port: int, pids: dict[int, str]) -> list[Socket]:
    """The mail client's dialogue; the socket table is taken mid-session."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
        f = conn.makefile("rwb")

        def say(command: str) -> None:
            print(f"   C: {command}")
            f.write(command.encode() + b"\r\n")
            f.flush()

        def hear() -> bytes:
            line = f.readline()
            print(f"   S: {line.decode(errors='replace').rstrip()}")
            return line

        if not hear().startswith(b"+OK"):
            raise DemoError("no POP3 greeting came through the tunnel")
        say("USER a70099a")
        hear()
        say("PASS secret")
        hear()
        say("LIST")
        while hear() not in (b".\r\n", b""):
            pass
        table = tcp_sockets(list(pids))
        say("QUIT")
        hear()
    return table


def _role(sock: Socket, names: dict[int, str], ports: dict[str, int]) -> str:
    name = names[sock.pid]
    if sock.state == "LISTEN":
        return {
            "hashiked": "SSH server, waiting for logins",
            "hashike": "-L listener: the tunnel's entrance",
            "pop3": "mail server (POP3), waiting",
        }.get(name, "listening")
    peer = sock.remote[1]
    if name == "hashike" and peer == ports["ssh"]:
        return "the SSH connection (encrypted)"
    server = name.startswith("hashiked")  # the supervisor, or with Workers a worker
    if server and sock.local[1] == ports["ssh"]:
        return "the SSH connection, server end"
    if server and peer == ports["pop3"]:
        return "server's onward connection to POP3 (plain text, on the server)"
    if name == "pop3":
        return "POP3 session, from hashiked"
    if name == "hashike" and sock.local[1] == ports["local"]:
        return "tunnel entrance, from the mail client"
    if name == "mail client":
        return "mail client -> localhost tunnel port"
    return ""


def _print_table(table: list[Socket], names: dict[int, str], ports: dict[str, int]) -> None:
    rows = [("program", "local address", "foreign address", "state", "what it is")]
    order = {"LISTEN": 0, "ESTABLISHED": 1}
    for s in sorted(table, key=lambda s: (order[s.state], s.local[1])):
        rows.append(
            (
                f"{names[s.pid]} ({s.pid})",
                f"{s.local[0]}:{s.local[1]}",
                "*:*" if s.state == "LISTEN" else f"{s.remote[0]}:{s.remote[1]}",
                s.state,
                _role(s, names, ports),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("   " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])


def _run(tmp: Path) -> None:
    user = getpass.getuser()
    host_key, user_key = generate_private_key(), generate_private_key()
    write_private_key(host_key, tmp / "host_key")
    write_private_key(user_key, tmp / "id_ed25519")
    (tmp / "authorized_keys").write_text(user_key.public_key.openssh_line() + "\n")
    procs: list[subprocess.Popen[str]] = []
    try:
        print("1. hashiked: a fresh ed25519 host key, one authorized key for", user)
        hashiked = _spawn(
            "hashike.cli.server", "-p", "0", "-h", str(tmp / "host_key"), "-o", "ListenAddress=127.0.0.1",
            "-o", f"AuthorizedKeysFile={tmp / 'authorized_keys'}", "-o", f"AllowUsers={user}",
        )  # fmt: skip
        procs.append(hashiked)
        line = _first_line(hashiked, "hashiked")
        print(f"   {line}")
        ssh_port = int(line.split(" port ")[1].split(";")[0])
        print("2. a POP3 server standing in for the mail server")
        pop3 = _spawn("hashike.cli.pop3")
        procs.append(pop3)
        pop3_port = int(_first_line(pop3, "the POP3 server"))
        print(f"   listening on 127.0.0.1 port {pop3_port}")
        local = _local_port()
        (tmp / "known_hosts").write_text(f"[127.0.0.1]:{ssh_port} {host_key.public_key.openssh_line()}\n")
        command = f"hashike -N -L {local}:127.0.0.1:{pop3_port} -p {ssh_port} {user}@127.0.0.1"
        print(f"3. {command}")
        client = _spawn(
            "hashike.cli.client", "-F", "none", "-N", "-L", f"{local}:127.0.0.1:{pop3_port}",
            "-p", str(ssh_port),
            "-i", str(tmp / "id_ed25519"), "-o", f"UserKnownHostsFile={tmp / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentityAgent=none",
            f"{user}@127.0.0.1",
        )  # fmt: skip
        procs.append(client)
        _wait_listening(local, client)
        print(f"   host key checked against known_hosts, logged in, forwarding localhost:{local}")
        print(f"4. a mail client connects to localhost:{local}")
        names = {
            hashiked.pid: "hashiked",
            pop3.pid: "pop3",
            client.pid: "hashike",
            os.getpid(): "mail client",
        }
        names |= {pid: "hashiked worker" for pid in children(hashiked.pid)}  # Workers (auto: per core)
        table = _mail_session(local, names)
        print("5. who listens where, and which connection is which (like netstat -tnp):")
        _print_table(table, names, {"ssh": ssh_port, "pop3": pop3_port, "local": local})
        print("Done: the POP3 dialogue crossed the network only inside the encrypted SSH connection.")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    try:
        with tempfile.TemporaryDirectory(prefix="hashike-demo-") as tmp:
            _run(Path(tmp))
    except (DemoError, OSError) as exc:
        print(f"hashike demo: {exc}", file=sys.stderr)
        return 255
    return 0


if __name__ == "__main__":
    sys.exit(main())
