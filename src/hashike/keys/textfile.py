"""Reading the text files keys and settings live in (known_hosts,
authorized_keys, key files, PasswordFile, Banner): bounded, one line at a time."""

from __future__ import annotations

import os
from collections.abc import Iterator

__all__ = ["iter_lines", "read_bounded"]


def read_bounded(
    path: str | os.PathLike[str], limit: int, *, whole_lines: bool = False
) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of the file at ``path``, and whether it holds
    more. Reading stops there, so a huge or endless file (a FIFO, /dev/zero)
    costs at most ``limit + 1`` bytes. With ``whole_lines``, a file cut short
    also loses the partial line at the cut. OSError as open() and read() raise it."""
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    if len(data) <= limit:
        return data, False
    data = data[:limit]
    return (data[: data.rfind(b"\n") + 1] if whole_lines else data), True


def iter_lines(data: bytes) -> Iterator[bytes]:
    """Lines without their newline, one at a time: a list of millions of
    empty lines from a hostile file would cost far more memory than the file."""
    start = 0
    while start <= len(data):
        end = data.find(b"\n", start)
        if end < 0:
            end = len(data)
        yield data[start:end]
        start = end + 1
