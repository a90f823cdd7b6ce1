"""hashiked's configuration: the sshd_config(5) syntax, a subset of its keywords.

Theory of operation. Every source of configuration is a sequence of lines:
``-o`` options first (each one is a line of the pseudo-file ``command-line``,
numbered 0), then the lines of ``-f FILE``. That order is sshd's, and together
with sshd's rule that *the first value obtained wins* it is what makes ``-o``
override the file. Keywords that may be given many times (``HostKey``,
``ListenAddress``) accumulate in that same order instead.

Each keyword is one row of ``_KEYWORDS`` (a row of the keyword engine ssh_config
shares, :mod:`hashike.config.keywords`): the settings field it fills, the
function that turns its arguments into a value, and whether it accumulates.
Adding a keyword is adding a row. Values are checked even when an earlier
value already won, as sshd does, so a typo is reported wherever it is.

Every error is a ``ConfigError`` whose message is one line in sshd's shape:
``/etc/hashike/sshd_config line 3: Bad configuration option: Foo``.

User authentication. hashiked runs as one ordinary OS user and grants logins
to the names its configuration allows; it never switches users and never reads
the system's password database, unless ``PrivilegeSeparation`` (below) is on.
Its keywords:

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
    Where ``-R`` listeners bind (default no: loopback, whatever the client
    asks; yes: every address; clientspecified: the address the client asks).
``PermitListen any|none|[host:]port ...``
    The addresses and ports ``-R`` may listen on (default any); the host is
    a pattern, ``*`` any port, and ``AllowTcpForwarding`` must allow remote.
``AllowStreamLocalForwarding yes|all|no|local|remote``
    The same for Unix sockets (default yes), whatever AllowTcpForwarding says:
    direct-streamlocal channels need yes or local, streamlocal-forward
    (``-R /path:...``) yes or remote.
``StreamLocalBindMask mask``
    The octal umask a ``-R`` socket is created with (default 0177).
``StreamLocalBindUnlink yes|no``
    Remove an existing socket file before binding a ``-R`` socket (default no:
    the request fails when the file exists).
``RemoteForwardTakeover yes|no``
    A hashike extension (default no): a ``-R`` for a TCP address and port that
    an earlier connection of the same user, logged in with the same key,
    still holds cancels that forward and binds the new one, logged. The TCP
    counterpart of StreamLocalBindUnlink, for a client that reconnects before
    ClientAlive* found its old connection dead.

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

Admission (the DHEat class): ``MaxStartups start:rate:full`` drops
unauthenticated connections at random from ``start`` on; ``PerSourceMaxStartups
n|none``, ``PerSourceNetBlockSize v4[:v6]``, ``PerSourcePenalties`` and
``PerSourcePenaltyExemptList`` are OpenSSH 9.8's, see :mod:`hashike.config.srclimit`.

Keepalives (see :mod:`hashike.aio.keepalive`): ``ClientAliveInterval time``
(default 0, none) and ``ClientAliveCountMax n`` (default 3) probe a silent
client and drop it, with its ``-R`` listeners, when it stops answering;
``TCPKeepAlive yes|no`` sets SO_KEEPALIVE (default yes).

Workers (see :mod:`hashike.cli.workers`): ``Workers n|auto`` (default auto: one
per core; ``1`` is one process) and ``WorkerDrainTimeout time`` (default
1h): how long a worker retired by SIGHUP may keep its connections.

``PrivilegeSeparation yes|no`` (hashike's own, default no; needs root): each
login name is the OS account of that name (its home for ``%h``, its uid for
``%U``; root may not log in), and each authenticated connection is served by
a process of its own running as that account (see :mod:`hashike.aio.privsep`).

``StatusSocket path|none`` (hashike's own, default none): the control socket
``hashike status --server`` and ``hashiked -O status`` ask (see
:mod:`hashike.aio.server_status`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hashike.config.keywords import (
    COMMAND_LINE,
    KEYWORD_RE,
    ArgumentCount,
    Keyword,
    Parser,
    TransportSettings,
    ValueProblem,
    choice,
    keep_first,
    rekey_limit,
    single,
    transport_config,
    transport_keywords,
)
from hashike.config.policy import ForwardingPolicy, SessionPolicy, parse_permit_listen, parse_permit_open
from hashike.config.srclimit import (
    PenaltyPolicy,
    parse_exempt_list,
    parse_net_block_size,
    parse_penalties,
    parse_per_source_max_startups,
)
from hashike.config.syntax import (
    FileTooLarge,
    UnterminatedQuote,
    parse_size,
    parse_time,
    read_config_lines,
    split_arguments,
)
from hashike.keys.authorized_keys import ForwardPermission, expand_authorized_keys_path
from hashike.keys.command_tokens import check_tokens

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

# Deliberate deviation from sshd (which listens on every address): with no
# ListenAddress, hashiked listens on loopback only.
DEFAULT_LISTEN_HOSTS: tuple[str, ...] = ("127.0.0.1", "::1")

# ``RekeyLimit none``: no byte-count rekeying from configuration. A value no
# connection reaches, so `sent >= rekey_bytes` needs no special case; the
# packet layer still applies each cipher's own safety limit.
NO_REKEY_BYTES = (1 << 63) - 1

DEFAULT_AUTHORIZED_KEYS_FILE = ".ssh/authorized_keys"


class ConfigError(ValueError):
    """A configuration line hashiked cannot accept; the message is one line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings(TransportSettings):
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
    host_certificate_files: tuple[str, ...] = ()  # HostCertificate
    revoked_keys: str | None = None  # RevokedKeys
    authorized_keys_command: tuple[str, ...] = ()  # AuthorizedKeysCommand, split; (): none
    authorized_keys_command_user: str | None = None  # AuthorizedKeysCommandUser
    login_grace_time: float = 120.0
    max_startups: tuple[int, int, int] = (10, 30, 100)
    per_source_max_startups: int | None = None  # None: no limit
    per_source_net_block_size: tuple[int, int] = (32, 128)
    per_source_penalties: PenaltyPolicy | None = None  # None: off (see config.srclimit)
    per_source_penalty_exempt_list: tuple[str, ...] = ()
    authorized_keys_files: tuple[str, ...] = (DEFAULT_AUTHORIZED_KEYS_FILE,)
    pubkey_authentication: bool = True
    password_authentication: bool = False
    kbd_interactive_authentication: bool = True
    password_file: str | None = None
    trusted_user_ca_keys: str | None = None  # TrustedUserCAKeys
    authorized_principals_file: str | None = None  # AuthorizedPrincipalsFile
    max_auth_tries: int = 6
    allow_users: tuple[str, ...] = ()
    banner: str | None = None
    allow_tcp_forwarding: str = "yes"  # yes | no | local | remote ("all" is stored as "yes")
    permit_open: tuple[ForwardPermission, ...] | None = None  # None: any; (): none
    disable_forwarding: bool = False
    gateway_ports: str = "no"  # no | yes | clientspecified
    permit_listen: tuple[ForwardPermission, ...] | None = None  # None: any; (): none
    allow_streamlocal_forwarding: str = "yes"  # yes | no | local | remote ("all" is stored as "yes")
    streamlocal_bind_mask: int = 0o177
    streamlocal_bind_unlink: bool = False
    remote_forward_takeover: bool = False
    max_sessions: int = 10
    permit_tty: bool = True
    accept_env: tuple[str, ...] = ()
    client_alive_interval: int = 0  # seconds; 0: no keepalives
    client_alive_count_max: int = 3
    tcp_keep_alive: bool = True
    workers: int = 0  # 0: auto, one per core (the default), 1: one process
    worker_drain_timeout: int = 3600  # seconds
    privilege_separation: bool = False  # PrivilegeSeparation
    status_socket: str | None = None  # StatusSocket


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


def _parse_port(args: list[str]) -> int:
    arg = args[0]
    try:
        return _port(arg)
    except ValueError:
        raise ValueProblem(f"Badly formatted port number '{arg}'.") from None


def _parse_listen(args: list[str]) -> tuple[str, int | None]:
    arg = args[0]
    try:
        return parse_listen_address(arg)
    except ValueError as exc:
        raise ValueProblem(f"Bad ListenAddress '{arg}': {exc}.") from None


def _parse_host_key(args: list[str]) -> str:
    arg = args[0]
    if not arg:
        raise ValueProblem("HostKey: empty path.")
    return arg


def _rekey_size(arg: str) -> int:
    if arg == "none":
        return NO_REKEY_BYTES
    try:
        size = parse_size(arg)
    except ValueError:
        raise ValueProblem(f"Bad RekeyLimit size '{arg}'.") from None
    # Below a few blocks every packet would trigger a key exchange (sshd: 16).
    if size < 16:
        raise ValueProblem(f"RekeyLimit too small: '{arg}'.")
    return size


def _rekey_seconds(arg: str) -> int:
    try:
        return parse_time(arg)
    except ValueError:
        raise ValueProblem(f"Bad RekeyLimit time '{arg}'.") from None


def _parse_login_grace_time(args: list[str]) -> float:
    arg = args[0]
    try:
        return float(parse_time(arg))
    except ValueError:
        raise ValueProblem(f"Invalid LoginGraceTime '{arg}'.") from None


def _parse_max_startups(args: list[str]) -> tuple[int, int, int]:
    arg = args[0]
    parts = arg.split(":")
    if len(parts) not in (1, 3) or not all(_is_number(p) for p in parts):
        raise ValueProblem(f"Bad MaxStartups spec '{arg}'.")
    if len(parts) == 1:
        # A single number: refuse every connection beyond it (rate 100%).
        start = full = int(parts[0])
        rate = 100
    else:
        start, rate, full = (int(p) for p in parts)
    if not (0 < start <= full and 1 <= rate <= 100):
        raise ValueProblem(f"Illegal MaxStartups spec '{arg}'.")
    return start, rate, full


def _parse_workers(args: list[str]) -> int:
    arg = args[0]
    if arg.lower() == "auto":
        return 0
    if not _is_number(arg) or not 1 <= int(arg) <= 256:
        raise ValueProblem(f"Invalid Workers '{arg}'.")
    return int(arg)


def _parse_drain_timeout(args: list[str]) -> int:
    try:
        return parse_time(args[0])
    except ValueError:
        raise ValueProblem(f"Invalid WorkerDrainTimeout '{args[0]}'.") from None


_parse_flag = choice({"yes": True, "no": False})


def _one_of(*words: str, **aliases: str) -> Parser:
    """One of ``words`` (case-insensitive, as sshd's multistate options), or an alias of one."""
    return choice({**{word: word for word in words}, **aliases})


def _parse_authorized_keys_files(args: list[str]) -> tuple[str, ...]:
    if [a.lower() for a in args] == ["none"]:
        return ()
    for arg in args:
        try:
            # Expanding with placeholder values finds a bad token now rather
            # than at the first login.
            expand_authorized_keys_path(arg, "user", "/home", 0)
        except ValueError:
            raise ValueProblem(f"AuthorizedKeysFile: bad token in '{arg}'.") from None
    return tuple(args)


def _parse_optional_path(args: list[str]) -> str | None:
    arg = args[0]
    if not arg:
        raise ValueProblem("empty path.", name_keyword=True)
    return None if arg.lower() == "none" else arg


def _parse_keys_command(args: list[str]) -> tuple[str, ...]:
    if [a.lower() for a in args] == ["none"]:
        return ()
    if not args[0].startswith("/"):
        raise ValueProblem("AuthorizedKeysCommand must be an absolute path")
    try:
        check_tokens(args)
    except ValueError as exc:
        raise ValueProblem(f"{exc}.") from None
    return tuple(args)


def _parse_max_auth_tries(args: list[str]) -> int:
    arg = args[0]
    # At least one try: with none, no one could ever log in.
    if not _is_number(arg) or not 1 <= int(arg) <= 1_000_000:
        raise ValueProblem(f"Invalid MaxAuthTries '{arg}'.")
    return int(arg)


def _parse_allow_users(args: list[str]) -> tuple[str, ...]:
    for arg in args:
        user, at, host = arg.rpartition("@")  # sshd splits USER@HOST at the last '@'
        if not arg or (at and not (user and host)):
            raise ValueProblem(f"Bad AllowUsers pattern '{arg}'.")
    return tuple(args)


def _parse_max_sessions(args: list[str]) -> int:
    arg = args[0]
    # 0 is meaningful: no sessions at all (forwarding only).
    if not _is_number(arg) or int(arg) > 1_000_000:
        raise ValueProblem(f"Invalid MaxSessions '{arg}'.")
    return int(arg)


def _parse_accept_env(args: list[str]) -> tuple[str, ...]:
    for arg in args:
        if not arg or "=" in arg:
            raise ValueProblem(f"Invalid environment name '{arg}'.", name_keyword=True)
    return tuple(args)


def _parse_permit_open(args: list[str]) -> tuple[ForwardPermission, ...] | None:
    for word in ("any", "none"):
        if word in args and len(args) > 1:
            raise ValueProblem(f'"{word}" must appear alone.', name_keyword=True)
    try:
        return parse_permit_open(args)
    except ValueError as exc:
        message = str(exc)
        raise ValueProblem(f"{message[:1].upper()}{message[1:]}.") from None


def _parse_permit_listen(args: list[str]) -> tuple[ForwardPermission, ...] | None:
    for word in ("any", "none"):
        if word in args and len(args) > 1:
            raise ValueProblem(f'"{word}" must appear alone.', name_keyword=True)
    try:
        return parse_permit_listen(args)
    except ValueError as exc:
        message = str(exc)
        raise ValueProblem(f"{message[:1].upper()}{message[1:]}.") from None


def _parse_alive_interval(args: list[str]) -> int:
    try:
        return parse_time(args[0])
    except ValueError:
        raise ValueProblem("invalid time value.") from None


def _parse_alive_count(args: list[str]) -> int:
    arg = args[0]
    if not _is_number(arg) or int(arg) > 2**31 - 1:
        raise ValueProblem("integer value invalid.", name_keyword=True)
    return int(arg)


def _parse_bind_mask(args: list[str]) -> int:
    arg = args[0]
    if not arg or any(c not in "01234567" for c in arg) or int(arg, 8) > 0o777:
        raise ValueProblem("Invalid mask.")
    return int(arg, 8)


# --- the keyword table --------------------------------------------------------


def _split(text: str) -> list[str]:
    try:
        return split_arguments(text)
    except UnterminatedQuote:
        raise ValueProblem("unterminated quote.", name_keyword=True) from None


_KEYWORDS: dict[str, Keyword] = {
    "port": single("port", _parse_port),
    "listenaddress": single("listen_addresses", _parse_listen, merge="append"),
    "hostkey": single("host_key_files", _parse_host_key, merge="append"),
    "hostcertificate": single("host_certificate_files", _parse_host_key, merge="append"),
    **transport_keywords("SSH2 mac spec", rekey_limit(_rekey_size, _rekey_seconds, ignore_case=False)),
    "logingracetime": single("login_grace_time", _parse_login_grace_time),
    "maxstartups": single("max_startups", _parse_max_startups),
    "workers": single("workers", _parse_workers),
    "workerdraintimeout": single("worker_drain_timeout", _parse_drain_timeout),
    "privilegeseparation": single("privilege_separation", _parse_flag),
    "statussocket": single("status_socket", _parse_optional_path),
    "persourcemaxstartups": single("per_source_max_startups", parse_per_source_max_startups),
    "persourcenetblocksize": single("per_source_net_block_size", parse_net_block_size),
    "persourcepenalties": single("per_source_penalties", parse_penalties, max_args=None),
    "persourcepenaltyexemptlist": single("per_source_penalty_exempt_list", parse_exempt_list, max_args=None),
    "authorizedkeysfile": single("authorized_keys_files", _parse_authorized_keys_files, max_args=None),
    "pubkeyauthentication": single("pubkey_authentication", _parse_flag),
    "passwordauthentication": single("password_authentication", _parse_flag),
    "kbdinteractiveauthentication": single("kbd_interactive_authentication", _parse_flag),
    # sshd's older name for the same setting; first value of either wins.
    "challengeresponseauthentication": single("kbd_interactive_authentication", _parse_flag),
    "passwordfile": single("password_file", _parse_optional_path),
    "trustedusercakeys": single("trusted_user_ca_keys", _parse_optional_path),
    "revokedkeys": single("revoked_keys", _parse_optional_path),
    "authorizedkeyscommand": single("authorized_keys_command", _parse_keys_command, max_args=None),
    "authorizedkeyscommanduser": single("authorized_keys_command_user", _parse_optional_path),
    "authorizedprincipalsfile": single("authorized_principals_file", _parse_optional_path),
    "maxauthtries": single("max_auth_tries", _parse_max_auth_tries),
    "allowusers": single("allow_users", _parse_allow_users, merge="extend", max_args=None),
    "banner": single("banner", _parse_optional_path),
    "allowtcpforwarding": single(
        "allow_tcp_forwarding",
        _one_of("yes", "no", "local", "remote", all="yes"),
    ),
    "permitopen": single("permit_open", _parse_permit_open, max_args=None),
    "disableforwarding": single("disable_forwarding", _parse_flag),
    "gatewayports": single("gateway_ports", _one_of("no", "yes", "clientspecified")),
    "permitlisten": single("permit_listen", _parse_permit_listen, max_args=None),
    "allowstreamlocalforwarding": single(
        "allow_streamlocal_forwarding", _one_of("yes", "no", "local", "remote", all="yes")
    ),
    "streamlocalbindmask": single("streamlocal_bind_mask", _parse_bind_mask),
    "streamlocalbindunlink": single("streamlocal_bind_unlink", _parse_flag),
    "remoteforwardtakeover": single("remote_forward_takeover", _parse_flag),
    "maxsessions": single("max_sessions", _parse_max_sessions),
    "permittty": single("permit_tty", _parse_flag),
    "acceptenv": single("accept_env", _parse_accept_env, merge="extend", max_args=None),
    "clientaliveinterval": single("client_alive_interval", _parse_alive_interval),
    "clientalivecountmax": single("client_alive_count_max", _parse_alive_count),
    "tcpkeepalive": single("tcp_keep_alive", _parse_flag),
}


# --- lines --------------------------------------------------------------------


@dataclass(slots=True)
class _Builder:
    values: dict[str, Any] = field(default_factory=dict)
    lists: dict[str, list[Any]] = field(default_factory=dict)

    def apply_line(self, line: str, source: str, lineno: int) -> None:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            return
        m = KEYWORD_RE.fullmatch(stripped)
        assert m is not None  # the line is non-blank, so a keyword matches
        keyword, rest = m.group(1), m.group(2)
        spec = _KEYWORDS.get(keyword.lower())
        if spec is None:
            raise ConfigError(f"{source} line {lineno}: Bad configuration option: {keyword}")
        try:
            value = spec.value(_split(rest))
        except ArgumentCount as exc:
            problem = "missing argument." if exc.extra is None else f"garbage at end of line: '{exc.extra}'."
            raise ConfigError(f"{source} line {lineno}: {keyword} {problem}") from None
        except ValueProblem as exc:
            where = f"{source} line {lineno}:"
            message = f"{where} {keyword} {exc}" if exc.name_keyword else f"{where} {exc}"
            raise ConfigError(message) from None
        if spec.merge == "first":
            keep_first(self.values, spec, value)
            return
        items = self.lists.setdefault(spec.fields[0], [])
        if spec.merge == "extend":
            items.extend(value)
        else:
            items.append(value)

    def build(self) -> ServerSettings:
        fields = dict(self.values)
        fields.update((name, tuple(items)) for name, items in self.lists.items())
        return ServerSettings(**fields)


def _read_lines(path: str) -> list[str]:
    try:
        return read_config_lines(path)
    except FileTooLarge as exc:
        raise ConfigError(str(exc)) from None
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
        gateway_ports=settings.gateway_ports,
        permit_listen=settings.permit_listen,
        allow_streamlocal_forwarding=settings.allow_streamlocal_forwarding,
        streamlocal_bind_mask=settings.streamlocal_bind_mask,
        streamlocal_bind_unlink=settings.streamlocal_bind_unlink,
        remote_forward_takeover=settings.remote_forward_takeover,
    )


def session_policy(settings: ServerSettings) -> SessionPolicy:
    """The runtime's session policy for these settings (each login's
    authorized_keys options apply on top of it)."""
    return SessionPolicy(
        max_sessions=settings.max_sessions,
        permit_tty=settings.permit_tty,
        accept_env=settings.accept_env,
    )
