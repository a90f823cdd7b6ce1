"""ProxyJump (-J, -o, ssh_config) and ProxyCommand: wherever it comes from,
the client goes to the jump host (or runs the command) first, never straight
to the target. (Until issue 9 these were refused in one line; before that,
issue 13 defect 11, hashike connected straight to the target and exited 0.)"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TARGET_PORT = closed_port()


def hashike(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "hashike.cli.client", "-F", str(config), "-p", str(TARGET_PORT), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("config_text", "args"),
    [
        ("", ("-J", "me@127.0.0.1:{jump}")),
        ("", ("-o", "ProxyJump=me@127.0.0.1:{jump}")),
        ("Host target\n  HostName 127.0.0.1\n  ProxyJump me@127.0.0.1:{jump}\n", ()),
    ],
    ids=["-J", "-o", "ssh_config"],
)
def test_proxy_jump_goes_to_the_jump_host(tmp_path: Path, config_text: str, args: tuple[str, ...]) -> None:
    jump = closed_port()
    config = tmp_path / "config"
    config.write_text(config_text.format(jump=jump))
    result = hashike(config, *(arg.format(jump=jump) for arg in args), "target", "true")
    assert result.returncode == 255
    assert result.stderr == f"hashike: connect to host 127.0.0.1 port {jump}: Connection refused\n"


def test_the_last_jump_host_is_reached_through_the_first(tmp_path: Path) -> None:
    first = closed_port()
    config = tmp_path / "config"
    config.write_text("")
    result = hashike(config, "-J", f"127.0.0.1:{first},127.0.0.2:1", "target", "true")
    assert result.stderr == f"hashike: connect to host 127.0.0.1 port {first}: Connection refused\n"


def test_proxy_jump_none_asks_for_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("ProxyJump none\n")
    result = hashike(config, "127.0.0.1", "true")
    assert result.returncode == 255
    assert result.stderr.endswith("Connection refused\n")  # it went on to connect


def test_malformed_jump_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("")
    result = hashike(config, "-J", "a,,b", "127.0.0.1", "true")
    refusal = 'hashike: command-line line 0: Invalid ProxyJump "a,,b"\n'
    assert (result.returncode, result.stderr) == (255, refusal)


def test_proxy_command_runs_with_its_tokens(tmp_path: Path) -> None:
    # The command says what it was given, on stderr (ours), and exits: the
    # connection then ends before the server's version line. (Its stdout
    # stays open until it exits: once that closes, the command is hung up on.)
    config = tmp_path / "config"
    command = "sh -c 'echo %h %p %r %n %% >&2'"
    config.write_text(f"Host t\n  HostName 127.0.0.1\n  User u\n  ProxyCommand {command}\n")
    result = hashike(config, "t", "true")
    assert result.returncode == 255
    assert result.stderr.startswith(f"127.0.0.1 {TARGET_PORT} u t %\n")
