"""Reading the text files keys live in (known_hosts, authorized_keys)."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["iter_lines"]


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
