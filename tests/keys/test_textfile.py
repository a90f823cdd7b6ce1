"""Tests for hashike.keys.textfile: the one bounded file reader, and line splitting."""

from __future__ import annotations

from pathlib import Path

import pytest

from hashike.keys.textfile import iter_lines, read_bounded


def test_a_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc\ndef")
    assert read_bounded(path, 7) == (b"abc\ndef", False)


def test_a_longer_file_is_cut_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc\ndefgh")
    assert read_bounded(path, 7) == (b"abc\ndef", True)


def test_whole_lines_drops_the_line_cut_in_two(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc\ndefgh\n")
    assert read_bounded(path, 7, whole_lines=True) == (b"abc\n", True)
    assert read_bounded(path, 10, whole_lines=True) == (b"abc\ndefgh\n", False)
    path.write_bytes(b"abcdefgh")
    assert read_bounded(path, 7, whole_lines=True) == (b"", True)


def test_an_endless_file_costs_only_the_limit() -> None:
    assert read_bounded("/dev/zero", 4096) == (b"\0" * 4096, True)


def test_errors_are_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "absent", 10)
    with pytest.raises(IsADirectoryError):
        read_bounded(tmp_path, 10)


def test_iter_lines() -> None:
    assert list(iter_lines(b"a\n\nb")) == [b"a", b"", b"b"]
    assert list(iter_lines(b"a\n")) == [b"a", b""]
