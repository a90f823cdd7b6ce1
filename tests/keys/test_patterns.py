"""Tests for hashike.keys.patterns: ssh's ``*``/``?``/``!`` patterns (ssh_config(5) PATTERNS),
the one matcher known_hosts, authorized_keys, ssh_config and sshd_config share."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashike.keys.patterns import match_any, match_pattern, match_pattern_list


@pytest.mark.parametrize(
    ("text", "pattern", "expected"),
    [
        ("host", "host", True),
        ("host", "hos", False),
        ("host", "hostx", False),
        ("host", "*", True),
        ("", "*", True),
        ("", "?", False),
        ("a.example.com", "*.example.com", True),
        ("example.com", "*.example.com", False),
        ("host1", "host?", True),
        ("host12", "host?", False),
        ("[1.2.3.4]:2222", "[1.2.3.4]:2222", True),  # brackets are literal
        ("[1.2.3.4]:2222", "[1.2.3.*]:22*", True),
        ("1", "[1]", False),
        ("abcabcabd", "*abc*abd", True),
        ("aaa", "a*a*a*a", False),
        ("x", "**x**", True),
    ],
)
def test_match_pattern(text: str, pattern: str, expected: bool) -> None:
    assert match_pattern(text, pattern) is expected


def test_match_pattern_is_not_exponential() -> None:
    # Its work is bounded by the step count below, not by a clock (no
    # timings in pass/fail tests); this is the hostile case at full size.
    assert not match_pattern("a" * 2000, "*a" * 100 + "b")


@pytest.mark.parametrize(
    ("name", "patterns", "expected"),
    [
        ("host", "other,host", True),
        ("HOST", "other,host", True),
        ("host", "OTHER,Host", True),
        ("host.example.com", "*.example.com,!host.example.com", False),
        ("web.example.com", "*.example.com,!host.example.com", True),
        ("host.example.com", "!host.example.com", False),
        ("other", "!host.example.com", False),  # negation alone never matches
        ("host", ",,host,", True),
        ("host", "", False),
        ("host", "!", False),
    ],
)
def test_match_pattern_list(name: str, patterns: str, expected: bool) -> None:
    assert match_pattern_list(name, patterns) is expected


class _Counting(str):
    """A str that counts how often it is indexed (the matcher's unit of work)."""

    steps = 0

    def __getitem__(self, index: int | slice) -> str:  # type: ignore[override]
        _Counting.steps += 1
        return str.__getitem__(self, index)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("a" * 300, "*a" * 60 + "b"),
        ("a" * 300, "*" * 300 + "b"),
        ("ab" * 150, "*a*b*a*b*a*b*a*b*c"),
        ("a" * 300, "?*" * 100 + "b"),
    ],
)
def test_hostile_patterns_cost_at_most_text_times_pattern(text: str, pattern: str) -> None:
    # A backtracking regex (.*a.*a...b) would take exponential time on these.
    _Counting.steps = 0
    assert not match_pattern(text, _Counting(pattern))
    assert _Counting.steps <= 3 * (len(text) + 1) * (len(pattern) + 1)


def _reference(text: str, pattern: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


@given(st.text("ab*?[.", max_size=8), st.text("ab[.\n", max_size=12))
def test_match_pattern_agrees_with_a_regex(pattern: str, text: str) -> None:
    assert match_pattern(text, pattern) is _reference(text, pattern)


def test_match_pattern_is_case_sensitive() -> None:
    assert not match_pattern("Host", "host")
    assert match_pattern("Host", "H*")


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["*.example.com"], True),
        (["*.example.com", "!web.example.com"], False),
        (["!web.example.com", "*.example.com"], False),
        (["!other.example.com", "*.example.com"], True),
        (["!*"], False),
        (["", "!"], False),  # empty patterns are skipped
        ([], False),
    ],
)
def test_match_any(patterns: list[str], expected: bool) -> None:
    assert match_any(patterns, lambda p: match_pattern("web.example.com", p)) is expected


def test_match_any_stops_at_a_negated_match() -> None:
    seen: list[str] = []

    def matches(pattern: str) -> bool:
        seen.append(pattern)
        return True

    assert not match_any(["a", "!b", "c"], matches)
    assert seen == ["a", "b"]
