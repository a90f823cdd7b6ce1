"""SSH_ASKPASS and SSH_ASKPASS_REQUIRE (issue 13, item 12): without them a
script or a GUI could not give hashike a password or a passphrase."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hashike.cli import terminal
from hashike.cli.askpass import use_askpass
from hashike.cli.keygen import hash_password
from hashike.keys.keypair import generate_private_key, write_private_key
from tests.interop.test_forward_openssh_to_hashiked import start_hashiked

SCRIPT = """#!/bin/sh
printf '%s\\n' "$1" >> "{log}"
[ -n "$ASKPASS_FAIL" ] && exit 1
printf 'hunter2\\r\\nnot this\\n'
"""


@pytest.fixture
def askpass(tmp_path: Path) -> tuple[Path, Path]:
    """An SSH_ASKPASS program that answers hunter2 and logs its prompts."""
    program, log = tmp_path / "askpass", tmp_path / "prompts"
    program.write_text(SCRIPT.format(log=log))
    program.chmod(0o755)
    return program, log


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [
        ({}, False, False),  # no display: never, as ssh
        ({"DISPLAY": ":0"}, False, True),  # no terminal, a display
        ({"WAYLAND_DISPLAY": "w"}, False, True),
        ({"DISPLAY": ":0"}, True, False),  # a terminal comes first
        ({"DISPLAY": ":0", "SSH_ASKPASS_REQUIRE": "prefer"}, True, True),
        ({"SSH_ASKPASS_REQUIRE": "prefer"}, True, False),  # prefer still needs a display
        ({"SSH_ASKPASS_REQUIRE": "force"}, True, True),  # force needs neither
        ({"SSH_ASKPASS_REQUIRE": "FORCE"}, False, True),
        ({"DISPLAY": ":0", "SSH_ASKPASS_REQUIRE": "never"}, False, False),
        ({"DISPLAY": "", "SSH_ASKPASS_REQUIRE": "other"}, False, False),
    ],
)
def test_askpass_runs_when_ssh_would_run_it(env: dict[str, str], tty: bool, expected: bool) -> None:
    assert use_askpass(env, tty) is expected


def test_askpass_answers_the_question_without_a_terminal(
    askpass: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    program, log = askpass
    monkeypatch.setattr(terminal, "have_tty", lambda: False)
    monkeypatch.setenv("SSH_ASKPASS", str(program))
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("SSH_ASKPASS_REQUIRE", raising=False)
    assert terminal.ask("alice@host's password: ") == "hunter2"  # up to the first CR or LF
    assert log.read_text() == "alice@host's password: \n"  # the prompt is its one argument
    monkeypatch.setenv("ASKPASS_FAIL", "1")
    assert terminal.ask("again: ") is None  # a non-zero exit is no answer
    monkeypatch.setenv("SSH_ASKPASS", str(program.parent / "missing"))
    assert terminal.ask("again: ") is None


def test_askpass_force_wins_over_the_terminal(
    askpass: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    program, _ = askpass
    monkeypatch.setattr(terminal, "have_tty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", lambda text: pytest.fail("read the terminal"))
    monkeypatch.setenv("SSH_ASKPASS", str(program))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "force")
    assert terminal.ask("Enter passphrase for key 'id': ") == "hunter2"


def test_askpass_logs_in_with_a_password(askpass: tuple[Path, Path], tmp_path: Path) -> None:
    """The whole command, with no terminal (start_new_session): the password
    comes from SSH_ASKPASS and the login succeeds."""
    program, log = askpass
    host_key, passwords = tmp_path / "host_key", tmp_path / "passwords"
    write_private_key(generate_private_key(), host_key)
    user = getpass.getuser()
    passwords.write_text(f"{user}:{hash_password('hunter2')}\n")
    server = start_hashiked(
        tmp_path / "hashiked", host_key, tmp_path / "none",
        f"PasswordFile={passwords}", "PasswordAuthentication=yes",
    )  # fmt: skip
    env = {**os.environ, "SSH_ASKPASS": str(program), "SSH_ASKPASS_REQUIRE": "force"}
    argv = [
        sys.executable, "-m", "hashike.cli.client", "-F", "none", "-p", str(server.port),
        "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'known'}",
        "-o", "IdentityAgent=none", "-o", "PubkeyAuthentication=no", f"{user}@127.0.0.1", "echo", "in",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=env,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "in\n"
    prompts = log.read_text().splitlines()  # keyboard-interactive's or password's prompt, once
    assert len(prompts) == 1
    assert prompts[0] in (f"{user}@127.0.0.1's password: ", f"({user}@127.0.0.1) Password: ")
