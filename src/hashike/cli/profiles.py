"""Profiles started by name, as the guide's TTSSH saves ``POP.ini`` and starts
it from a shortcut: ``hashike up NAME...``, ``hashike down NAME...`` and
``hashike profiles``.

A profile is an ssh_config ``Host`` block whose name has no wildcard and
whose settings include forwards (LocalForward, RemoteForward,
DynamicForward), so OpenSSH reads the same file. ``up`` starts each one as
``hashike -f -N`` with ControlMaster yes, ExitOnForwardFailure yes,
Reconnect yes (a profile is a supervised tunnel: a lost connection is made
again and its forwards restored) and the ControlPath ``profile-NAME.sock``
in the per-user runtime directory (config/runtime_dir.py): the command
returns once the forwards are up, or exits 255 with the connection's own
lines. ``down`` sends ``-O exit`` there
and waits for the socket to go; ``profiles`` lists each profile, its
forwards and whether it is up. The background master's messages go to
``profile-NAME.log`` beside its socket.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from hashike.aio.mux import MuxClient, MuxError
from hashike.config.runtime_dir import RuntimeDirError, runtime_dir
from hashike.config.ssh_config import ConfigError, parse_client_config
from hashike.config.syntax import FileTooLarge, read_config_lines, split_arguments
from hashike.proto import mux

__all__ = ["COMMANDS", "main"]

COMMANDS = ("up", "down", "profiles")
EXIT_FAILURE = 255
START_TIMEOUT = 60.0  # login and forwards, at the slowest
STOP_TIMEOUT = 10.0  # -O exit until the socket is gone
_WILDCARDS = frozenset("*?!")


def _parser(command: str) -> argparse.ArgumentParser:
    what = {"up": "start saved forwards", "down": "stop them", "profiles": "list them"}[command]
    p = argparse.ArgumentParser(prog=f"hashike {command}", description=f"{what} (ssh_config Host blocks)")
    p.add_argument(
        "-F", dest="config", metavar="configfile", help="ssh_config to read (default ~/.ssh/config)"
    )
    if command != "profiles":
        p.add_argument("names", nargs="+", metavar="NAME", help="a Host block with forwards")
    return p


def _config_file(explicit: str | None) -> str:
    return explicit or os.path.expanduser("~/.ssh/config")


def host_names(path: str) -> list[str]:
    """The Host names in ``path`` without wildcards, in order, once each."""
    try:
        lines = read_config_lines(path)
    except (OSError, UnicodeDecodeError, FileTooLarge):
        return []
    names: list[str] = []
    for line in lines:
        try:
            words = split_arguments(line)
        except ValueError:
            continue
        if words and words[0].lower() == "host":
            names += [n for n in words[1:] if not _WILDCARDS & set(n) and n not in names]
    return names


def forwards_of(name: str, path: str) -> list[str]:
    """The forwards ``name`` would get from ``path``, as ssh's options (``-L ...``)."""
    settings = parse_client_config(name, config_file=path, options=[])
    forwards = (*settings.local_forwards, *settings.remote_forwards, *settings.dynamic_forwards)
    return [f.describe() for f in forwards]


def _socket(name: str) -> Path:
    return runtime_dir() / f"profile-{name}.sock"


async def _alive(path: Path) -> bool:
    try:
        async with MuxClient.connect(str(path)) as client:
            reply = await client.request(mux.AliveCheck(request_id=client.request_id()))
    except (MuxError, OSError):
        return False
    return isinstance(reply, mux.AliveReply)


def is_up(name: str) -> bool:
    path = _socket(name)
    return path.exists() and asyncio.run(_alive(path))


def _client(config: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "hashike.cli.client", "-F", config, *args]


def up(name: str, config: str) -> int:
    if not forwards_of(name, config):
        print(f"hashike: no profile {name} (a Host block with forwards) in {config}", file=sys.stderr)
        return EXIT_FAILURE
    if is_up(name):
        print(f"{name} is already up", file=sys.stderr)
        return 0
    path = _socket(name)
    log = path.with_suffix(".log")
    argv = _client(
        config, "-f", "-N", "-o", "ControlMaster=yes", "-o", f"ControlPath={path}",
        "-o", "ExitOnForwardFailure=yes", "-o", "Reconnect=yes", name,
    )  # fmt: skip
    # The master keeps running with these descriptors: never a pipe of ours.
    with open(log, "w") as errors:
        code = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, timeout=START_TIMEOUT
        ).returncode
    if code != 0:
        sys.stderr.write(log.read_text(errors="replace"))
        return code
    print(f"{name} is up", file=sys.stderr)
    return 0


def down(name: str, config: str) -> int:
    path = _socket(name)
    if not is_up(name):
        print(f"{name} is not up", file=sys.stderr)
        return 0
    subprocess.run(
        _client(config, "-S", str(path), "-O", "exit", name),
        stdin=subprocess.DEVNULL, capture_output=True, timeout=STOP_TIMEOUT,
    )  # fmt: skip
    deadline = time.monotonic() + STOP_TIMEOUT
    while path.exists():  # bounded by the deadline
        if time.monotonic() > deadline:
            print(f"hashike: {name} did not stop within {STOP_TIMEOUT:.0f} s", file=sys.stderr)
            return EXIT_FAILURE
        time.sleep(0.05)
    print(f"{name} is down", file=sys.stderr)
    return 0


def list_profiles(config: str) -> int:
    for name in host_names(config):
        forwards = forwards_of(name, config)
        if forwards:
            print(f"{name}  {'up' if is_up(name) else 'down'}")
            for line in forwards:
                print(f"    {line}")
    return 0


def main(command: str, argv: list[str]) -> int:
    args = _parser(command).parse_args(argv)
    config = _config_file(args.config)
    try:
        if command == "profiles":
            return list_profiles(config)
        status = 0
        for name in args.names:
            status = max(status, (up if command == "up" else down)(name, config))
        return status
    except (ConfigError, RuntimeDirError) as exc:
        print(f"hashike: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except subprocess.TimeoutExpired as exc:
        print(f"hashike: {command} took longer than {exc.timeout:.0f} s", file=sys.stderr)
        return EXIT_FAILURE
