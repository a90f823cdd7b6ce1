"""A small ``netstat -tnp`` over /proc (Linux): the TCP sockets of given
processes, for the demo's picture of who listens where and which connection
is which."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

__all__ = ["Socket", "children", "tcp_sockets"]

_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


@dataclass(frozen=True, slots=True)
class Socket:
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    pid: int


def _address(text: str) -> tuple[str, int]:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        addr = str(ipaddress.IPv4Address(raw[::-1]))
    else:  # /proc prints IPv6 as four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        v6 = ipaddress.IPv6Address(words)
        addr = str(v6.ipv4_mapped or v6)
    return addr, int(port, 16)


def _inodes(pid: int) -> set[str]:
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(target[8:-1])
    except OSError:
        pass
    return found


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux's /proc/PID/task/PID/children)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(word) for word in f.read().split()]
    except OSError:
        return []


def tcp_sockets(pids: list[int]) -> list[Socket]:
    """Listening and established TCP sockets owned by ``pids``."""
    owner = {inode: pid for pid in pids for inode in _inodes(pid)}
    sockets = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            state = _STATES.get(fields[3])
            pid = owner.get(fields[9])
            if state in ("LISTEN", "ESTABLISHED") and pid is not None:
                sockets.append(Socket(_address(fields[1]), _address(fields[2]), state, pid))
    return sockets
