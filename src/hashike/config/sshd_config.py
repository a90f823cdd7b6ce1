"""hashiked's configuration: the sshd_config(5) syntax, a subset of its keywords.

Theory of operation. Every source of configuration is a sequence of lines:
``-o`` options first (each one is a line of the pseudo-file ``command-line``,
numbered 0), then the lines of ``-f FILE``. That order is sshd's, and together
with sshd's rule that *the first value obtained wins* it is what makes ``-o``
override the file. Keywords that may be given many times (``HostKey``,
``ListenAddress``) accumulate in that same order instead.

Each keyword is one row of ``_KEYWORDS``: the settings field it fills, the
function that turns its arguments into a value, and whether it accumulates.
Adding a keyword is adding a row. Values are checked even when an earlier
value already won, as sshd does, so a typo is reported wherever it is.

Every error is a ``ConfigError`` whose message is one line in sshd's shape:
``/etc/hashike/sshd_config line 3: Bad configuration option: Foo``.

User authentication. hashiked runs as one ordinary OS user and grants logins
to the names its configuration allows; it never switches users and never reads
the system's password database. Its keywords:

``AllowUsers pattern ...``
    Login names that may authenticate (``*`` and ``?`` wildcards; ``USER@HOST``
    also checks the client's address, HOST being a pattern or a CIDR block).
    Several lines add up. Default: only the name of the user hashiked runs as.
    Every allowed name is a label for that one account: ``%h`` is its home
    directory, ``%u`` the login name.
``AuthorizedKeysFile pattern ...``
    The files holding each login's public keys; ``%h``, ``%u``, ``%U`` and
    ``%%`` are expanded and a relative path is relative to the home directory
    (default ``.ssh/authorized_keys``; ``none`` for no files).
``PubkeyAuthentication yes|no``
    Offer ``publickey`` (default yes).
``PasswordFile path`` (hashike's own keyword)
    Lines ``user:bcrypt-hash`` (``hashike-keygen -P user`` makes them); blank
    and ``#`` lines are ignored. The only source of passwords: without it no
    password method is offered. Default ``none``.
``PasswordAuthentication yes|no``
    Offer ``password`` (default **no**). ``no`` turns off every password
    prompt, keyboard-interactive included.
``KbdInteractiveAuthentication yes|no``
    Also ask for the password through ``keyboard-interactive`` (RFC 4256;
    default yes, ``ChallengeResponseAuthentication`` is an alias). The one
    question asked is the password, so the method is offered only when
    ``PasswordAuthentication`` is yes and a ``PasswordFile`` is set.
``MaxAuthTries n``
    Failed attempts before the connection ends (default 6).
``Banner path``
    Text sent to the client before authentication (default ``none``).

Forwarding. What a logged-in client may forward, as :class:`ForwardingPolicy`
(see :func:`forwarding_policy`); the authorized_keys options of the key that
logged in (``restrict``, ``no-port-forwarding``, ``permitopen``) narrow it
further, never widen it:

``AllowTcpForwarding yes|all|no|local|remote``
    Which directions are allowed (default yes; ``all`` is ``yes``). ``-L``
    (direct-tcpip and direct-streamlocal channels) needs yes or local.
``PermitOpen any|none|host:port ...``
    The destinations ``-L`` may reach (default any). ``*`` stands for any host
    or any port; a host is compared literally, as the client sent it. ``any``
    and ``none`` must appear alone. The first PermitOpen line wins.
``DisableForwarding yes|no``
    Turn every kind of forwarding off, whatever else is set (default no).
``GatewayPorts no|yes|clientspecified``
    Whether ``-R`` listeners may bind non-loopback addresses (default no);
    read and checked now, applied once remote forwarding exists.

Sessions. Shells and commands run as the user hashiked runs as, through that
user's login shell (see :mod:`hashike.aio.session_server`); as
:class:`SessionPolicy` (see :func:`session_policy`), narrowed further by the
``no-pty``/``restrict`` and ``command=`` options of the key that logged in:

``MaxSessions n``
    Session channels open at once on one connection (default 10). ``0``
    refuses every session, as sshd does: a forwarding-only account.
``PermitTTY yes|no``
    Whether a pty may be allocated (default yes).
``AcceptEnv pattern ...``
    Variable names the client may set with "env" requests (``*`` and ``?``
    wildcards; default none). Several lines add up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from hashike.config.policy import ForwardingPolicy, SessionPolicy, parse_permit_open
from hashike.config.syntax import UnterminatedQuote, parse_size, parse_time, split_arguments
from hashike.keys.authorized_keys import ForwardPermission, expand_authorized_keys_path
from hashike.proto.config import (
    DEFAULT_CIPHERS,
    DEFAULT_HOST_KEY_ALGORITHMS,
    DEFAULT_KEX,
    DEFAULT_MACS,
    SUPPORTED_CIPHERS,
    SUPPORTED_HOST_KEY_ALGORITHMS,
    SUPPORTED_KEX,
    SUPPORTED_MACS,
    TransportConfig,
    apply_algorithm_spec,
)

__all__ = [
    "COMMAND_LINE",
    "DEFAULT_AUTHORIZED_KEYS_FILE",
    "DEFAULT_LISTEN_HOSTS",
    "NO_REKEY_BYTES",
    "ConfigError",
    "ServerSettings",
    "auth_methods",
    "forwarding_policy",
    "listen_endpoints",
    "parse_listen_address",
    "parse_server_config",
    "session_policy",
    "transport_config",
]

# The pseudo-file name sshd gives to -o options in its error messages.
COMMAND_LINE = "command-line"

# Deliberate deviation from sshd (which listens on every address): with no
# ListenAddress, hashiked listens on loopback only.
DEFAULT_LISTEN_HOSTS: tuple[str, ...] = ("127.0.0.1", "::1")

# ``RekeyLimit none``: no byte-count rekeying from configuration. A value no
# connection reaches, so `sent >= rekey_bytes` needs no special case; the
# packet layer still applies each cipher's own safety limit.
NO_REKEY_BYTES = (1 << 63) - 1

DEFAULT_AUTHORIZED_KEYS_FILE = ".ssh/authorized_keys"

_DEFAULT_REKEY_BYTES = TransportConfig().rekey_bytes
_DEFAULT_REKEY_SECONDS = TransportConfig().rekey_seconds


class ConfigError(ValueError):
    """A configuration line hashiked cannot accept; the message is one line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """The server's settings after all configuration sources were applied.

    ``listen_addresses`` empty means the default: loopback only (see
    ``listen_endpoints``); a ``None`` port means "the Port setting".
    ``rekey_bytes == NO_REKEY_BYTES`` and ``rekey_seconds == math.inf`` mean no
    limit of that kind. ``login_grace_time == 0`` means no limit, as in sshd.
    ``max_startups`` is sshd's ``(start, rate, full)``.

    ``allow_users`` empty means the default: only the user hashiked runs as.
    ``password_file`` and ``banner`` are paths, None for ``none``. Which
    methods these settings offer is :func:`auth_methods`'s answer.

    ``permit_open`` None means ``any``, an empty tuple ``none``. What the
    forwarding keywords allow together is :func:`forwarding_policy`'s answer.
    """

    port: int = 22
    listen_addresses: tuple[tuple[str, int | None], ...] = ()
    host_key_files: tuple[str, ...] = ()
    ciphers: tuple[str, ...] = DEFAULT_CIPHERS
    kex_algorithms: tuple[str, ...] = DEFAULT_KEX
    host_key_algorithms: tuple[str, ...] = DEFAULT_HOST_KEY_ALGORITHMS
    macs: tuple[str, ...] = DEFAULT_MACS
    rekey_bytes: int = _DEFAULT_REKEY_BYTES
    rekey_seconds: float = _DEFAULT_REKEY_SECONDS
    login_grace_time: float = 120.0
    max_startups: tuple[int, int, int] = (10, 30, 100)
    authorized_keys_files: tuple[str, ...] = (DEFAULT_AUTHORIZED_KEYS_FILE,)
    pubkey_authentication: bool = True
    password_authentication: bool = False
    kbd_interactive_authentication: bool = True
    password_file: str | None = None
    max_auth_tries: int = 6
    allow_users: tuple[str, ...] = ()
    banner: str | None = None
    allow_tcp_forwarding: str = "yes"  # yes | no | local | remote ("all" is stored as "yes")
    permit_open: tuple[ForwardPermission, ...] | None = None  # None: any; (): none
    disable_forwarding: bool = False
    gateway_ports: str = "no"  # no | yes | clientspecified
    max_sessions: int = 10
    permit_tty: bool = True
    accept_env: tuple[str, ...] = ()


class _ValueError(Exception):
    """Raised by value parsers; the caller adds "<file> line <n>: " and, when
    ``name_keyword`` is set, the keyword (sshd: "... line 3: Port missing argument.")."""

    def __init__(self, message: str, *, name_keyword: bool = False) -> None:
        super().__init__(message)
        self.name_keyword = name_keyword


_Parser = Callable[[list[str]], Any]


# --- value formats -----------------------------------------------------------


def parse_listen_address(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port``, ``[v6]`` or a bare IPv6 address."""
    if text.startswith("["):
        end = text.find("]")
        if end < 2:
            raise ValueError(f"invalid address '{text}'")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"invalid address '{text}'")
        return host, _port(rest[1:])
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not host:
            raise ValueError(f"invalid address '{text}'")
        return host, _port(port)
    if not text:
        raise ValueError("empty address")
    # No colon: a host name or IPv4 address. Two or more: a bare IPv6 address.
    return text, None


def _is_number(text: str) -> bool:
    # str.isdigit alone admits '²' and other digits int() refuses.
    return text.isascii() and text.isdigit()


def _port(text: str) -> int:
    # 0 asks the kernel for a free port (hashiked prints the one it got): an
    # extension over sshd, which tests and the demo rely on.
    if not _is_number(text) or not 0 <= int(text) <= 65535:
        raise ValueError(f"invalid port '{text}'")
    return int(text)


# --- keyword parsers: list of arguments -> value ------------------------------


def _one(args: list[str]) -> str:
    if not args:
        raise _ValueError("missing argument.", name_keyword=True)
    if len(args) > 1:
        raise _ValueError(f"garbage at end of line: '{args[1]}'.", name_keyword=True)
    return args[0]


def _parse_port(args: list[str]) -> int:
    arg = _one(args)
    try:
        return _port(arg)
    except ValueError:
        raise _ValueError(f"Badly formatted port number '{arg}'.") from None


def _parse_listen(args: list[str]) -> tuple[str, int | None]:
    arg = _one(args)
    try:
        return parse_listen_address(arg)
    except ValueError as exc:
        raise _ValueError(f"Bad ListenAddress '{arg}': {exc}.") from None


def _parse_host_key(args: list[str]) -> str:
    arg = _one(args)
    if not arg:
        raise _ValueError("HostKey: empty path.")
    return arg


def _algorithms(what: str, defaults: tuple[str, ...], supported: tuple[str, ...]) -> _Parser:
    def parse(args: list[str]) -> tuple[str, ...]:
        arg = _one(args)
        try:
            return apply_algorithm_spec(arg, defaults, supported)
        except ValueError as exc:
            raise _ValueError(f"Bad {what} '{arg}': {exc}.") from None

    return parse


def _parse_rekey_limit(args: list[str]) -> tuple[int, float]:
    if not args:
        raise _ValueError("missing argument.", name_keyword=True)
    if len(args) > 2:
        raise _ValueError(f"garbage at end of line: '{args[2]}'.", name_keyword=True)
    size_arg = args[0]
    if size_arg == "default":
        size = _DEFAULT_REKEY_BYTES
    elif size_arg == "none":
        size = NO_REKEY_BYTES
    else:
        try:
            size = parse_size(size_arg)
        except ValueError:
            raise _ValueError(f"Bad RekeyLimit size '{size_arg}'.") from None
        # Below a few blocks every packet would trigger a key exchange (sshd: 16).
        if size < 16:
            raise _ValueError(f"RekeyLimit too small: '{size_arg}'.")
    seconds = _DEFAULT_REKEY_SECONDS
    if len(args) == 2:
        time_arg = args[1]
        if time_arg == "none":
            seconds = math.inf
        elif time_arg != "default":
            try:
                seconds = float(parse_time(time_arg)) or math.inf
            except ValueError:
                raise _ValueError(f"Bad RekeyLimit time '{time_arg}'.") from None
    return size, seconds


def _parse_login_grace_time(args: list[str]) -> float:
    arg = _one(args)
    try:
        return float(parse_time(arg))
    except ValueError:
        raise _ValueError(f"Invalid LoginGraceTime '{arg}'.") from None


def _parse_max_startups(args: list[str]) -> tuple[int, int, int]:
    arg = _one(args)
    parts = arg.split(":")
    if len(parts) not in (1, 3) or not all(_is_number(p) for p in parts):
        raise _ValueError(f"Bad MaxStartups spec '{arg}'.")
    if len(parts) == 1:
        # A single number: refuse every connection beyond it (rate 100%).
        start = full = int(parts[0])
        rate = 100
    else:
        start, rate, full = (int(p) for p in parts)
    if not (0 < start <= full and 1 <= rate <= 100):
        raise _ValueError(f"Illegal MaxStartups spec '{arg}'.")
    return start, rate, full


def _parse_flag(args: list[str]) -> bool:
    arg = _one(args)
    value = {"yes": True, "no": False}.get(arg.lower())
    if value is None:
        raise _ValueError(f'unsupported option "{arg}".')
    return value


def _parse_authorized_keys_files(args: list[str]) -> tuple[str, ...]:
    if not args:
        raise _ValueError("missing argument.", name_keyword=True)
    if [a.lower() for a in args] == ["none"]:
        return ()
    for arg in args:
        try:
            # Expanding with placeholder values finds a bad token now rather
            # than at the first login.
            expand_authorized_keys_path(arg, "user", "/home", 0)
        except ValueError:
            raise _ValueError(f"AuthorizedKeysFile: bad token in '{arg}'.") from None
    return tuple(args)


def _parse_optional_path(args: list[str]) -> str | None:
    arg = _one(args)
    if not arg:
        raise _ValueError("empty path.", name_keyword=True)
    return None if arg.lower() == "none" else arg


def _parse_max_auth_tries(args: list[str]) -> int:
    arg = _one(args)
    # At least one try: with none, no one could ever log in.
    if not _is_number(arg) or not 1 <= int(arg) <= 1_000_000:
        raise _ValueError(f"Invalid MaxAuthTries '{arg}'.")
    return int(arg)


def _parse_allow_users(args: list[str]) -> tuple[str, ...]:
    if not args:
        raise _ValueError("missing argument.", name_keyword=True)
    for arg in args:
        user, at, host = arg.rpartition("@")  # sshd splits USER@HOST at the last '@'
        if not arg or (at and not (user and host)):
            raise _ValueError(f"Bad AllowUsers pattern '{arg}'.")
    return tuple(args)


def _parse_max_sessions(args: list[str]) -> int:
    arg = _one(args)
    # 0 is meaningful: no sessions at all (forwarding only).
    if not _is_number(arg) or int(arg) > 1_000_000:
        raise _ValueError(f"Invalid MaxSessions '{arg}'.")
    return int(arg)


def _parse_accept_env(args: list[str]) -> tuple[str, ...]:
    if not args:
        raise _ValueError("missing argument.", name_keyword=True)
    for arg in args:
        if not arg or "=" in arg:
            raise _ValueError(f"Invalid environment name '{arg}'.", name_keyword=True)
    return tuple(args)


def _choice(*values: str, aliases: dict[str, str] | None = None) -> _Parser:
    """One of a few words (case-insensitive, as sshd's multistate options)."""

    def parse(args: list[str]) -> str:
        arg = _one(args)
        word = arg.lower()
        word = (aliases or {}).get(word, word)
        if word not in values:
            raise _ValueError(f'unsupported option "{arg}".')
        return word

    return parse


def _parse_permit_open(args: list[str]) -> tuple[ForwardPermission, ...] | None:
    if not args:
        raise _ValueError("missing argument.", name_keyword=True)
    for word in ("any", "none"):
        if word in args and len(args) > 1:
            raise _ValueError(f'"{word}" must appear alone.', name_keyword=True)
    try:
        return parse_permit_open(args)
    except ValueError as exc:
        message = str(exc)
        raise _ValueError(f"{message[:1].upper()}{message[1:]}.") from None


# --- the keyword table --------------------------------------------------------


def _split(text: str) -> list[str]:
    try:
        return split_arguments(text)
    except UnterminatedQuote:
        raise _ValueError("unterminated quote.", name_keyword=True) from None


@dataclass(frozen=True, slots=True)
class _Keyword:
    # ServerSettings field names this keyword fills; a parser returning a tuple
    # fills several fields at once (RekeyLimit).
    fields: tuple[str, ...]
    parse: _Parser
    # Repeated lines add up (the value is one item, or with ``extend`` a tuple
    # of items) instead of the first one winning.
    accumulate: bool = False
    extend: bool = False


_KEYWORDS: dict[str, _Keyword] = {
    "port": _Keyword(("port",), _parse_port),
    "listenaddress": _Keyword(("listen_addresses",), _parse_listen, accumulate=True),
    "hostkey": _Keyword(("host_key_files",), _parse_host_key, accumulate=True),
    "ciphers": _Keyword(("ciphers",), _algorithms("SSH2 cipher spec", DEFAULT_CIPHERS, SUPPORTED_CIPHERS)),
    "kexalgorithms": _Keyword(
        ("kex_algorithms",), _algorithms("SSH2 KexAlgorithms", DEFAULT_KEX, SUPPORTED_KEX)
    ),
    "hostkeyalgorithms": _Keyword(
        ("host_key_algorithms",),
        _algorithms("key types", DEFAULT_HOST_KEY_ALGORITHMS, SUPPORTED_HOST_KEY_ALGORITHMS),
    ),
    "macs": _Keyword(("macs",), _algorithms("SSH2 mac spec", DEFAULT_MACS, SUPPORTED_MACS)),
    "rekeylimit": _Keyword(("rekey_bytes", "rekey_seconds"), _parse_rekey_limit),
    "logingracetime": _Keyword(("login_grace_time",), _parse_login_grace_time),
    "maxstartups": _Keyword(("max_startups",), _parse_max_startups),
    "authorizedkeysfile": _Keyword(("authorized_keys_files",), _parse_authorized_keys_files),
    "pubkeyauthentication": _Keyword(("pubkey_authentication",), _parse_flag),
    "passwordauthentication": _Keyword(("password_authentication",), _parse_flag),
    "kbdinteractiveauthentication": _Keyword(("kbd_interactive_authentication",), _parse_flag),
    # sshd's older name for the same setting; first value of either wins.
    "challengeresponseauthentication": _Keyword(("kbd_interactive_authentication",), _parse_flag),
    "passwordfile": _Keyword(("password_file",), _parse_optional_path),
    "maxauthtries": _Keyword(("max_auth_tries",), _parse_max_auth_tries),
    "allowusers": _Keyword(("allow_users",), _parse_allow_users, accumulate=True, extend=True),
    "banner": _Keyword(("banner",), _parse_optional_path),
    "allowtcpforwarding": _Keyword(
        ("allow_tcp_forwarding",), _choice("yes", "no", "local", "remote", aliases={"all": "yes"})
    ),
    "permitopen": _Keyword(("permit_open",), _parse_permit_open),
    "disableforwarding": _Keyword(("disable_forwarding",), _parse_flag),
    "gatewayports": _Keyword(("gateway_ports",), _choice("no", "yes", "clientspecified")),
    "maxsessions": _Keyword(("max_sessions",), _parse_max_sessions),
    "permittty": _Keyword(("permit_tty",), _parse_flag),
    "acceptenv": _Keyword(("accept_env",), _parse_accept_env, accumulate=True, extend=True),
}


# --- lines --------------------------------------------------------------------

# sshd separates the keyword from its arguments by whitespace or one '='.
_KEYWORD_RE = re.compile(r"\s*([^\s=]+)\s*(?:=\s*)?(.*)", re.DOTALL)


@dataclass(slots=True)
class _Builder:
    values: dict[str, Any] = field(default_factory=dict)
    lists: dict[str, list[Any]] = field(default_factory=dict)

    def apply_line(self, line: str, source: str, lineno: int) -> None:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            return
        m = _KEYWORD_RE.fullmatch(stripped)
        assert m is not None  # the line is non-blank, so a keyword matches
        keyword, rest = m.group(1), m.group(2)
        spec = _KEYWORDS.get(keyword.lower())
        if spec is None:
            raise ConfigError(f"{source} line {lineno}: Bad configuration option: {keyword}")
        try:
            value = spec.parse(_split(rest))
        except _ValueError as exc:
            where = f"{source} line {lineno}:"
            message = f"{where} {keyword} {exc}" if exc.name_keyword else f"{where} {exc}"
            raise ConfigError(message) from None
        if spec.accumulate:
            items = self.lists.setdefault(spec.fields[0], [])
            if spec.extend:
                items.extend(value)
            else:
                items.append(value)
            return
        values = value if len(spec.fields) > 1 else (value,)
        for name, v in zip(spec.fields, values, strict=True):
            # sshd: the first value obtained for a keyword is the one used.
            self.values.setdefault(name, v)

    def build(self) -> ServerSettings:
        fields = dict(self.values)
        fields.update((name, tuple(items)) for name, items in self.lists.items())
        return ServerSettings(**fields)


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None


def parse_server_config(path: str | None, overrides: Iterable[str] = ()) -> ServerSettings:
    """Read hashiked's settings from ``-o`` lines (``overrides``) and the file at
    ``path`` (if any), in that order; the first value of a keyword wins.

    Raises ConfigError with a one-line, sshd-style message.
    """
    builder = _Builder()
    for option in overrides:
        builder.apply_line(option, COMMAND_LINE, 0)
    if path is not None:
        for lineno, line in enumerate(_read_lines(path), start=1):
            builder.apply_line(line, path, lineno)
    return builder.build()


def listen_endpoints(settings: ServerSettings) -> tuple[tuple[str, int], ...]:
    """The (host, port) pairs to listen on: ListenAddress entries with the Port
    setting filled in, or loopback only when none was given."""
    if not settings.listen_addresses:
        return tuple((host, settings.port) for host in DEFAULT_LISTEN_HOSTS)
    return tuple((host, settings.port if port is None else port) for host, port in settings.listen_addresses)


def auth_methods(settings: ServerSettings) -> tuple[str, ...]:
    """The user authentication methods these settings offer, in sshd's order.

    Passwords come only from PasswordFile, so without one neither ``password``
    nor ``keyboard-interactive`` (whose one question is the password) is
    offered; and ``PasswordAuthentication no`` turns both off."""
    methods: list[str] = []
    if settings.pubkey_authentication:
        methods.append("publickey")
    passwords = settings.password_authentication and settings.password_file is not None
    if passwords:
        methods.append("password")
    if passwords and settings.kbd_interactive_authentication:
        methods.append("keyboard-interactive")
    return tuple(methods)


def forwarding_policy(settings: ServerSettings) -> ForwardingPolicy:
    """The runtime's forwarding policy for these settings (the authorized_keys
    options of each login are applied on top of it, per connection)."""
    return ForwardingPolicy(
        allow_tcp_forwarding=settings.allow_tcp_forwarding,
        permit_open=settings.permit_open,
        disable_forwarding=settings.disable_forwarding,
    )


def session_policy(settings: ServerSettings) -> SessionPolicy:
    """The runtime's session policy for these settings (each login's
    authorized_keys options apply on top of it)."""
    return SessionPolicy(
        max_sessions=settings.max_sessions,
        permit_tty=settings.permit_tty,
        accept_env=settings.accept_env,
    )


def transport_config(settings: ServerSettings, base: TransportConfig | None = None) -> TransportConfig:
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
