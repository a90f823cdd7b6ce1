"""ProxyJump, which hashike parses but does not implement yet, is refused in one
line wherever it comes from, rather than connecting straight to the target."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

REFUSAL = "hashike: Unsupported option: proxyjump me@jump:2200 (hashike cannot honour it)\n"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hashike(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "hashike.cli.client", "-F", str(config), "-p", str(closed_port()), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("config_text", "args"),
    [
        ("", ("-J", "me@jump:2200")),
        ("", ("-o", "ProxyJump=me@jump:2200")),
        ("Host 127.0.0.1\n  ProxyJump me@jump:2200\n", ()),
    ],
    ids=["-J", "-o", "ssh_config"],
)
def test_proxy_jump_is_refused(tmp_path: Path, config_text: str, args: tuple[str, ...]) -> None:
    # Issue 13, defect 11: hashike connected straight to the target and exited 0.
    config = tmp_path / "config"
    config.write_text(config_text)
    result = hashike(config, *args, "127.0.0.1", "true")
    assert (result.returncode, result.stderr) == (255, REFUSAL)


def test_proxy_jump_none_asks_for_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("ProxyJump none\n")
    result = hashike(config, "127.0.0.1", "true")
    assert result.returncode == 255
    assert result.stderr.endswith("Connection refused\n")  # it went on to connect
