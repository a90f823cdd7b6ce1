"""``PrivilegeSeparation`` (hashiked's, see hashike.aio.privsep): the keyword,
its default, and the runtime option made of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hashike.cli.server import _server_options
from hashike.config.sshd_config import COMMAND_LINE, ConfigError, parse_server_config


def test_default_is_no() -> None:
    settings = parse_server_config(None, [])
    assert settings.privilege_separation is False
    assert _server_options(settings).privilege_separation is False


@pytest.mark.parametrize(("value", "expected"), [("yes", True), ("no", False)])
def test_values_reach_the_server_options(value: str, expected: bool) -> None:
    settings = parse_server_config(None, [f"PrivilegeSeparation {value}"])
    assert settings.privilege_separation is expected
    assert _server_options(settings).privilege_separation is expected


def test_first_value_wins_and_o_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "sshd_config"
    config.write_text("privilegeseparation no\n")
    assert parse_server_config(str(config), ["PrivilegeSeparation=yes"]).privilege_separation
    assert not parse_server_config(str(config), []).privilege_separation


def test_bad_value_is_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_server_config(None, ["PrivilegeSeparation sometimes"])
    assert str(caught.value) == f'{COMMAND_LINE} line 0: unsupported option "sometimes".'


def test_bad_value_in_a_file_names_its_line(tmp_path: Path) -> None:
    config = tmp_path / "sshd_config"
    config.write_text("Port 2222\nPrivilegeSeparation\n")
    with pytest.raises(ConfigError, match=rf"^{config} line 2: PrivilegeSeparation missing argument\.$"):
        parse_server_config(str(config), [])


def test_needs_root(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from hashike.cli import server

    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    status = server.main(["-o", "PrivilegeSeparation yes", "-p", "0", "-h", "/nonexistent/key"])
    assert status == server.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err == "hashiked: PrivilegeSeparation yes needs root; hashiked runs as uid 1234\n"
