"""ProxyJump and ProxyCommand in ssh_config: the hop syntax, one first-wins
slot for both keywords, and ProxyCommand's tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from hashike.config.jump import JumpHop, parse_jump
from tests.config.test_ssh_config import error_of, home, parse

__all__ = ["home"]  # the fixture, used here


@pytest.mark.parametrize(
    ("text", "hops"),
    [
        ("jump", (JumpHop("jump"),)),
        ("me@jump:2200", (JumpHop("jump", "me", 2200),)),
        ("a,b@c:22", (JumpHop("a"), JumpHop("c", "b", 22))),
        ("ssh://me@jump:2200", (JumpHop("jump", "me", 2200),)),
        ("[::1]:2222", (JumpHop("::1", None, 2222),)),
        ("::1", (JumpHop("::1"),)),
        ("a@b@host", (JumpHop("host", "a@b"),)),  # the user runs to the last '@'
        ("none", ()),
    ],
)
def test_hops(text: str, hops: tuple[JumpHop, ...]) -> None:
    assert parse_jump(text) == hops


@pytest.mark.parametrize("text", ["", "a,,b", "@host", "host:0", "host:x", "[::1", "[::1]x", "a b"])
def test_malformed_hops(text: str) -> None:
    with pytest.raises(ValueError):
        parse_jump(text)


def test_hop_text_round_trips() -> None:
    for text in ("jump", "me@jump:2200", "[::1]:2222"):
        assert str(parse_jump(text)[0]) == text


def test_invalid_proxy_jump_is_refused(home: Path) -> None:
    assert error_of(home, "ProxyJump a,,b\n") == 'CFG line 1: Invalid ProxyJump "a,,b"'


def test_proxy_command_keeps_the_line_and_expands_its_tokens(home: Path) -> None:
    s = parse(home, "Host h\n HostName real\n User u\n Port 2\n ProxyCommand sh -c 'nc %h %p' # %r %n %%\n")
    assert s.proxy_command == "sh -c 'nc real 2' # u h %"
    assert s.proxy_jump is None


def test_proxy_command_refuses_other_tokens(home: Path) -> None:
    assert error_of(home, "ProxyCommand nc %d\n") == "percent_expand: unknown key %d"


@pytest.mark.parametrize(
    ("text", "jump", "command"),
    [
        ("ProxyJump j\nProxyCommand nc %h %p\n", "j", None),
        ("ProxyCommand nc %h %p\nProxyJump j\n", None, "nc h 22"),
        ("ProxyCommand none\nProxyJump j\n", None, None),  # none is a value obtained
        ("ProxyJump none\nProxyCommand nc %h %p\n", None, None),
        ("Host other\n ProxyJump j\nHost *\n ProxyCommand nc\n", None, "nc"),
    ],
)
def test_proxy_jump_and_command_share_one_slot(
    home: Path, text: str, jump: str | None, command: str | None
) -> None:
    s = parse(home, text)
    assert (s.proxy_jump, s.proxy_command) == (jump, command)


def test_command_line_proxy_jump_wins(home: Path) -> None:
    s = parse(home, "ProxyCommand nc %h %p\n", options=["ProxyJump=me@j"])
    assert (s.proxy_jump, s.proxy_command) == ("me@j", None)
