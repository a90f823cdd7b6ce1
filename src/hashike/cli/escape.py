"""ssh's escape sequences (``~.``, ``~?``, ``~#`` ...) as a pure state machine.

Theory of operation. Keyboard input goes through :meth:`EscapeReader.feed`,
which returns what to do, in order: ``bytes`` to send to the remote side and
:class:`Escape` commands for the client. The escape character is special
only at the start of a line: at the very start of the session, or right
after a CR or LF (a terminal in raw mode sends CR for Enter). There it is
held back and the next character decides:

- ``.`` disconnect (anything typed after it, then or later, is dropped), ``?`` help,
  ``#`` list forwarded connections, ``C`` the command line
  (cli/escape_command.py), ``R`` rekey, ``B`` BREAK, ``^Z`` suspend:
  commands, after which we are still at the start of a line, so another
  escape may follow at once;
- the escape character again: one is sent;
- anything else: both are sent, as typed.

State carries over between calls, so a sequence split across reads (``~``
then ``.``) works. The data path does not loop over bytes in Python: it
looks only at the places where ``bytes.find`` meets the escape character.
"""

from __future__ import annotations

import enum

__all__ = ["Escape", "EscapeAction", "EscapeReader", "help_text"]

_NEWLINES = b"\r\n"


class Escape(enum.Enum):
    DISCONNECT = "."
    HELP = "?"
    LIST_CONNECTIONS = "#"
    COMMAND_LINE = "C"
    REKEY = "R"
    BREAK = "B"
    SUSPEND = "\x1a"  # ^Z


_COMMANDS = {ord(e.value): e for e in Escape}

EscapeAction = bytes | Escape


class EscapeReader:
    """Finds escape sequences in keyboard input. ``escape_char`` None (``-e
    none``) turns them off: everything passes through unchanged."""

    def __init__(self, escape_char: str | None = "~") -> None:
        # ssh compares bytes: a character beyond ASCII means its first byte.
        self.escape = escape_char.encode("utf-8", "surrogateescape")[:1] if escape_char else b""
        self._line_start = True  # the next byte begins a line
        self._pending = False  # an escape character is held back, awaiting the next byte
        self.disconnected = False  # after ~. nothing more is passed on

    @property
    def pending(self) -> bool:
        """An escape character was typed and waits for the next one."""
        return self._pending

    def feed(self, data: bytes) -> list[EscapeAction]:
        """The bytes to send and the commands found, in input order."""
        if not self.escape:
            return [data] if data else []
        if self.disconnected:
            return []
        out: list[EscapeAction] = []
        n, i = len(data), 0
        if self._pending and n:
            self._pending = False
            i = self._command(data[0], out)
        while i < n:
            j = data.find(self.escape, i)
            if j < 0:
                self._send(out, data[i:])
                self._line_start = data[-1] in _NEWLINES
                break
            at_line_start = data[j - 1] in _NEWLINES if j > i else self._line_start
            if not at_line_start:
                self._send(out, data[i : j + 1])
                self._line_start = False
                i = j + 1
                continue
            self._send(out, data[i:j])
            if j + 1 == n:
                self._pending = True  # the next read decides
                break
            i = j + 1 + self._command(data[j + 1], out)
        return out

    def _command(self, byte: int, out: list[EscapeAction]) -> int:
        """Handle the byte after an escape character; return how many bytes
        of input it consumed (all the rest, for a disconnect)."""
        command = _COMMANDS.get(byte)
        if command is Escape.DISCONNECT:
            out.append(command)
            self.disconnected = True
            return 1 << 62  # the rest of the input is dropped
        if command is not None:
            out.append(command)
            self._line_start = True
            return 1
        if byte == self.escape[0]:
            self._send(out, self.escape)
            self._line_start = False
        else:
            self._send(out, self.escape + bytes((byte,)))
            self._line_start = byte in _NEWLINES
        return 1

    @staticmethod
    def _send(out: list[EscapeAction], data: bytes) -> None:
        if not data:
            return
        if out and isinstance(out[-1], bytes):
            out[-1] += data
        else:
            out.append(data)


def _shown(char: str) -> str:
    """How ssh shows a control character: ^X."""
    return f"^{chr(ord(char) + 64)}" if ord(char) < 32 else char


def help_text(escape_char: str, newline: str = "\r\n") -> str:
    """ssh's ``~?`` listing, for the escapes hashike supports."""
    e = _shown(escape_char)
    lines = [
        "Supported escape sequences:",
        f" {e}.   - terminate connection (and any multiplexed sessions)",
        f" {e}B   - send a BREAK to the remote system",
        f" {e}C   - open a command line",
        f" {e}R   - request rekey",
        f" {e}^Z  - suspend ssh",
        f" {e}#   - list forwarded connections",
        f" {e}?   - this message",
        f" {e}{e}   - send the escape character by typing it twice",
        "(Note that escapes are only recognized immediately after newline.)",
    ]
    return newline.join(lines) + newline
