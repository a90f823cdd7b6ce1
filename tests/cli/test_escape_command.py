"""The ``~C`` command line's answers that need no connection (cli/escape_command.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from hashike.cli.escape_command import COMMANDS_HELP, run_command_line
from hashike.cli.runtime_forwards import ForwardTable


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("", ""),
        ("?", COMMANDS_HELP),
        ("-h", COMMANDS_HELP),
        ("ls", "Invalid command.\n"),
        ("-X 1", "Invalid command.\n"),
        ("-K", "Invalid command.\n"),
        ("-L", "Bad forwarding specification.\n"),
        ("-L 1:2", "Bad forwarding specification.\n"),
        ("-D x:y:z", "Bad forwarding specification.\n"),
        ("-KL nonsense", "Bad forwarding close port.\n"),
        ("-KL 70000", "Bad forwarding close port.\n"),
        ("-KL 4000", "Unknown port forwarding.\n"),
        ("-KR [::1]:4000", "Unknown port forwarding.\n"),
        ("-KD /tmp/socket", "Unknown port forwarding.\n"),
    ],
)
async def test_answers(line: str, answer: str) -> None:
    table = ForwardTable(client=cast(Any, None), settings=cast(Any, None))  # nothing here opens
    assert await run_command_line(line, table) == answer
