"""Terminal injection (issue 13): a server's text reaches our user's terminal
with its controls escaped as ssh escapes them (newlines, returns and tabs
kept in banners and instructions; ESC never)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from hashike.aio import client_auth
from hashike.aio.client import _ClientPump
from hashike.aio.client_auth import AuthSettings
from hashike.proto.config import TransportConfig
from hashike.proto.constants import OpenFailureReason
from hashike.proto.events import AuthBanner, AuthFailed, AuthPrompts, ChannelOpenRefused

HOSTILE = "Welcome\r\n\tto \x1b]0;owned\x07\x1b[2Jhere\n"
SHOWN = "Welcome\r\n\tto \\x1b]0;owned\\x07\\x1b[2Jhere"


async def test_terminal_injection_banner_is_escaped() -> None:
    notes: list[str] = []
    auth = AuthSettings(username="u", notice=notes.append)
    pump = _ClientPump(TransportConfig(), lambda _key: False, None, auth)
    pump.routes[AuthBanner](AuthBanner(message=HOSTILE))
    assert notes == [SHOWN]


async def test_terminal_injection_open_failure_description_is_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hashike")
    pump = _ClientPump(TransportConfig(), lambda _key: False, None, None)
    event = ChannelOpenRefused(channel_id=3, reason=OpenFailureReason.CONNECT_FAILED, description=HOSTILE)
    pump.open_refused(event)
    [line] = [r.getMessage() for r in caplog.records]
    assert line == "channel 3: open failed: connect failed: " + SHOWN.replace("\r\n\t", "\\r\\n\\t") + "\\n"


async def test_terminal_injection_keyboard_interactive_text_is_escaped() -> None:
    notes: list[str] = []
    asked: list[str] = []
    events: asyncio.Queue[Any] = asyncio.Queue()
    prompts = AuthPrompts(name="Name\x1b[1m", instruction=HOSTILE, prompts=(("Code\x1b[8m: ", False),))
    for event in (prompts, AuthFailed(methods=("publickey",), partial_success=False)):
        events.put_nowait(event)
    core = SimpleNamespace(auth_keyboard_interactive=lambda user: None, answer_prompts=lambda answers: None)

    def prompt(text: str, echo: bool) -> str:
        asked.append(text)
        return "123456"

    settings = AuthSettings(
        username="u", prompt=prompt, notice=notes.append, host_label="h", password_prompts=1
    )
    session = client_auth._Session(core, events, lambda: None)  # type: ignore[arg-type]
    await client_auth._keyboard_interactive(session, settings)
    assert notes == ["Name\\x1b[1m", SHOWN + "\n"]
    assert asked == ["(u@h) Code\\x1b[8m: "]
