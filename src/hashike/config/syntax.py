"""What ssh_config(5) and sshd_config(5) share: reading the file, how a line
splits into arguments (OpenSSH's argv_split serves both), and the size and
time formats."""

from __future__ import annotations

import re

from hashike.keys.textfile import read_bounded

__all__ = [
    "CONFIG_FILE_LIMIT",
    "FileTooLarge",
    "UnterminatedQuote",
    "parse_size",
    "parse_time",
    "read_config_lines",
    "split_arguments",
]

# Far beyond any real configuration; a FIFO or /dev/zero named as one costs
# this much memory at most instead of all of it.
CONFIG_FILE_LIMIT = 4 << 20

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_SIZE_RE = re.compile(r"(\d+)([kmg]?)", re.IGNORECASE | re.ASCII)

_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIME_PART_RE = re.compile(r"(\d+)([smhdw]?)", re.IGNORECASE | re.ASCII)


class UnterminatedQuote(ValueError):
    """A quote opened on a line was never closed."""


class FileTooLarge(ValueError):
    """A configuration file holds more than CONFIG_FILE_LIMIT bytes."""


def read_config_lines(path: str) -> list[str]:
    """The lines of a configuration file. Raises OSError as open() does,
    UnicodeDecodeError, or FileTooLarge."""
    data, more = read_bounded(path, CONFIG_FILE_LIMIT)
    if more:
        raise FileTooLarge(f"{path}: larger than {CONFIG_FILE_LIMIT >> 20} MiB")
    return data.decode("utf-8").splitlines()


def split_arguments(text: str) -> list[str]:
    """Split like OpenSSH's argv_split: blanks separate, '...' and "..."
    quote, a backslash escapes a quote, a backslash or (outside quotes) a
    blank, and an unquoted '#' that starts a word begins a comment."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] == "#":
            break
        word: list[str] = []
        quote = ""
        while i < n and (quote or text[i] not in " \t"):
            c = text[i]
            if c == "\\" and i + 1 < n and (text[i + 1] in "\\\"'" or (not quote and text[i + 1] in " \t")):
                word.append(text[i + 1])
                i += 2
                continue
            if quote and c == quote:
                quote = ""
            elif not quote and c in "\"'":
                quote = c
            else:
                word.append(c)
            i += 1
        if quote:
            raise UnterminatedQuote("unterminated quote")
        args.append("".join(word))
    return args


def parse_size(text: str) -> int:
    """A byte count with an optional K, M or G suffix (powers of 1024)."""
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid size '{text}'")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def parse_time(text: str) -> int:
    """sshd_config(5) TIME FORMATS: ``time[qualifier]`` repeated and summed,
    qualifiers s, m, h, d, w (none means seconds): ``1h30m`` is 5400."""
    if not text:
        raise ValueError("empty time value")
    total = 0
    pos = 0
    while pos < len(text):
        m = _TIME_PART_RE.match(text, pos)
        if m is None:
            raise ValueError(f"invalid time value '{text}'")
        total += int(m.group(1)) * _TIME_UNITS[m.group(2).lower()]
        pos = m.end()
    return total
