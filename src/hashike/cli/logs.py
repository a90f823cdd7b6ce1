"""Log lines in OpenSSH's stderr style: ``debug1: ...`` for debug lines,
the bare message for everything a user must see."""

from __future__ import annotations

import logging
import sys

__all__ = ["setup_logging"]


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
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
