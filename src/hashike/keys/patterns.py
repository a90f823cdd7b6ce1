"""ssh's patterns (ssh_config(5) PATTERNS), for every file that uses them:
known_hosts host names, authorized_keys ``from=`` and ``permitlisten``,
ssh_config ``Host``/``Match``/``SendEnv``/``IgnoreUnknown``, sshd_config
``AllowUsers`` and ``AcceptEnv``.

A pattern is matched against the whole text: ``*`` is any run of characters,
``?`` exactly one, and nothing else is special (``[`` is literal, so
``[host]:port`` patterns work). A pattern list holds positive and ``!negated``
patterns: it matches when some positive pattern does and no negated one does.
Case is each caller's business (ssh compares host names ignoring case, most
other names exactly), except in :func:`match_pattern_list`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["match_any", "match_pattern", "match_pattern_list"]


def match_pattern(text: str, pattern: str) -> bool:
    """Does ``pattern`` match all of ``text``? Case-sensitive.

    Backtracking goes to the last ``*`` only (a later ``*`` can absorb what an
    earlier one would have), so a hostile pattern costs at most
    len(text) * len(pattern) steps, never an exponential search.
    """
    t = p = 0
    star = -1
    mark = 0
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif p < len(pattern) and pattern[p] in ("?", text[t]):
            t += 1
            p += 1
        elif star >= 0:
            mark += 1
            t, p = mark, star + 1
        else:
            return False
    return pattern[p:].strip("*") == ""


def match_any(patterns: Iterable[str], matches: Callable[[str], bool]) -> bool:
    """ssh's negation rule over ``patterns``, each one tested by ``matches``
    (without its ``!``): true when some positive pattern matches and no
    negated one does. A negated match decides at once: ``matches`` is not
    called for the patterns after it. Empty patterns are skipped."""
    positive = False
    for item in patterns:
        negated = item.startswith("!")
        pattern = item[1:] if negated else item
        if not pattern or not matches(pattern):
            continue
        if negated:
            return False
        positive = True
    return positive


def match_pattern_list(name: str, patterns: str) -> bool:
    """Match ``name`` against a comma-separated pattern list with ``!``
    negation, ignoring case (sshd(8) SSH_KNOWN_HOSTS FILE FORMAT: a name that
    matches a negated pattern is not accepted even if another pattern matches)."""
    name = name.lower()
    return match_any(patterns.lower().split(","), lambda pattern: match_pattern(name, pattern))
