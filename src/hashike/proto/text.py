"""Text a peer chose, made safe to show: the one escaping rule for log lines,
error messages and the terminal.

A peer picks the bytes of a user name, a client version, a DISCONNECT
description, a banner, the host of a channel open. Written as they are, a
newline in them forges a second log line (``... Accepted publickey for root``)
and an ESC sequence drives the terminal that shows them. OpenSSH passes such
text through strvis(3): every log line in log.c, everything it prints in
utf8.c. :func:`escape_text` does the same job: each character that is not
printable becomes a visible escape (``\\n``, ``\\r``, ``\\t``, ``\\x1b``,
``\\u202e``), so that the result is one line of printable text, and ``keep``
names the few controls a caller lets through (ssh prints a banner's newlines,
carriage returns and tabs as they are).

Backslashes are left alone: an escape cannot start a new line or move the
cursor, and text already escaped stays as it is when escaped again.
"""

from __future__ import annotations

__all__ = ["TERMINAL_CONTROLS", "escape_text"]

# What ssh lets through when it prints server text on the terminal (utf8.c:
# "newline, carriage return, and tab are allowed").
TERMINAL_CONTROLS = "\t\n\r"

_C_STYLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_text(text: str, *, keep: str = "", limit: int | None = None) -> str:
    """``text`` (at most ``limit`` characters of it) with every character that
    is not printable, except those in ``keep``, shown as an escape."""
    if limit is not None:
        text = text[:limit]
    if text.isprintable():
        return text  # the common case: nothing to do
    return "".join(c if c.isprintable() or c in keep else _escape(c) for c in text)


def _escape(char: str) -> str:
    named = _C_STYLE.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
