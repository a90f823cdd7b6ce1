"""The CLI's log formatter (cli/logs.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from hashike.cli.logs import setup_logging


def test_log_forging_every_line_is_one_printable_line(tmp_path: Path) -> None:
    # As OpenSSH's log.c does: a peer's text that a caller forgot to escape
    # still cannot add a line, nor send ESC to the terminal.
    path = tmp_path / "log"
    setup_logging(logging.DEBUG, str(path))
    log = logging.getLogger("hashike.test")
    log.info("user %s", "x\nAccepted publickey for root\x1b[2J")
    log.debug("already escaped: %s", "a\\nb")
    for handler in logging.getLogger("hashike").handlers:
        handler.close()
    logging.getLogger("hashike").handlers.clear()
    assert path.read_text() == (
        "user x\\nAccepted publickey for root\\x1b[2J\ndebug1: already escaped: a\\nb\n"
    )
