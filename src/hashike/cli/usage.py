"""Usage errors as OpenSSH reports them, not as argparse does.

ssh and sshd read their options with getopt(3): an option letter they do not
know is ``unknown option -- Z``, a missing value ``option requires an
argument -- p``; then the usage text follows on stderr and the program exits,
ssh with 255 and sshd with 1 (sshd's usage() also names its version first).
argparse would say something else and exit 2, which scripts read as the
remote command's own status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["UsageParser"]


class UsageParser(argparse.ArgumentParser):
    """An ArgumentParser whose every usage error is getopt's line, then the
    usage text (after ``preamble``, if given), then exit ``status``."""

    def __init__(self, *, status: int, preamble: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.status = status
        self.preamble = preamble

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        words = sys.argv[1:] if args is None else list(args)
        _, problem = self.scan_options(words)
        if problem is not None:
            self.fail(problem)
        return super().parse_args(words, namespace)

    def scan_options(self, words: list[str]) -> tuple[int, str | None]:
        """Read ``words`` as getopt(3) does: how many of them are options (up
        to the first other word; a ``--`` that ends them counts), and the
        first problem getopt would report, or None. Long options
        (``--help``) are argparse's."""
        flags, valued = self.option_letters()
        i = 0
        while i < len(words) and words[i].startswith("-") and words[i] != "-":
            word = words[i]
            i += 1
            if word == "--":
                break
            if word.startswith("--"):
                if word.partition("=")[0] in self._option_string_actions:
                    continue
                return i, "unknown option -- -"
            for j, char in enumerate(word[1:], 1):
                if char in valued:
                    if j == len(word) - 1:
                        if i == len(words):
                            return i, f"option requires an argument -- {char}"
                        i += 1  # the value is the next word
                    break
                if char not in flags:
                    return i, f"unknown option -- {char}"
        return i, None

    def option_letters(self) -> tuple[set[str], set[str]]:
        """The single-letter options: those without a value, those with one."""
        flags: set[str] = set()
        valued: set[str] = set()
        for action in self._actions:
            for option in action.option_strings:
                if len(option) == 2 and option[0] == "-" and option[1] != "-":
                    (valued if action.nargs is None else flags).add(option[1])
        return flags, valued

    def error(self, message: str) -> NoReturn:
        """What getopt does not catch: a missing destination is the usage
        text alone, as with ssh; a bad value is argparse's line without its
        ``argument -X:`` prefix."""
        if message.startswith("the following arguments are required"):
            self.fail(None)
        _, sep, rest = message.partition(": ")
        self.fail(rest if sep and message.startswith("argument ") else message)

    def fail(self, line: str | None) -> NoReturn:
        if line is not None:
            sys.stderr.write(f"{line}\n")
        if self.preamble is not None:
            sys.stderr.write(f"{self.preamble}\n")
        sys.stderr.write(self.format_usage())
        sys.exit(self.status)
