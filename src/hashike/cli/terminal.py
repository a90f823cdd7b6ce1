"""Talking to the user the way ssh does: questions and passwords on the
controlling terminal (/dev/tty), never on stdin/stdout, so pipes stay clean;
through SSH_ASKPASS when ssh would use it (cli/askpass.py); nothing at all
otherwise when there is no terminal."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import os
import signal
import struct
import sys
import termios
from collections.abc import Callable
from typing import Any

from hashike.aio.passenger import write_all  # re-exported: one copy, shared with the mux sessions

from .askpass import run_askpass, use_askpass

__all__ = [
    "RawMode",
    "WindowChanges",
    "ask",
    "ask_async",
    "have_tty",
    "terminal_modes",
    "terminal_size",
    "window_changes",
    "write_all",
]


def have_tty() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def ask(text: str, echo: bool = False) -> str | None:
    """Ask on the terminal, or through SSH_ASKPASS as ssh would; None when
    neither can answer (or on Ctrl-D)."""
    terminal = have_tty()
    if use_askpass(os.environ, terminal):
        return run_askpass(os.environ, text)
    if not terminal:
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


# --- the local terminal during a session ---------------------------------------------

# RFC 4254 §8 opcodes: control characters, then input, local, output and
# control flags, by their termios names.
_CHAR_OPCODES = {
    "VINTR": 1, "VQUIT": 2, "VERASE": 3, "VKILL": 4, "VEOF": 5, "VEOL": 6, "VEOL2": 7,
    "VSTART": 8, "VSTOP": 9, "VSUSP": 10, "VDSUSP": 11, "VREPRINT": 12, "VWERASE": 13,
    "VLNEXT": 14, "VFLUSH": 15, "VSWTCH": 16, "VSTATUS": 17, "VDISCARD": 18,
}  # fmt: skip
_IFLAG_OPCODES = {
    "IGNPAR": 30, "PARMRK": 31, "INPCK": 32, "ISTRIP": 33, "INLCR": 34, "IGNCR": 35,
    "ICRNL": 36, "IUCLC": 37, "IXON": 38, "IXANY": 39, "IXOFF": 40, "IMAXBEL": 41, "IUTF8": 42,
}  # fmt: skip
_LFLAG_OPCODES = {
    "ISIG": 50, "ICANON": 51, "XCASE": 52, "ECHO": 53, "ECHOE": 54, "ECHOK": 55, "ECHONL": 56,
    "NOFLSH": 57, "TOSTOP": 58, "IEXTEN": 59, "ECHOCTL": 60, "ECHOKE": 61, "PENDIN": 62,
}  # fmt: skip
_OFLAG_OPCODES = {"OPOST": 70, "OLCUC": 71, "ONLCR": 72, "OCRNL": 73, "ONOCR": 74, "ONLRET": 75}
_CFLAG_OPCODES = {"CS7": 90, "CS8": 91, "PARENB": 92, "PARODD": 93}
_TTY_OP_ISPEED, _TTY_OP_OSPEED = 128, 129
# Linux's value; older Pythons' termios does not export it.
_EXTRA_FLAGS = {"IUTF8": 0o40000} if sys.platform.startswith("linux") else {}
_VDISABLE = 0  # Linux's _POSIX_VDISABLE; ssh sends 255 for a disabled character


def _flag(name: str) -> int | None:
    value = getattr(termios, name, _EXTRA_FLAGS.get(name))
    return value if isinstance(value, int) else None


def _baud(code: int) -> int:
    for name in dir(termios):
        if name.startswith("B") and name[1:].isdigit() and getattr(termios, name) == code:
            return int(name[1:])
    return 0


def terminal_modes(fd: int) -> dict[int, int]:
    """The terminal on ``fd`` as RFC 4254 §8 modes, for a pty-req (empty if
    ``fd`` is not a terminal: the server then uses its defaults)."""
    try:
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError):
        return {}
    modes: dict[int, int] = {}
    for name, op in _CHAR_OPCODES.items():
        index = _flag(name)
        if index is not None and index < len(cc):
            value = cc[index]
            char = value[0] if isinstance(value, bytes) else int(value)
            modes[op] = 255 if char == _VDISABLE else char
    for flags, table in ((iflag, _IFLAG_OPCODES), (lflag, _LFLAG_OPCODES), (oflag, _OFLAG_OPCODES)):
        for name, op in table.items():
            bit = _flag(name)
            if bit is not None:
                modes[op] = int(bool(flags & bit))
    size = cflag & termios.CSIZE
    modes[90], modes[91] = int(size == termios.CS7), int(size == termios.CS8)
    modes[92], modes[93] = int(bool(cflag & termios.PARENB)), int(bool(cflag & termios.PARODD))
    modes[_TTY_OP_ISPEED], modes[_TTY_OP_OSPEED] = _baud(ispeed), _baud(ospeed)
    return modes


def terminal_size(fd: int) -> tuple[int, int, int, int] | None:
    """(columns, rows, width px, height px) of the terminal on ``fd``, or None."""
    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except (OSError, ValueError):
        return None
    rows, cols, xpixel, ypixel = struct.unpack("HHHH", packed)
    return cols, rows, xpixel, ypixel


class RawMode:
    """The terminal on ``fd`` in raw mode, as ssh sets it for a session with a
    pty: no echo, no line editing, no signals from keys, no output
    processing. :meth:`restore` (idempotent) puts back exactly what was
    there; use it as a context manager so that it always happens."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None

    def enter(self) -> bool:
        """Go raw; False if ``fd`` is not a terminal (nothing changed)."""
        try:
            saved = termios.tcgetattr(self.fd)
        except (termios.error, OSError, ValueError):
            return False
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = saved
        iflag |= termios.IGNPAR
        iflag &= ~(
            termios.ISTRIP | termios.INLCR | termios.IGNCR | termios.ICRNL
            | termios.IXON | termios.IXANY | termios.IXOFF | getattr(termios, "IUCLC", 0)
        )  # fmt: skip
        lflag &= ~(
            termios.ISIG | termios.ICANON | termios.ECHO | termios.ECHOE
            | termios.ECHOK | termios.ECHONL | termios.IEXTEN
        )  # fmt: skip
        oflag &= ~termios.OPOST
        cc = list(cc)
        cc[termios.VMIN] = 1
        cc[termios.VTIME] = 0
        raw = [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]
        try:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, raw)
        except (termios.error, OSError, ValueError):
            return False
        self._saved = saved
        return True

    @property
    def active(self) -> bool:
        return self._saved is not None

    def restore(self) -> None:
        saved, self._saved = self._saved, None
        if saved is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)

    def __enter__(self) -> RawMode:
        self.enter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


class WindowChanges:
    """SIGWINCH for all who follow a terminal's size (our own session, and a
    master's multiplexed sessions on their clients' terminals): a signal has
    one handler per process, so it is installed while any callback is here."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None]) -> None:
        if not self._callbacks:
            asyncio.get_running_loop().add_signal_handler(signal.SIGWINCH, self._changed)
        self._callbacks.append(callback)

    def remove(self, callback: Callable[[], None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)
            if not self._callbacks:
                with contextlib.suppress(RuntimeError):  # the loop is closing
                    asyncio.get_running_loop().remove_signal_handler(signal.SIGWINCH)

    def _changed(self) -> None:
        for callback in list(self._callbacks):
            callback()


window_changes = WindowChanges()
