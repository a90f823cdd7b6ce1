"""The client's configuration: the ssh_config(5) syntax, a subset of its keywords.

Theory of operation. ssh reads its sources in a fixed order and keeps the
*first* value it obtains for a keyword; that order is what gives the command
line priority. Here the order is: the caller's command-line values (``-i``,
``-L``/``-R``/``-D``, which only accumulate), the ``-o`` options (each one a
line of the pseudo-file ``command-line``, numbered 0), then ``-F FILE`` if
given, else ``~/.ssh/config`` and then ``/etc/ssh/ssh_config`` (either may be
missing). ``IdentityFile``, the three ``*Forward`` keywords and ``SendEnv``
accumulate instead, in that same order, without duplicates. Explicit ``user``
and ``port`` arguments (``-l``, ``user@host``, ``-p``) beat every file.

Within a file, ``Host`` and ``Match`` lines switch the following lines on or
off. ``Host`` patterns (``*``, ``?``, ``!negation``, separated by blanks)
are matched, case-sensitively, against the host name exactly as typed;
``Match host`` takes a comma-separated pattern list and compares it, ignoring
case, with the HostName obtained so far (else the typed name), as ssh does.
Every file starts switched on. ``Include`` reads files (globs, relative to
``~/.ssh`` for user files and to the system file's directory for the system
file) as if inserted, except that an Include in a switched-off block reads
its files switched off, and the block's state is restored after it.

Every keyword is a row of ``KEYWORDS`` (:mod:`hashike.config.ssh_keywords`):
the ClientSettings field it fills, the function that turns its arguments into
a value, and how values combine. Arguments are checked even in switched-off
blocks, as ssh does. Keywords that OpenSSH knows and hashike does not
implement fall in two groups: those whose absence can only make hashike do
less or check more (X11, agent forwarding, GSSAPI ...) are accepted and
listed in ``ClientSettings.ignored_options``; those that would change where or
how hashike connects (``BindInterface`` ...) are refused, but only if they take
effect. ``IgnoreUnknown`` silences both refused and unknown keywords.

Once all lines are read, ``%`` tokens, ``${VAR}`` and ``~`` are expanded in
IdentityFile, UserKnownHostsFile, IdentityAgent and ControlPath, and ``%``
tokens in forwarding socket paths, with the final host name, port and user.

Every error is a ``ConfigError`` whose message is one line in ssh's words:
``/root/.ssh/config line 3: Bad port 'x'.``; an unknown keyword reads
``/root/.ssh/config: line 3: Bad configuration option: foo`` (sic: ssh puts a
colon after the file name in that message only).
"""

from __future__ import annotations

import getpass
import glob
import hashlib
import os
import pwd
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from hashike.config.forward import Forward, expand_variables
from hashike.config.jump import expand_proxy_command
from hashike.config.keywords import (
    COMMAND_LINE,
    KEYWORD_RE,
    ArgumentCount,
    Keyword,
    TransportSettings,
    ValueProblem,
    keep_first,
    transport_config,
)
from hashike.config.ssh_keywords import IGNORED, KEYWORDS, MIN_RSA_SIZE, REFUSED, is_env_reference
from hashike.config.syntax import FileTooLarge, UnterminatedQuote, read_config_lines, split_arguments
from hashike.keys.patterns import match_any, match_pattern, match_pattern_list
from hashike.proto.text import escape_text

__all__ = [
    "COMMAND_LINE",
    "DEFAULT_GLOBAL_KNOWN_HOSTS_FILES",
    "DEFAULT_IDENTITY_FILES",
    "DEFAULT_USER_KNOWN_HOSTS_FILES",
    "SYSTEM_CONFIG",
    "ClientSettings",
    "ConfigError",
    "parse_client_config",
    "transport_config",
]

SYSTEM_CONFIG = "/etc/ssh/ssh_config"
USER_CONFIG = os.path.join(".ssh", "config")  # relative to the home directory

# ssh tries more key types; these are the ones hashike can use.
DEFAULT_IDENTITY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_USER_KNOWN_HOSTS_FILES = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS_FILES = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT_PREFERRED_AUTHENTICATIONS = ("publickey", "keyboard-interactive", "password")

_MAX_INCLUDE_DEPTH = 16
_MAX_IDENTITY_FILES = 100
# ssh: with BatchMode and no ServerAliveInterval, probe a dead server every 5 min.
_BATCH_SERVER_ALIVE_INTERVAL = 300

StrictHostKeyChecking = Literal["yes", "no", "ask", "accept-new"]
AddressFamily = Literal["any", "inet", "inet6"]
RequestTTY = Literal["auto", "no", "yes", "force"]
SessionType = Literal["default", "none", "subsystem"]
ControlMaster = Literal["no", "yes", "ask", "auto", "autoask"]


class ConfigError(ValueError):
    """A configuration ssh would refuse, or hashike cannot honour; the message is
    one line (control characters from the input are shown escaped)."""

    def __init__(self, message: str) -> None:
        super().__init__(escape_text(message))


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings(TransportSettings):
    """The client's settings for one destination, every source applied.

    Paths are expanded (``~``, ``%`` tokens, ``${VAR}``). ``identity_files``
    holds the defaults when none was configured, and then
    ``identity_files_default`` is True (the caller may skip missing ones
    quietly). ``escape_char`` None means ``EscapeChar none``;
    ``connect_timeout`` None means no timeout; ``control_persist`` None means
    no, 0 forever, else seconds.
    """

    host: str
    hostname: str
    user: str
    port: int = 22
    identity_files: tuple[str, ...]
    identity_files_default: bool = False
    identities_only: bool = False
    identity_agent: str | None = None
    certificate_files: tuple[str, ...] = ()  # CertificateFile
    local_forwards: tuple[Forward, ...] = ()
    remote_forwards: tuple[Forward, ...] = ()
    dynamic_forwards: tuple[Forward, ...] = ()
    exit_on_forward_failure: bool = False
    gateway_ports: bool = False
    batch_mode: bool = False
    strict_host_key_checking: StrictHostKeyChecking = "ask"
    user_known_hosts_files: tuple[str, ...]
    global_known_hosts_files: tuple[str, ...] = DEFAULT_GLOBAL_KNOWN_HOSTS_FILES
    hash_known_hosts: bool = False
    host_key_alias: str | None = None
    required_rsa_size: int = MIN_RSA_SIZE
    password_authentication: bool = True
    kbd_interactive_authentication: bool = True
    pubkey_authentication: bool = True
    preferred_authentications: tuple[str, ...] = DEFAULT_PREFERRED_AUTHENTICATIONS
    number_of_password_prompts: int = 3
    connect_timeout: float | None = None
    server_alive_interval: int = 0
    server_alive_count_max: int = 3
    tcp_keep_alive: bool = True
    reconnect: int | None = 0  # hashike's Reconnect: attempts in a row, None for ever, 0 off
    reconnect_max_delay: int = 60  # ReconnectMaxDelay: the backoff's cap, seconds
    address_family: AddressFamily = "any"
    bind_address: str | None = None
    compression: bool = False
    log_level: str = "INFO"
    escape_char: str | None = "~"
    enable_escape_commandline: bool = False  # ~C, off by default as in OpenSSH 9.2+
    request_tty: RequestTTY = "auto"
    session_type: SessionType = "default"
    fork_after_authentication: bool = False
    proxy_jump: str | None = None
    proxy_command: str | None = None  # its tokens expanded
    send_env: tuple[str, ...] = ()
    set_env: tuple[tuple[str, str], ...] = ()
    control_master: ControlMaster = "no"
    control_path: str | None = None
    control_persist: int | None = None
    ignored_options: tuple[str, ...] = ()

    @property
    def forwards(self) -> tuple[Forward, ...]:
        """Every forwarding: local, then remote, then dynamic."""
        return self.local_forwards + self.remote_forwards + self.dynamic_forwards


# --- lines --------------------------------------------------------------------------------------

_BLANKS = " \t\r\n\f"


def _split(text: str) -> list[str]:
    try:
        return split_arguments(text)
    except UnterminatedQuote:
        raise ValueProblem("invalid quotes") from None


def _tilde(path: str, home: str) -> str:
    """ssh's tilde_expand_filename: ``~`` and ``~/x`` in ``home``, ``~user/x``."""
    if not path.startswith("~"):
        return path
    name, sep, rest = path[1:].partition("/")
    if name:
        try:
            base = pwd.getpwnam(name).pw_dir
        except KeyError:
            raise ValueError(f"No such user {name}") from None
    else:
        base = home
    return f"{base.rstrip('/')}/{rest}" if sep else base


def _read_lines(path: str, *, missing_ok: bool) -> list[str] | None:
    try:
        return read_config_lines(path)
    except FileTooLarge as exc:
        raise ConfigError(str(exc)) from None
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ConfigError(f"Can't open user config file {path}: No such file or directory") from None
    except OSError as exc:
        raise ConfigError(f"Can't open user config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    except ValueError as exc:  # a NUL in the path
        raise ConfigError(f"Can't open user config file {path}: {exc}") from None


def _check_permissions(path: str) -> None:
    # ssh refuses a user file that someone else could have written.
    try:
        st = os.stat(path)
    except OSError:
        return
    if (st.st_uid not in (0, os.getuid())) or st.st_mode & 0o022:
        raise ConfigError(f"Bad owner or permissions on {path}")


@dataclass(frozen=True, slots=True)
class _Source:
    path: str
    user_file: bool  # '~' and relative Include paths resolve in ~/.ssh
    never_match: bool  # included from a switched-off block
    depth: int


@dataclass(slots=True)
class _Builder:
    host: str
    home: str
    system_dir: str
    values: dict[str, Any] = field(default_factory=dict)
    lists: dict[str, list[Any]] = field(default_factory=dict)
    refused: dict[str, tuple[list[str], str]] = field(default_factory=dict)
    ignored: dict[str, None] = field(default_factory=dict)

    # --- sources

    def option(self, line: str) -> None:
        self._line(line, None, 0, True)

    def read_file(
        self,
        path: str,
        *,
        user_file: bool,
        check_permissions: bool,
        missing_ok: bool,
        never_match: bool = False,
        depth: int = 0,
    ) -> None:
        lines = _read_lines(path, missing_ok=missing_ok)
        if lines is None:
            return
        if check_permissions:
            _check_permissions(path)
        source = _Source(path, user_file, never_match, depth)
        active = not never_match
        for lineno, line in enumerate(lines, start=1):
            active = self._line(line, source, lineno, active)

    def add(self, name: str, value: Any) -> None:
        """Accumulate a value: duplicates are dropped, as ssh does."""
        items = self.lists.setdefault(name, [])
        if value not in items:
            items.append(value)

    # --- one line

    def _line(self, line: str, source: _Source | None, lineno: int, active: bool) -> bool:
        """Apply one line; returns whether the lines after it are switched on."""
        stripped = line.strip(_BLANKS)
        if not stripped or stripped.startswith("#"):
            return active
        m = KEYWORD_RE.fullmatch(stripped)
        name = source.path if source else COMMAND_LINE
        where = f"{name} line {lineno}"
        if m is None:
            raise ConfigError(f"{name}: line {lineno}: Bad configuration option: {stripped}")
        keyword, rest = m.group(1).lower(), m.group(2)
        if not rest.strip(_BLANKS):
            raise ConfigError(f'{where}: no argument after keyword "{keyword}"')
        try:
            # ssh gives ProxyCommand's text to the shell as written.
            args = [rest] if keyword == "proxycommand" else _split(rest)
        except ValueProblem as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if keyword in ("host", "match", "include"):
            if source is None:
                raise ConfigError(f"{keyword.capitalize()} directive not supported as a command-line option")
            if keyword == "host":
                return self._host(args, source, where)
            if keyword == "match":
                return self._match(args, source, where)
            self._include(args, source, where, active)
            return active
        spec = KEYWORDS.get(keyword)
        if spec is None:
            self._unimplemented(keyword, args, active, name, lineno)
            return active
        try:
            value = spec.value(args)
        except ArgumentCount as exc:
            if exc.extra is None:
                raise ConfigError(f"{where}: Missing argument.") from None
            raise ConfigError(f"{where}: keyword {keyword} extra arguments at end of line") from None
        except ValueProblem as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if active:
            self._merge(spec, value, where)
        return active

    def _merge(self, spec: Keyword, value: Any, where: str) -> None:
        name = spec.fields[0]
        if spec.merge == "append":
            if name == "identity_files" and len(self.lists.get(name, ())) >= _MAX_IDENTITY_FILES:
                raise ConfigError(f"{where}: Too many identity files specified (max {_MAX_IDENTITY_FILES})")
            self.add(name, value)
        elif spec.merge == "send_env":
            items = self.lists.setdefault(name, [])
            for arg in value:
                if arg.startswith("-"):
                    # "-PATTERN" forgets the names obtained so far that it matches.
                    items[:] = [item for item in items if not match_pattern(item, arg[1:])]
                else:
                    items.append(arg)
        elif spec.merge == "set_env":
            # ssh: the first SetEnv line obtained is the one used, and in it
            # the first value of a name.
            if name not in self.values:
                first: dict[str, str] = {}
                for env_name, env_value in value:
                    first.setdefault(env_name, env_value)
                self.values[name] = tuple(first.items())
        else:
            keep_first(self.values, spec, value)

    def _ignore_unknown(self, keyword: str) -> bool:
        patterns = self.values.get("ignore_unknown")
        return patterns is not None and match_pattern_list(keyword, patterns)

    def _unimplemented(self, keyword: str, args: list[str], active: bool, name: str, lineno: int) -> None:
        if keyword in IGNORED:
            if active:
                self.ignored[keyword] = None
            return
        if self._ignore_unknown(keyword):
            return
        if keyword in REFUSED:
            if active:
                self.refused.setdefault(keyword, (args, f"{name} line {lineno}"))
            return
        raise ConfigError(f"{name}: line {lineno}: Bad configuration option: {keyword}")

    # --- Host, Match, Include

    def _host(self, args: list[str], source: _Source, where: str) -> bool:
        if "" in args:
            raise ConfigError(f"{where}: keyword host empty argument")
        # Host patterns are case-sensitive, unlike Match host's.
        return not source.never_match and match_any(args, lambda pattern: match_pattern(self.host, pattern))

    def _match_hostname(self, where: str) -> str:
        hostname = self.values.get("hostname")
        if hostname is None:
            return self.host
        try:
            return expand_variables(hostname, {"h": self.host}, expand_env=False)
        except ValueError as exc:
            raise ConfigError(f"{where}: Bad HostName '{hostname}': {exc}") from None

    def _match(self, args: list[str], source: _Source, where: str) -> bool:
        result = True
        i = 0
        while i < len(args):
            attribute = args[i]
            i += 1
            negate = attribute.startswith("!")
            name = attribute[1:] if negate else attribute
            if name.lower() == "all":
                if len(args) > 1:
                    raise ConfigError(f"{where}: 'all' cannot be combined with other Match attributes")
                result = not negate
            elif name.lower() == "host":
                if i >= len(args) or not args[i]:
                    raise ConfigError(f"{where}: Missing Match criteria for {name}")
                matched = match_pattern_list(self._match_hostname(where), args[i])
                i += 1
                if matched == negate:
                    result = False
            else:
                raise ConfigError(f"{where}: Unsupported Match attribute {name}")
        return not source.never_match and result

    def _include(self, args: list[str], source: _Source, where: str, active: bool) -> None:
        if source.depth >= _MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{where}: Too many recursive configuration includes")
        for arg in args:
            if arg.startswith("~"):
                if not source.user_file:
                    raise ConfigError(f"{where}: bad include path {arg}.")
                try:
                    arg = _tilde(arg, self.home)
                except ValueError as exc:
                    raise ConfigError(f"{where}: bad include path {arg}: {exc}") from None
            if not os.path.isabs(arg):
                base = os.path.join(self.home, ".ssh") if source.user_file else self.system_dir
                arg = os.path.join(base, arg)
            # glob(3) sorts its results; an Include that matches nothing is fine.
            try:
                paths = sorted(glob.glob(arg))
            except ValueError as exc:  # a NUL in the pattern
                raise ConfigError(f"{where}: bad include path {arg}: {exc}") from None
            for path in paths:
                self.read_file(
                    path,
                    user_file=source.user_file,
                    check_permissions=True,
                    missing_ok=True,
                    never_match=source.never_match or not active,
                    depth=source.depth + 1,
                )

    # --- the result

    def build(self, *, local_user: str, user: str | None, port: int | None) -> ClientSettings:
        for keyword, (args, where) in self.refused.items():
            if " ".join(args).lower() not in REFUSED[keyword]:
                raise ConfigError(
                    f"{where}: Unsupported option: {keyword} (hashike cannot honour it; "
                    "IgnoreUnknown would skip it)"
                )
        fields = dict(self.values)
        fields.pop("ignore_unknown", None)
        clear_forwards = fields.pop("clear_all_forwardings", False)
        host = self.host
        hostname = fields.pop("hostname", None)
        if hostname is None:
            hostname = host
        else:
            try:
                hostname = expand_variables(hostname, {"h": host}, expand_env=False)
            except ValueError as exc:
                raise ConfigError(f"Bad HostName '{hostname}': {exc}") from None
        # ssh lowercases the name, except one holding a '%' (an IPv6 zone).
        if "%" not in hostname:
            hostname = hostname.lower()
        fields["user"] = user if user is not None else fields.get("user", local_user)
        fields["port"] = port if port is not None else fields.get("port", 22)
        tokens = self._tokens(fields, host, hostname, local_user)

        def expand(keyword: str, value: str) -> str:
            try:
                return expand_variables(_tilde(value, self.home), tokens)
            except ValueError as exc:
                raise ConfigError(f"Bad {keyword} '{value}': {exc}") from None

        identity_files = self.lists.get("identity_files", [])
        fields["identity_files_default"] = not identity_files
        fields["identity_files"] = tuple(
            expand("IdentityFile", path) for path in identity_files or DEFAULT_IDENTITY_FILES
        )
        fields["certificate_files"] = tuple(
            expand("CertificateFile", path) for path in self.lists.get("certificate_files", [])
        )
        fields["user_known_hosts_files"] = tuple(
            expand("UserKnownHostsFile", path)
            for path in fields.get("user_known_hosts_files", DEFAULT_USER_KNOWN_HOSTS_FILES)
        )
        try:
            fields["global_known_hosts_files"] = tuple(
                _tilde(path, self.home)
                for path in fields.get("global_known_hosts_files", DEFAULT_GLOBAL_KNOWN_HOSTS_FILES)
            )
        except ValueError as exc:
            raise ConfigError(f"Bad GlobalKnownHostsFile: {exc}") from None
        agent = fields.get("identity_agent")
        # "SSH_AUTH_SOCK" and "$NAME" name a variable holding the path.
        if agent is not None and agent != "SSH_AUTH_SOCK" and not is_env_reference(agent):
            fields["identity_agent"] = expand("IdentityAgent", agent)
        if fields.get("control_path") is not None:
            fields["control_path"] = expand("ControlPath", fields["control_path"])
        for name in ("local_forwards", "remote_forwards", "dynamic_forwards"):
            forwards = () if clear_forwards else self.lists.get(name, ())
            fields[name] = tuple(_expand_sockets(fwd, tokens) for fwd in forwards)
        if "server_alive_interval" not in fields and fields.get("batch_mode", False):
            fields["server_alive_interval"] = _BATCH_SERVER_ALIVE_INTERVAL
        fields["send_env"] = tuple(self.lists.get("send_env", ()))
        proxy_field, proxy = fields.pop("proxy", ("proxy_jump", None))
        if proxy is not None and proxy_field == "proxy_command":
            try:
                proxy = expand_proxy_command(proxy, tokens)
            except ValueError as exc:
                raise ConfigError(f"percent_expand: {exc}") from None
        fields[proxy_field] = proxy
        fields["ignored_options"] = tuple(self.ignored)
        return ClientSettings(host=host, hostname=hostname, **fields)

    def _tokens(self, fields: Mapping[str, Any], host: str, hostname: str, local_user: str) -> dict[str, str]:
        """ssh_config(5) TOKENS, as OpenSSH 9.2 has them."""
        local_host = socket.gethostname()
        port, user = str(fields["port"]), str(fields["user"])
        return {
            "C": hashlib.sha1(f"{local_host}{hostname}{port}{user}".encode()).hexdigest(),
            "d": self.home,
            "h": hostname,
            "i": str(os.getuid()),
            "k": fields.get("host_key_alias") or host,
            "L": local_host.split(".", 1)[0],
            "l": local_host,
            "n": host,
            "p": port,
            "r": user,
            "u": local_user,
        }


def _expand_sockets(fwd: Forward, tokens: Mapping[str, str]) -> Forward:
    """ssh expands ``%`` tokens in forwarding socket paths (only there)."""
    try:
        return replace(
            fwd,
            listen_socket=None
            if fwd.listen_socket is None
            else expand_variables(fwd.listen_socket, tokens, expand_env=False),
            connect_socket=None
            if fwd.connect_socket is None
            else expand_variables(fwd.connect_socket, tokens, expand_env=False),
        )
    except ValueError as exc:
        raise ConfigError(f"Bad forwarding socket path in '{fwd.describe()}': {exc}") from None


def _local_account() -> tuple[str, str]:
    """The local user name and home directory, from the password database as
    ssh takes them (not $USER/$HOME), with those as a fallback."""
    try:
        entry = pwd.getpwuid(os.getuid())
    except KeyError:
        return getpass.getuser(), os.path.expanduser("~")
    return entry.pw_name, entry.pw_dir


def parse_client_config(
    host: str,
    *,
    config_file: str | None,
    options: Sequence[str],
    user: str | None = None,
    port: int | None = None,
    home: str | None = None,
    identity_files: Sequence[str] = (),
    forwards: Sequence[Forward] = (),
    system_config_file: str | None = SYSTEM_CONFIG,
) -> ClientSettings:
    """The settings for connecting to ``host`` (as typed on the command line).

    ``options`` are the ``-o`` lines; ``config_file`` is ``-F`` (``"none"``
    reads no file at all), else ``~/.ssh/config`` and ``system_config_file``
    are read. ``user``/``port`` (``-l``, ``user@host``, ``-p``) beat the
    files; ``identity_files`` (``-i``) and ``forwards`` (``-L``/``-R``/``-D``)
    come before every configured one, ``-o`` included (ssh takes its options
    in command-line order; it also warns about and drops an ``-i`` file that
    does not exist, which is left to the caller). ``home`` replaces the home directory
    (``~``, ``%d``, where ``~/.ssh/config`` is).

    Raises ConfigError with a one-line, ssh-style message.
    """
    if not host:
        raise ConfigError("Empty host name")
    if port is not None and not 0 < port <= 65535:
        raise ConfigError(f"Bad port '{port}'")
    local_user, local_home = _local_account()
    home = local_home if home is None else home
    builder = _Builder(host, home, os.path.dirname(system_config_file or SYSTEM_CONFIG))
    for path in identity_files:
        builder.add("identity_files", path)
    for fwd in forwards:
        builder.add(f"{fwd.kind}_forwards", fwd)
    for line in options:
        builder.option(line)
    if config_file is not None:
        if config_file != "none":
            builder.read_file(config_file, user_file=True, check_permissions=False, missing_ok=False)
    else:
        builder.read_file(
            os.path.join(home, USER_CONFIG), user_file=True, check_permissions=True, missing_ok=True
        )
        if system_config_file is not None:
            builder.read_file(system_config_file, user_file=False, check_permissions=False, missing_ok=True)
    return builder.build(local_user=local_user, user=user, port=port)
