"""Talking to the user the way ssh does: questions and passwords on the
controlling terminal (/dev/tty), never on stdin/stdout, so pipes stay clean;
nothing at all when there is no terminal."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys

__all__ = ["ask", "ask_async", "have_tty"]


def have_tty() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def ask(text: str, echo: bool = False) -> str | None:
    """Ask on the terminal; None when there is none (or on Ctrl-D)."""
    if not have_tty():
        return None
    try:
        if not echo:
            return getpass.getpass(text)
        with open("/dev/tty", "r+", encoding="utf-8") as tty:
            tty.write(text)
            tty.flush()
            line = tty.readline()
            return line.rstrip("\n") if line else None
    except (EOFError, OSError):
        return None
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        raise


async def ask_async(text: str, echo: bool = False) -> str | None:
    """:func:`ask` in a thread, so the event loop keeps the connection alive."""
    return await asyncio.to_thread(ask, text, echo)
