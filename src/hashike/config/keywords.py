"""The keyword engine ssh_config(5) and sshd_config(5) share.

Both files are lines of ``Keyword arguments``; every keyword is a row of a
table (:class:`Keyword`): the settings fields it fills, the function that turns
its arguments into a value, how many arguments it takes and how repeated values
combine. The engine checks the argument count (each parser then sees at least
one argument and never too many), and holds the value parsers both dialects
use alike. Each dialect keeps its own messages: a parser raises
:class:`ValueProblem` and the dialect adds where the line is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from hashike.proto.config import (
    DEFAULT_CIPHERS,
    DEFAULT_HOST_KEY_ALGORITHMS,
    DEFAULT_KEX,
    DEFAULT_MACS,
    HOST_CERTIFICATE_ALGORITHMS,
    SUPPORTED_CIPHERS,
    SUPPORTED_HOST_KEY_ALGORITHMS,
    SUPPORTED_KEX,
    SUPPORTED_MACS,
    TransportConfig,
    apply_algorithm_spec,
)

__all__ = [
    "COMMAND_LINE",
    "DEFAULT_REKEY_BYTES",
    "DEFAULT_REKEY_SECONDS",
    "KEYWORD_RE",
    "ArgumentCount",
    "Keyword",
    "Parser",
    "TransportSettings",
    "ValueProblem",
    "algorithms",
    "choice",
    "keep_first",
    "rekey_limit",
    "single",
    "transport_config",
    "transport_keywords",
]

# The pseudo-file name ssh and sshd give to -o options in their error messages.
COMMAND_LINE = "command-line"

# Both separate the keyword from its arguments by blanks or one '='.
KEYWORD_RE = re.compile(r"\s*([^\s=]+)\s*(?:=\s*)?(.*)", re.DOTALL)

DEFAULT_REKEY_BYTES = TransportConfig().rekey_bytes
DEFAULT_REKEY_SECONDS = TransportConfig().rekey_seconds


class ValueProblem(Exception):
    """Raised by value parsers; the caller adds "<file> line <n>: " and, when
    ``name_keyword`` is set and its dialect names keywords, the keyword (sshd:
    "... line 3: Port missing argument.")."""

    def __init__(self, message: str, *, name_keyword: bool = False) -> None:
        super().__init__(message)
        self.name_keyword = name_keyword


class ArgumentCount(Exception):
    """A line with no argument (``extra`` None) or too many (``extra`` is the
    first one too many); each dialect words this its own way."""

    def __init__(self, extra: str | None) -> None:
        super().__init__(extra)
        self.extra = extra


Parser = Callable[[list[str]], Any]
# "first": the first value obtained wins; the others accumulate, each
# dialect by its own rule ("append": one item a line; "extend": a tuple of
# items a line; "send_env"/"set_env": those ssh keywords' rules).
Merge = Literal["first", "append", "extend", "send_env", "set_env"]


@dataclass(frozen=True, slots=True)
class Keyword:
    # Settings field(s) this keyword fills: a parser returning a tuple fills
    # several at once (RekeyLimit).
    fields: tuple[str, ...]
    parse: Parser
    merge: Merge = "first"
    max_args: int | None = 1  # None: any number

    def value(self, args: list[str]) -> Any:
        """The value of a line's arguments: ArgumentCount, or the parser's ValueProblem."""
        if not args:
            raise ArgumentCount(None)
        if self.max_args is not None and len(args) > self.max_args:
            raise ArgumentCount(args[self.max_args])
        return self.parse(args)


def single(name: str, parse: Parser, *, merge: Merge = "first", max_args: int | None = 1) -> Keyword:
    """A keyword that fills one field."""
    return Keyword((name,), parse, merge, max_args)


def keep_first(values: dict[str, Any], spec: Keyword, value: Any) -> None:
    """ssh and sshd: the first value obtained for a keyword is the one used."""
    parts = value if len(spec.fields) > 1 else (value,)
    for name, part in zip(spec.fields, parts, strict=True):
        values.setdefault(name, part)


# --- value parsers --------------------------------------------------------------------


def choice(table: Mapping[str, Any]) -> Parser:
    """One of a few words, case-insensitive (OpenSSH's multistate options)."""

    def parse(args: list[str]) -> Any:
        try:
            return table[args[0].lower()]
        except KeyError:
            raise ValueProblem(f'unsupported option "{args[0]}".') from None

    return parse


def algorithms(what: str, defaults: tuple[str, ...], supported: tuple[str, ...]) -> Parser:
    """An algorithm list, with the ``+``/``-``/``^`` forms of ssh_config(5) Ciphers."""

    def parse(args: list[str]) -> tuple[str, ...]:
        try:
            return apply_algorithm_spec(args[0], defaults, supported)
        except ValueError as exc:
            raise ValueProblem(f"Bad {what} '{args[0]}': {exc}.") from None

    return parse


def rekey_limit(size: Callable[[str], int], seconds: Callable[[str], int], *, ignore_case: bool) -> Parser:
    """``RekeyLimit SIZE [TIME]``: "default" keeps the core's value for either
    part; TIME "none" (or 0) is no time limit. ``size`` and ``seconds`` parse
    the other words, raising the dialect's ValueProblem."""

    def parse(args: list[str]) -> tuple[int, float]:
        words = [arg.lower() for arg in args] if ignore_case else args
        nbytes = DEFAULT_REKEY_BYTES if words[0] == "default" else size(args[0])
        limit = DEFAULT_REKEY_SECONDS
        if len(args) == 2:
            if words[1] == "none":
                limit = math.inf
            elif words[1] != "default":
                limit = float(seconds(args[1])) or math.inf
        return nbytes, limit

    return parse


# --- the algorithms part of the settings ----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportSettings:
    """What both dialects configure of the transport (RFC 4253 §7.1 algorithm
    lists, RFC 4253 §9 rekeying); ``rekey_seconds == math.inf``: no time limit."""

    ciphers: tuple[str, ...] = DEFAULT_CIPHERS
    kex_algorithms: tuple[str, ...] = DEFAULT_KEX
    host_key_algorithms: tuple[str, ...] = DEFAULT_HOST_KEY_ALGORITHMS
    macs: tuple[str, ...] = DEFAULT_MACS
    rekey_bytes: int = DEFAULT_REKEY_BYTES
    rekey_seconds: float = DEFAULT_REKEY_SECONDS


def transport_keywords(mac_spec: str, rekey: Parser) -> dict[str, Keyword]:
    """The rows that fill TransportSettings, alike in both dialects but for how
    an error names the MAC list (``mac_spec``) and how RekeyLimit reads (``rekey``)."""
    return {
        "ciphers": single("ciphers", algorithms("SSH2 cipher spec", DEFAULT_CIPHERS, SUPPORTED_CIPHERS)),
        "kexalgorithms": single(
            "kex_algorithms", algorithms("SSH2 KexAlgorithms", DEFAULT_KEX, SUPPORTED_KEX)
        ),
        "hostkeyalgorithms": single(
            "host_key_algorithms",
            algorithms(
                "key types",
                DEFAULT_HOST_KEY_ALGORITHMS,
                (*HOST_CERTIFICATE_ALGORITHMS, *SUPPORTED_HOST_KEY_ALGORITHMS),
            ),
        ),
        "macs": single("macs", algorithms(mac_spec, DEFAULT_MACS, SUPPORTED_MACS)),
        "rekeylimit": Keyword(("rekey_bytes", "rekey_seconds"), rekey, max_args=2),
    }


def transport_config(settings: TransportSettings, base: TransportConfig | None = None) -> TransportConfig:
    """The core's TransportConfig for these settings (other fields from ``base``)."""
    return replace(
        base or TransportConfig(),
        kex_algorithms=settings.kex_algorithms,
        host_key_algorithms=settings.host_key_algorithms,
        ciphers=settings.ciphers,
        macs=settings.macs,
        rekey_bytes=settings.rekey_bytes,
        rekey_seconds=settings.rekey_seconds,
    )
