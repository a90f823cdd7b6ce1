"""authorized_keys files: keys a user accepts, and the options that restrict each key.

The format is sshd(8) AUTHORIZED_KEYS FILE FORMAT: one key a line, blank lines and
``#`` lines ignored; each line is ``[options] keytype base64 [comment]``, where the
options are comma-separated, contain no spaces except inside double quotes, and
``\\"`` inside quotes stands for a quote. Option keywords are case-insensitive.

Theory of operation. :func:`parse_authorized_keys` turns the text into
:class:`AuthorizedKey` objects, each with a frozen :class:`KeyOptions`. Options are
applied left to right, as sshd does: ``restrict`` turns off port, agent and X11
forwarding, pty allocation and ~/.ssh/rc, and a later ``port-forwarding``, ``pty``
... turns one back on (one given *before* ``restrict`` is overridden by it). A line
sshd would reject ("bad options": an unknown option, a missing quote, a bad value,
a repeated single-valued option) is skipped and reported as a ``(line, message)``
warning; nothing in a file's content ever raises. A line whose options parse but
cannot be satisfied (``from=`` with an invalid CIDR, an expired ``expiry-time``,
a ``cert-authority`` key offered as a plain key) is kept, and refused at login by
:meth:`AuthorizedKey.refusal`, as sshd refuses it then.

The server asks :func:`find_authorized_key` for the entry that lets a key log in,
then consults its options: :meth:`KeyOptions.permits_open` for each direct-tcpip
channel, :meth:`KeyOptions.permits_listen` for each tcpip-forward request,
:attr:`KeyOptions.forced_command` for sessions.
"""

from __future__ import annotations

import binascii
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from hashike.keys.patterns import match_any, match_pattern
from hashike.keys.textfile import iter_lines, read_bounded
from hashike.proto.hostkey import KeyFormatError, PublicKey

__all__ = [
    "parse_forward_permission",
    "MAX_FILE_SIZE",
    "MAX_LINE_LENGTH",
    "AuthorizedKey",
    "ForwardPermission",
    "KeyOptions",
    "OptionsError",
    "expand_authorized_keys_files",
    "expand_authorized_keys_path",
    "find_authorized_key",
    "load_authorized_keys",
    "parse_authorized_key_line",
    "parse_authorized_keys",
    "parse_key_options",
    "split_options",
]

MAX_LINE_LENGTH = 64 * 1024
MAX_FILE_SIZE = 16 * 1024 * 1024
_SUPPORTED_TYPES = frozenset(
    {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"}
)
# Key type names sshd knows; a line starting with one of these has no options.
_KEY_TYPE_NAMES = _SUPPORTED_TYPES | {
    "ssh-dss",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}
# Toggles that ``restrict`` turns off; "no-NAME" turns one off, "NAME" back on.
_TOGGLES = {
    "port-forwarding": "port_forwarding",
    "agent-forwarding": "agent_forwarding",
    "x11-forwarding": "x11_forwarding",
    "pty": "pty",
    "user-rc": "user_rc",
}
_SINGLE_VALUED = frozenset({"command", "from", "expiry-time", "principals", "tunnel"})
_VALUED = _SINGLE_VALUED | {"environment", "permitopen", "permitlisten"}
_ENV_NAME = re.compile(r"[A-Za-z0-9_]+")
_EXPIRY = re.compile(r"([0-9]{8}|[0-9]{12}|[0-9]{14})([zZ]?)")


class OptionsError(ValueError):
    """An authorized_keys options field sshd would reject ("bad key options")."""


@dataclass(frozen=True, slots=True)
class ForwardPermission:
    """One ``permitopen="host:port"`` or ``permitlisten="[host:]port"`` grant.

    ``host`` is ``"*"`` for any host (IPv6 brackets removed); ``port`` is None for ``*``.
    """

    host: str
    port: int | None

    def permits(self, host: str, port: int, *, wildcards: bool) -> bool:
        """Does this grant cover ``host``:``port``? With ``wildcards`` (permitlisten) the host is an
        ssh_config(5) pattern, matched case-insensitively; otherwise (permitopen) a literal name."""
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        if wildcards:
            return match_pattern(host.lower(), self.host.lower())
        return host == self.host


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyOptions:
    """The options of one authorized_keys line (sshd(8) AUTHORIZED_KEYS FILE FORMAT).

    The default, ``KeyOptions()``, is a line without options: everything allowed.
    """

    port_forwarding: bool = True
    agent_forwarding: bool = True
    x11_forwarding: bool = True
    pty: bool = True
    user_rc: bool = True
    restrict: bool = False  # ``restrict`` was given (the toggles above record its effect)
    command: str | None = None
    environment: tuple[tuple[str, str], ...] = ()  # (NAME, value); the first of a NAME wins
    from_patterns: str | None = None  # from="pattern-list", as written
    permitopen: tuple[ForwardPermission, ...] = ()
    permitlisten: tuple[ForwardPermission, ...] = ()
    expiry_time: datetime | None = None  # timezone-aware
    principals: tuple[str, ...] | None = None
    cert_authority: bool = False
    tunnel: str | None = None  # a tun device number, or "any"
    no_touch_required: bool = False
    verify_required: bool = False

    @property
    def forced_command(self) -> str | None:
        """``command="..."``: run this instead of what the client asks (may be empty)."""
        return self.command

    def allows_port_forwarding(self) -> bool:
        return self.port_forwarding

    def allows_agent_forwarding(self) -> bool:
        return self.agent_forwarding

    def allows_x11_forwarding(self) -> bool:
        return self.x11_forwarding

    def allows_pty(self) -> bool:
        return self.pty

    def allows_user_rc(self) -> bool:
        return self.user_rc

    def permits_open(self, host: str, port: int) -> bool:
        """May a direct-tcpip channel (ssh -L) connect to ``host``:``port``?

        False if port forwarding is off; with no ``permitopen`` any destination; otherwise
        one must name the host literally (or ``*``) and the port (or ``*``).
        """
        if not self.port_forwarding:
            return False
        return not self.permitopen or any(p.permits(host, port, wildcards=False) for p in self.permitopen)

    def permits_listen(self, host: str, port: int) -> bool:
        """May a tcpip-forward request (ssh -R) listen on ``host``:``port``?

        False if port forwarding is off; with no ``permitlisten`` any; otherwise one must
        match. ``host`` is the address as the client sent it: ssh sends ``localhost`` when
        no listen address was given, which matches only a ``localhost`` pattern (or ``*``).
        Port 0 (the server picks) is covered only by a ``*`` port.
        """
        if not self.port_forwarding:
            return False
        return not self.permitlisten or any(p.permits(host, port, wildcards=True) for p in self.permitlisten)

    def allows_from(self, address: str, hostname: str | None = None) -> bool:
        """``from="pattern-list"``: is a client at ``address`` (and, when the server looks
        names up, ``hostname``) allowed? Patterns are wildcards or CIDR ``addr/len``; a
        match of a ``!`` pattern refuses. An invalid CIDR or an empty list refuses all."""
        if self.from_patterns is None:
            return True
        return _match_from(self.from_patterns, address, hostname)

    def expired(self, now: datetime) -> bool:
        """Is ``expiry-time`` in the past at ``now`` (an aware datetime)?"""
        return self.expiry_time is not None and now >= self.expiry_time


@dataclass(frozen=True, slots=True)
class AuthorizedKey:
    """One usable line: its key, options, 1-based line number and comment."""

    key: PublicKey
    options: KeyOptions
    line: int
    comment: str = ""

    def refusal(self, address: str, now: datetime, hostname: str | None = None) -> str | None:
        """Why sshd would refuse this line for a plain public key login, or None.

        ``now`` is an aware datetime (the core never reads the clock itself).
        """
        options = self.options
        if options.cert_authority:
            return "key is a certification authority (cert-authority): it only signs certificates"
        if options.principals is not None:
            return "principals= is only valid on a cert-authority line"
        if options.expired(now):
            return "key has expired (expiry-time)"
        if not options.allows_from(address, hostname):
            return f"key is not allowed from {address} (from=)"
        return None


# --- options -------------------------------------------------------------------------


def split_options(line: str) -> tuple[str, str]:
    """Split off the options field: everything up to the first space or tab not inside quotes."""
    quoted = False
    i = 0
    while i < len(line):
        char = line[i]
        if quoted and char == "\\" and line[i + 1 : i + 2] == '"':
            i += 2
            continue
        if char == '"':
            quoted = not quoted
        elif not quoted and char in " \t":
            return line[:i], line[i:].lstrip(" \t")
        i += 1
    if quoted:
        raise OptionsError("missing end quote")
    return line, ""


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """The double-quoted value starting at ``pos``, with ``\\"`` for a quote; and the end."""
    if text[pos : pos + 1] != '"':
        raise OptionsError("missing start quote")
    value: list[str] = []
    i = pos + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and text[i + 1 : i + 2] == '"':
            value.append('"')
            i += 2
        elif char == '"':
            return "".join(value), i + 1
        else:
            value.append(char)
            i += 1
    raise OptionsError("missing end quote")


def _port(text: str) -> int | None:
    if text == "*":
        return None
    # Length first: int() of thousands of digits is slow, and refused by Python 3.11+.
    if not (0 < len(text) <= 5 and text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise OptionsError("invalid permission port")
    return int(text)


def parse_forward_permission(value: str, listen: bool) -> ForwardPermission:
    """``host:port`` (``[v6]:port``); for permitlisten also a bare port, meaning any host."""
    if listen and ":" not in value and not value.startswith("["):
        return ForwardPermission("*", _port(value))
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise OptionsError("invalid permission hostname")
        host, port = value[1:end], value[end + 2 :]
    else:
        host, sep, port = value.partition(":")
        if not sep or ":" in port:
            raise OptionsError("invalid permission port")
    return ForwardPermission(host, _port(port))


def _expiry(value: str) -> datetime:
    """sshd(8) expiry-time: YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]; local time unless Z."""
    m = _EXPIRY.fullmatch(value)
    if m is None:
        raise OptionsError("invalid expires time")
    digits = m.group(1).ljust(14, "0")
    try:
        moment = datetime.strptime(digits, "%Y%m%d%H%M%S")
        return moment.replace(tzinfo=UTC) if m.group(2) else moment.astimezone()
    except (ValueError, OverflowError) as exc:  # no such date, or out of range in local time
        raise OptionsError("invalid expires time") from exc


class _Builder:
    """Collects options left to right, as sshd applies them."""

    def __init__(self) -> None:
        self.toggles = dict.fromkeys(_TOGGLES.values(), True)
        self.flags = dict.fromkeys(
            ("restrict", "cert_authority", "no_touch_required", "verify_required"), False
        )
        self.seen: set[str] = set()
        self.command: str | None = None
        self.environment: dict[str, str] = {}
        self.from_patterns: str | None = None
        self.permitopen: list[ForwardPermission] = []
        self.permitlisten: list[ForwardPermission] = []
        self.expiry_time: datetime | None = None
        self.principals: tuple[str, ...] | None = None
        self.tunnel: str | None = None

    def flag(self, name: str) -> None:
        if name == "restrict":
            self.toggles = dict.fromkeys(_TOGGLES.values(), False)
            self.flags["restrict"] = True
        elif name in _TOGGLES:
            self.toggles[_TOGGLES[name]] = True
        elif name.startswith("no-") and name[3:] in _TOGGLES:
            self.toggles[_TOGGLES[name[3:]]] = False
        elif name in ("cert-authority", "no-touch-required", "verify-required"):
            self.flags[name.replace("-", "_")] = True
        else:
            raise OptionsError("unknown key option")

    def value(self, name: str, value: str) -> None:
        if name in _SINGLE_VALUED and name in self.seen:
            raise OptionsError(f'multiple "{name}" clauses')
        self.seen.add(name)
        if name == "command":
            self.command = value
        elif name == "environment":
            env_name, sep, env_value = value.partition("=")
            if not sep or not _ENV_NAME.fullmatch(env_name):
                raise OptionsError("invalid environment string")
            self.environment.setdefault(env_name, env_value)  # sshd keeps the first
        elif name == "from":
            self.from_patterns = value
        elif name == "permitopen":
            self.permitopen.append(parse_forward_permission(value, listen=False))
        elif name == "permitlisten":
            self.permitlisten.append(parse_forward_permission(value, listen=True))
        elif name == "expiry-time":
            self.expiry_time = _expiry(value)
        elif name == "principals":
            self.principals = tuple(value.split(","))
        elif name == "tunnel":
            if value != "any" and not (
                0 < len(value) <= 10 and value.isascii() and value.isdigit() and int(value) < 2**31 - 2
            ):
                raise OptionsError("invalid tun device")
            self.tunnel = value
        else:
            raise OptionsError("unknown key option")

    def build(self) -> KeyOptions:
        toggles, flags = self.toggles, self.flags
        return KeyOptions(
            port_forwarding=toggles["port_forwarding"],
            agent_forwarding=toggles["agent_forwarding"],
            x11_forwarding=toggles["x11_forwarding"],
            pty=toggles["pty"],
            user_rc=toggles["user_rc"],
            restrict=flags["restrict"],
            command=self.command,
            environment=tuple(self.environment.items()),
            from_patterns=self.from_patterns,
            permitopen=tuple(self.permitopen),
            permitlisten=tuple(self.permitlisten),
            expiry_time=self.expiry_time,
            principals=self.principals,
            cert_authority=flags["cert_authority"],
            tunnel=self.tunnel,
            no_touch_required=flags["no_touch_required"],
            verify_required=flags["verify_required"],
        )


def parse_key_options(text: str) -> KeyOptions:
    """Parse an options field (``restrict,permitopen="h:1"``); :class:`OptionsError` if sshd
    would reject it. Empty items between commas are ignored, as sshd ignores them."""
    builder = _Builder()
    pos = 0
    while pos < len(text):
        if text[pos] == ",":
            pos += 1
            continue
        end = pos
        while end < len(text) and text[end] not in ",=":
            end += 1
        name = text[pos:end].lower()
        if end < len(text) and text[end] == "=":
            if name not in _VALUED:
                raise OptionsError("unknown key option")
            value, end = _quoted(text, end + 1)
            builder.value(name, value)
            if end < len(text) and text[end] != ",":
                raise OptionsError("unexpected characters after option value")
        else:
            builder.flag(name)
        pos = end
    return builder.build()


def _normalise_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # sshd sees ::ffff:a.b.c.d as a.b.c.d
    return ip


class _InvalidCriteria(Exception):
    """A from= CIDR block with host bits set, or not a block at all."""


def _match_from(patterns: str, address: str, hostname: str | None) -> bool:
    ip = _normalise_address(address)
    text_address = str(ip) if ip is not None else address.lower()

    def matches(pattern: str) -> bool:
        pattern = pattern.lower()
        if "/" in pattern:
            try:
                network = ipaddress.ip_network(pattern, strict=True)  # host bits set: invalid
            except ValueError:
                raise _InvalidCriteria from None
            return ip is not None and ip.version == network.version and ip in network
        return match_pattern(text_address, pattern) or (
            hostname is not None and match_pattern(hostname.lower(), pattern)
        )

    try:
        return match_any(patterns.split(","), matches)
    except _InvalidCriteria:
        return False  # sshd: "invalid from criteria" refuses the key


# --- lines and files -----------------------------------------------------------------


_KEY_FIELDS = re.compile(r"([^ \t]+)[ \t]+([^ \t]+)(?:[ \t]+(.*))?")


def _parse_key(text: str) -> tuple[PublicKey, str]:
    """``keytype base64 [comment]`` to the key and the comment."""
    m = _KEY_FIELDS.fullmatch(text)
    if m is None:
        raise KeyFormatError("missing key type or key data")
    key_type, data, comment = m.group(1), m.group(2), m.group(3) or ""
    if key_type not in _SUPPORTED_TYPES:
        raise KeyFormatError(f"unsupported key type {key_type!r}")
    try:
        blob = binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise KeyFormatError("key data is not valid base64") from exc
    key = PublicKey.from_blob(blob)
    if key.key_type != key_type:
        raise KeyFormatError(f"key type {key_type!r} does not match the key data ({key.key_type})")
    return key, comment.strip(" \t")


def parse_authorized_key_line(line: str, lineno: int = 1) -> AuthorizedKey | None:
    """Parse one line; None for a blank or comment line. Raises :class:`OptionsError`
    (bad options) or :class:`KeyFormatError` (bad or unsupported key) for a line to skip."""
    line = line.strip(" \t\r")
    if not line or line.startswith("#"):
        return None
    first = re.split(r"[ \t]", line, maxsplit=1)[0]
    options = KeyOptions()
    if first not in _KEY_TYPE_NAMES and not first.endswith("-cert-v01@openssh.com"):
        text, line = split_options(line)
        options = parse_key_options(text)
    key, comment = _parse_key(line)
    return AuthorizedKey(key, options, lineno, comment)


def parse_authorized_keys(data: str | bytes) -> tuple[list[AuthorizedKey], list[tuple[int, str]]]:
    """Parse a whole file: the usable keys, and ``(line, message)`` for every skipped line."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    keys: list[AuthorizedKey] = []
    warnings: list[tuple[int, str]] = []
    for lineno, raw in enumerate(iter_lines(data[:MAX_FILE_SIZE]), 1):
        if len(raw) > MAX_LINE_LENGTH:
            warnings.append((lineno, "line too long"))
            continue
        try:
            entry = parse_authorized_key_line(raw.decode("utf-8"), lineno)
        except UnicodeDecodeError:
            warnings.append((lineno, "line is not valid UTF-8"))
        except OptionsError as exc:
            warnings.append((lineno, f"bad key options: {exc}"))
        except KeyFormatError as exc:
            warnings.append((lineno, str(exc)))
        else:
            if entry is not None:
                keys.append(entry)
    return keys, warnings


def load_authorized_keys(
    path: str | os.PathLike[str], warnings: list[tuple[int, str]] | None = None
) -> list[AuthorizedKey]:
    """Read an authorized_keys file. A missing or unreadable file holds no keys; skipped
    lines (and a read error, as line 0) are appended to ``warnings`` if given.
    Only the first MAX_FILE_SIZE bytes are read. Never raises on the file's content."""
    found: list[tuple[int, str]] = []
    try:
        data, truncated = read_bounded(path, MAX_FILE_SIZE, whole_lines=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        if warnings is not None:
            warnings.append((0, f"cannot read {os.fspath(path)}: {exc.strerror or exc}"))
        return []
    if truncated:
        found.append((0, f"file larger than {MAX_FILE_SIZE} bytes: the rest is ignored"))
    keys, skipped = parse_authorized_keys(data)
    if warnings is not None:
        warnings.extend(found + skipped)
    return keys


def find_authorized_key(
    entries: Iterable[AuthorizedKey],
    key: PublicKey,
    address: str,
    now: datetime,
    hostname: str | None = None,
) -> AuthorizedKey | None:
    """The first line holding ``key`` whose options let it log in from ``address`` at ``now``
    (sshd tries every line holding the key, in order, until one is not refused)."""
    for entry in entries:
        if entry.key == key and entry.refusal(address, now, hostname) is None:
            return entry
    return None


# --- AuthorizedKeysFile ---------------------------------------------------------------


def expand_authorized_keys_path(pattern: str, user: str, home: str, uid: int | None = None) -> str:
    """sshd_config(5) AuthorizedKeysFile, TOKENS: expand ``%%``, ``%h`` (home), ``%u`` (user)
    and ``%U`` (numeric uid); a path that is not absolute is relative to the home directory.
    ValueError for an unknown token, a lone ``%``, or ``%U`` without ``uid``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char != "%":
            out.append(char)
            i += 1
            continue
        token = pattern[i + 1 : i + 2]
        if token == "%":
            out.append("%")
        elif token == "h":
            out.append(home)
        elif token == "u":
            out.append(user)
        elif token == "U" and uid is not None:
            out.append(str(uid))
        else:
            raise ValueError(f"AuthorizedKeysFile {pattern!r}: cannot expand %{token}")
        i += 2
    path = "".join(out)
    return path if os.path.isabs(path) else os.path.join(home, path)


def expand_authorized_keys_files(value: str, user: str, home: str, uid: int | None = None) -> list[str]:
    """A whole AuthorizedKeysFile value: whitespace-separated patterns, or ``none`` (no files)."""
    patterns = value.split()
    if [p.lower() for p in patterns] == ["none"]:
        return []
    return [expand_authorized_keys_path(p, user, home, uid) for p in patterns]
