"""Port-forwarding specifications, parsed exactly as ssh(1) parses them.

Theory of operation. A specification (``-L``, ``-R``, ``-D`` or the
``LocalForward``/``RemoteForward``/``DynamicForward`` keywords, whose two
arguments ssh joins with ``:``) is first split into at most four fields at
``:``. A field that starts with ``[`` runs to the matching ``]`` and is taken
literally (that is how IPv6 addresses are written); elsewhere a backslash
escapes the next character. A field holding a ``/`` is a Unix-domain socket
path. The number of fields and which of them are paths then decide the shape:

====================  ================================================
fields                meaning
====================  ================================================
``port``              dynamic (``-D``, ``-R`` remote SOCKS)
``path``              dynamic on a socket
``bind:port``         dynamic with a bind address
``port:path``         TCP listener to a socket
``path:path``         socket to socket
``port:host:hport``   TCP to TCP
``path:host:hport``   socket listener to TCP
``bind:port:path``    TCP listener with bind address to a socket
``bind:port:host:hp`` TCP to TCP with bind address
====================  ================================================

Ports are numbers 0..65535 or service names (``getservbyname(name, "tcp")``).
A listening port of 0 ("let the server choose") is only meaningful for
``-R``; ssh refuses it for ``-L`` and ``-D``, and refuses a connect port of 0
everywhere. ``${VAR}`` is replaced from the environment before any of this,
as ssh does, so a variable may expand to a socket path.

One deliberate difference: a dynamic forward with a connect target
(``-D 1080:/path``, which ssh accepts and then quietly runs as a local
forward) is refused; everything else ssh accepts is accepted. The
``8080/::1/80`` "slash" syntax of old ssh versions is *not* accepted: since
OpenSSH 6.7 a ``/`` marks a socket path, and ssh rejects that form too.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from hashike.proto.text import escape_text

__all__ = [
    "ForwardKind",
    "Forward",
    "ForwardSpecError",
    "expand_variables",
    "forward_from_config",
    "parse_forward",
    "parse_port",
]

ForwardKind = Literal["local", "remote", "dynamic"]

_FLAGS: dict[ForwardKind, str] = {"local": "-L", "remote": "-R", "dynamic": "-D"}

# ssh's limits: NI_MAXHOST for host names, sizeof(sockaddr_un.sun_path) on
# Linux for socket paths (both including the terminating NUL).
_MAX_HOST = 1025
_MAX_SOCKET_PATH = 108

# C isspace(): what ssh skips before a specification.
_C_SPACE = " \t\n\v\f\r"


class ForwardSpecError(ValueError):
    """A forwarding specification ssh would refuse; the message is ssh's, on
    one line (control characters from the input are shown escaped)."""

    def __init__(self, message: str) -> None:
        super().__init__(escape_text(message))


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """One forwarding, as given.

    The listening side is either ``listen_port`` (with ``listen_host``: None
    when no bind address was given, ``""`` or ``"*"`` for all interfaces, else
    the address as written, IPv6 without brackets) or ``listen_socket``.
    The connecting side is ``connect_host``/``connect_port`` or
    ``connect_socket``, or nothing at all for a dynamic (SOCKS) forward:
    ``kind="dynamic"`` for ``-D``, ``kind="remote"`` with no connect target
    for ``-R [bind:]port``.
    """

    kind: ForwardKind
    listen_host: str | None = None
    listen_port: int | None = None
    listen_socket: str | None = None
    connect_host: str | None = None
    connect_port: int | None = None
    connect_socket: str | None = None

    @property
    def is_dynamic(self) -> bool:
        """True for a SOCKS forward: ``-D``, or ``-R`` without a target."""
        return self.connect_host is None and self.connect_socket is None

    def spec(self) -> str:
        """The specification in ssh's command-line syntax, without the flag;
        ``parse_forward(f.kind, f.spec()) == f`` for every parsed ``f``."""
        if self.listen_socket is not None:
            listen = _render_field(self.listen_socket, is_path=True)
        else:
            listen = str(self.listen_port)
            if self.listen_host is not None:
                listen = f"{_render_field(self.listen_host, is_path=False)}:{listen}"
        if self.connect_socket is not None:
            return f"{listen}:{_render_field(self.connect_socket, is_path=True)}"
        if self.connect_host is not None:
            return f"{listen}:{_render_field(self.connect_host, is_path=False)}:{self.connect_port}"
        return listen

    def describe(self) -> str:
        """The forwarding as ssh's option, e.g. ``-L [::1]:8080:example.org:80``."""
        return f"{_FLAGS[self.kind]} {self.spec()}"


def _render_field(text: str, *, is_path: bool) -> str:
    # Brackets read best (that is how IPv6 addresses are written) but cannot
    # hold a ']', and a '/' inside them makes the field a path; otherwise a
    # backslash escapes. A host escapes its '/' so that it stays a host (an
    # escaped '/' does not mark a path); a path never escapes its '/'.
    if ":" in text and "]" not in text and (is_path or "/" not in text):
        return f"[{text}]"
    escaped = text.replace("\\", "\\\\").replace(":", "\\:")
    if not is_path:
        escaped = escaped.replace("/", "\\/")
    if escaped and (escaped[0] == "[" or escaped[0] in _C_SPACE):
        escaped = "\\" + escaped
    return escaped


# --- ${VAR} and %x expansion ----------------------------------------------------------


def expand_variables(
    text: str,
    tokens: Mapping[str, str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    expand_env: bool = True,
) -> str:
    """ssh's one-pass expansion: ``${NAME}`` from ``env`` (default: os.environ)
    when ``expand_env``, and ``%x`` from ``tokens`` (``%%`` is a ``%``) when
    ``tokens`` is given. Expanded text is not expanded again.

    Raises ValueError naming an unknown token or an unset variable.
    """
    environ = os.environ if env is None else env
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if expand_env and text.startswith("${", i):
            end = text.find("}", i + 2)
            if end < 0:
                raise ValueError(f"environment variable '{text[i + 2 :]}' missing closing '}}'")
            name = text[i + 2 : end]
            if not name:
                raise ValueError("zero-length environment variable")
            value = environ.get(name)
            if value is None:
                raise ValueError(f"env var ${{{name}}} has no value")
            out.append(value)
            i = end + 1
            continue
        if c != "%" or tokens is None:
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("invalid format: '%' at end")
        key = text[i + 1]
        if key == "%":
            out.append("%")
        elif key in tokens:
            out.append(tokens[key])
        else:
            raise ValueError(f"unknown key %{key}")
        i += 2
    return "".join(out)


# --- ports ------------------------------------------------------------------------------


def parse_port(text: str) -> int | None:
    """A port as ssh's a2port reads it: a decimal number 0..65535 (strtoll
    syntax: leading blanks and a sign allowed, so ``+80`` is 80) or a TCP
    service name from the services database; None when it is neither."""
    m = _NUMBER_RE.fullmatch(text)
    if m is not None:
        # Length first: int() refuses very long digit strings with a ValueError.
        digits = m.group(2).lstrip("0") or "0"
        if len(digits) <= 5 and (m.group(1) != "-" or digits == "0") and int(digits) <= 65535:
            return int(digits)
    if not text:
        return None
    try:
        return socket.getservbyname(text, "tcp")
    except (OSError, ValueError, UnicodeError):
        return None


_NUMBER_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")


# --- fields -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    text: str
    is_path: bool


def _split_fields(spec: str) -> list[_Field] | None:
    """At most four ':'-separated fields, or None when the text is malformed
    (an unclosed or misplaced bracket, a trailing backslash, a fifth field)."""
    pos, n = 0, len(spec)
    while pos < n and spec[pos] in _C_SPACE:
        pos += 1
    fields: list[_Field] = []
    while len(fields) < 4 and pos < n:
        if spec[pos] == "[":
            end = spec.find("]", pos + 1)
            if end < 0 or (end + 1 < n and spec[end + 1] != ":"):
                return None
            text = spec[pos + 1 : end]
            fields.append(_Field(text, "/" in text))
            pos = end + 2
            continue
        chars: list[str] = []
        is_path = False
        while pos < n:
            c = spec[pos]
            if c == "\\":
                if pos + 1 >= n:
                    return None
                # The escaped character is taken as is: an escaped ':' does
                # not separate and an escaped '/' does not make a path.
                chars.append(spec[pos + 1])
                pos += 2
                continue
            pos += 1
            if c == ":":
                break
            if c == "/":
                is_path = True
            chars.append(c)
        fields.append(_Field("".join(chars), is_path))
    # A trailing ':' ends the last field without starting another (as in ssh).
    if pos < n:
        return None
    return fields


def _shape(fields: list[_Field]) -> Forward | None:
    """The forwarding these fields describe, ports unresolved (as -1 when
    bad), or None for a count ssh has no shape for. ``kind`` is filled in by
    the caller."""
    a = fields
    port: Callable[[str], int] = _port_or_bad
    if len(a) == 1:
        if a[0].is_path:
            return Forward(kind="local", listen_socket=a[0].text)
        return Forward(kind="local", listen_port=port(a[0].text))
    if len(a) == 2:
        if a[0].is_path and a[1].is_path:
            return Forward(kind="local", listen_socket=a[0].text, connect_socket=a[1].text)
        if a[1].is_path:
            return Forward(kind="local", listen_port=port(a[0].text), connect_socket=a[1].text)
        return Forward(kind="local", listen_host=a[0].text, listen_port=port(a[1].text))
    if len(a) == 3:
        if a[0].is_path:
            return Forward(
                kind="local", listen_socket=a[0].text, connect_host=a[1].text, connect_port=port(a[2].text)
            )
        if a[2].is_path:
            return Forward(
                kind="local", listen_host=a[0].text, listen_port=port(a[1].text), connect_socket=a[2].text
            )
        return Forward(
            kind="local", listen_port=port(a[0].text), connect_host=a[1].text, connect_port=port(a[2].text)
        )
    if len(a) == 4:
        return Forward(
            kind="local",
            listen_host=a[0].text,
            listen_port=port(a[1].text),
            connect_host=a[2].text,
            connect_port=port(a[3].text),
        )
    return None


def _port_or_bad(text: str) -> int:
    value = parse_port(text)
    return -1 if value is None else value


def _parse(spec: str, *, dynamic: bool, remote: bool, env: Mapping[str, str] | None) -> Forward | None:
    """ssh's parse_forward: the Forward, or None where ssh would fail."""
    try:
        expanded = expand_variables(spec, env=env)
    except ValueError:
        return None
    fields = _split_fields(expanded)
    if fields is None:
        return None
    fwd = _shape(fields)
    if fwd is None:
        return None
    has_target = fwd.connect_host is not None or fwd.connect_socket is not None
    if dynamic:
        if len(fields) > 2 or has_target:
            # ssh accepts a dynamic forward with a socket target and then
            # treats it as a local forward; we refuse it.
            return None
    else:
        if not has_target:
            return None
        if fwd.connect_socket is None and (fwd.connect_port is None or fwd.connect_port <= 0):
            return None
    if fwd.listen_socket is None:
        assert fwd.listen_port is not None
        if fwd.listen_port < 0 or (fwd.listen_port == 0 and not remote):
            return None
    for host in (fwd.listen_host, fwd.connect_host):
        if host is not None and len(host.encode("utf-8", "surrogateescape")) >= _MAX_HOST:
            return None
    for path in (fwd.listen_socket, fwd.connect_socket):
        if path is not None and len(path.encode("utf-8", "surrogateescape")) >= _MAX_SOCKET_PATH:
            return None
    return fwd


def parse_forward(kind: ForwardKind, spec: str, *, env: Mapping[str, str] | None = None) -> Forward:
    """Parse the argument of ``-L`` (``kind="local"``), ``-R`` (``"remote"``)
    or ``-D`` (``"dynamic"``) as ssh does.

    ``-R`` is first read as a forwarding with a target and, failing that, as a
    remote dynamic (SOCKS) forwarding, like ssh. ``env`` replaces os.environ
    for ``${VAR}`` expansion.

    Raises ForwardSpecError: ``Bad local forwarding specification '...'``.
    """
    if kind == "local":
        fwd = _parse(spec, dynamic=False, remote=False, env=env)
    elif kind == "remote":
        fwd = _parse(spec, dynamic=False, remote=True, env=env) or _parse(
            spec, dynamic=True, remote=True, env=env
        )
    elif kind == "dynamic":
        fwd = _parse(spec, dynamic=True, remote=False, env=env)
    else:
        raise ValueError(f"unknown forwarding kind {kind!r}")
    if fwd is None:
        raise ForwardSpecError(f"Bad {kind} forwarding specification '{spec}'")
    return _with_kind(fwd, kind)


def forward_from_config(
    kind: ForwardKind, listen: str, target: str | None = None, *, env: Mapping[str, str] | None = None
) -> Forward:
    """Parse the arguments of ``LocalForward``/``RemoteForward`` (``listen``
    and ``target``, which ssh joins with ':') or ``DynamicForward``
    (``listen`` only). ``RemoteForward`` without a target is remote dynamic.

    Raises ForwardSpecError with ssh's config wording, without the location:
    ``Missing target argument.`` or ``Bad forwarding specification.``.
    """
    if kind == "dynamic" or (kind == "remote" and target is None):
        if target is not None:
            raise ForwardSpecError("Bad forwarding specification.")
        fwd = _parse(listen, dynamic=True, remote=kind == "remote", env=env)
    else:
        if target is None:
            raise ForwardSpecError("Missing target argument.")
        fwd = _parse(f"{listen}:{target}", dynamic=False, remote=kind == "remote", env=env)
    if fwd is None:
        raise ForwardSpecError("Bad forwarding specification.")
    return _with_kind(fwd, kind)


def _with_kind(fwd: Forward, kind: ForwardKind) -> Forward:
    return replace(fwd, kind=kind)
