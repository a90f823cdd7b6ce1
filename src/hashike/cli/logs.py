"""Log lines in OpenSSH's stderr style: ``debug1: ...`` for debug lines,
the bare message for everything a user must see.

Every line is one line: as OpenSSH's log.c passes each message through
strnvis, the formatter escapes what is not printable (a peer's text that a
caller forgot to escape cannot forge a second line, nor reach the terminal as
an ESC sequence). Text escaped already stays as it is."""

from __future__ import annotations

import logging
import sys

from hashike.proto.text import escape_text

__all__ = ["setup_logging"]


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = escape_text(record.getMessage())
        return f"debug1: {text}" if record.levelno <= logging.DEBUG else text


def setup_logging(level: int, log_file: str | None = None) -> None:
    """Send the ``hashike`` loggers to stderr (or ``log_file``, as with -E)."""
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(_Formatter())
    root = logging.getLogger("hashike")
    root.handlers[:] = [handler]
    root.setLevel(level)
