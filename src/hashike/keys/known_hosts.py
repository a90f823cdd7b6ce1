"""known_hosts files: parsing, host key checks, appending, and ssh's StrictHostKeyChecking policy.

The file format is the one sshd(8) describes under SSH_KNOWN_HOSTS FILE FORMAT:
each line holds an optional marker (``@cert-authority`` or ``@revoked``), a
comma-separated list of host name patterns, a key type, the base64 key and an
optional comment. Patterns use ``*`` and ``?`` wildcards and ``!`` negation
(ssh_config(5) PATTERNS); a host on a port other than 22 is written
``[host]:port``; a hashed entry ``|1|salt|hash`` holds HMAC-SHA1(salt, name)
in place of the name (ssh_config(5) HashKnownHosts, ssh-keygen(1) -H).

Theory of operation. :class:`KnownHosts` is a list of parsed entries from one
or more files. The files are text written by people and programs, so loading
never fails on their content: a line that cannot be understood is skipped and
recorded in :attr:`KnownHosts.warnings`. Only a file that exists but cannot be
read raises (:class:`KnownHostsError`), because a check that silently ignored it
could turn a changed key into a merely unknown one. :meth:`KnownHosts.check`
classifies a presented key as MATCH, MISMATCH, REVOKED or UNKNOWN, the way ssh
does; :func:`evaluate_host_key` turns that into a decision under a
StrictHostKeyChecking mode, prompting and appending as ssh does, and printing
ssh's own messages. Every failure inside it refuses the key (fail closed).
"""

from __future__ import annotations

import binascii
import contextlib
import enum
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from hashike.keys.patterns import match_pattern, match_pattern_list
from hashike.keys.textfile import iter_lines, read_bounded
from hashike.proto.certs import CERT_ALGORITHMS, CERT_KEY_TYPES, Certificate, CertType
from hashike.proto.errors import DecodeError, SSHError
from hashike.proto.hostkey import KeyFormatError, PublicKey
from hashike.proto.wire import Reader

__all__ = [
    "MAX_FILE_SIZE",
    "MAX_LINE_LENGTH",
    "HostKeyStatus",
    "HostKeyVerdict",
    "KnownHostEntry",
    "KnownHosts",
    "KnownHostsError",
    "Marker",
    "append_known_host",
    "evaluate_host_key",
    "hash_host_name",
    "host_port_name",
    "key_type_label",
    "order_host_key_algorithms",
]

MAX_LINE_LENGTH = 64 * 1024
MAX_FILE_SIZE = 16 * 1024 * 1024
_SHA1_LEN = 20  # HMAC-SHA1 output, and the salt length ssh writes
_HASH_MAGIC = "1"  # the "|1|" in a hashed host name
_DEFAULT_PORT = 22
_MAX_OTHER_NAMES = 8  # ssh lists this many other names, then a count
_MAX_PROMPTS = 32  # bounded re-prompting for an answer that is not yes/no/fingerprint
_SUPPORTED_TYPES = frozenset(
    {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"}
)
_BANNER = "@" * 59


class KnownHostsError(SSHError):
    """A known_hosts file exists but cannot be read, or a line cannot be appended."""


class HostKeyStatus(enum.Enum):
    """What the known_hosts files say about a host's key."""

    MATCH = "match"  # a plain entry for the host holds this key
    MISMATCH = "mismatch"  # keys are known for the host, none of them this one
    REVOKED = "revoked"  # a @revoked entry for the host holds this key
    UNKNOWN = "unknown"  # no key is known for the host


class Marker(enum.Enum):
    """sshd(8) SSH_KNOWN_HOSTS FILE FORMAT: the optional first field of a line."""

    NONE = ""
    CERT_AUTHORITY = "@cert-authority"
    REVOKED = "@revoked"


@dataclass(frozen=True, slots=True)
class KnownHostEntry:
    """One usable line of a known_hosts file.

    ``key`` is None for a well-formed key of a type hashike does not implement
    (ssh-dss, FIDO keys): such a line still counts as a known key of the host,
    so a host known only by one is reported as MISMATCH, never as UNKNOWN.
    """

    path: str
    line: int
    marker: Marker
    hostnames: str  # the field as written: a pattern list or one |1|salt|hash
    key_type: str
    blob: bytes
    key: PublicKey | None
    comment: str = ""
    _salt: bytes = field(default=b"", repr=False, compare=False)
    _digest: bytes = field(default=b"", repr=False, compare=False)

    @property
    def hashed(self) -> bool:
        """True for a ``|1|salt|hash`` entry."""
        return bool(self._digest)

    def matches(self, name: str) -> bool:
        """Does this line apply to ``name`` (a host name, or ``[host]:port``)?"""
        name = name.lower()
        if self._digest:
            return hmac.compare_digest(_hmac_sha1(self._salt, name), self._digest)
        return match_pattern_list(name, self.hostnames)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostKeyVerdict:
    """The outcome of :func:`evaluate_host_key`.

    ``restricted`` is True when a changed key is accepted only because
    StrictHostKeyChecking is ``no``: ssh then goes on with password and
    keyboard-interactive authentication, agent, X11 and port forwarding all
    disabled, and the caller must do the same.
    """

    accepted: bool
    status: HostKeyStatus
    added: bool = False
    restricted: bool = False
    entries: tuple[KnownHostEntry, ...] = ()
    error: str | None = None


# --- names -----------------------------------------------------------------


def host_port_name(host: str, port: int) -> str:
    """The name ssh looks up and writes: ``host`` for port 22, else ``[host]:port``, lowercased."""
    if not 0 < port < 65536:
        raise ValueError(f"invalid port {port}")
    host = host.lower()
    return host if port == _DEFAULT_PORT else f"[{host}]:{port}"


def _hmac_sha1(salt: bytes, name: str) -> bytes:
    mac = crypto_hmac.HMAC(salt, hashes.SHA1())
    mac.update(name.encode("utf-8"))
    return mac.finalize()


def hash_host_name(name: str, salt: bytes) -> str:
    """``|1|base64(salt)|base64(HMAC-SHA1(salt, name))``, as ssh-keygen -H writes it."""
    b64 = binascii.b2a_base64
    digest = _hmac_sha1(salt, name.lower())
    return f"|{_HASH_MAGIC}|{b64(salt, newline=False).decode()}|{b64(digest, newline=False).decode()}"


_LABELS = {
    "ssh-ed25519": "ED25519",
    "ssh-rsa": "RSA",
    "ssh-dss": "DSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
}


def key_type_label(key_type: str) -> str:
    """The key type as ssh names it in messages: ``ED25519``, ``ECDSA``, ``RSA`` ..."""
    cert = key_type.endswith("-cert-v01@openssh.com")
    base = key_type.removesuffix("-cert-v01@openssh.com")
    if cert:
        base += "@openssh.com" if base.startswith("sk-") else ""
    label = _LABELS.get(base) or ("ECDSA" if base.startswith("ecdsa-sha2-") else "unknown")
    return f"{label}-CERT" if cert else label


# --- parsing ------------------------------------------------------------------------


def _split_fields(line: str, count: int) -> list[str]:
    """Split on runs of spaces and tabs into at most ``count`` fields (the last keeps the rest)."""
    fields: list[str] = []
    rest = line.strip(" \t")
    while rest and len(fields) < count - 1:
        end = 0
        while end < len(rest) and rest[end] not in " \t":
            end += 1
        fields.append(rest[:end])
        rest = rest[end:].lstrip(" \t")
    if rest:
        fields.append(rest)
    return fields


def _b64decode(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("invalid base64") from exc


def _parse_hashed(hostnames: str) -> tuple[bytes, bytes]:
    parts = hostnames.split("|")
    if len(parts) != 4 or parts[0] or parts[1] != _HASH_MAGIC:
        raise ValueError("invalid hashed host name")
    salt, digest = _b64decode(parts[2]), _b64decode(parts[3])
    if not salt or len(digest) != _SHA1_LEN:
        raise ValueError("invalid hashed host name")
    return salt, digest


def _parse_key(key_type: str, data: str) -> tuple[bytes, PublicKey | None]:
    blob = _b64decode(data)
    try:
        inner = Reader(blob).ascii(256)
    except DecodeError as exc:
        raise ValueError("invalid key data") from exc
    if inner != key_type:
        raise ValueError(f"key type {key_type!r} does not match the key data")
    if key_type not in _SUPPORTED_TYPES:
        return blob, None  # well-formed, but a type we do not implement
    try:
        return blob, PublicKey.from_blob(blob)
    except KeyFormatError as exc:
        raise ValueError(str(exc)) from exc


def _parse_line(path: str, lineno: int, line: str) -> KnownHostEntry | None:
    """One line to an entry; None for blank and comment lines; ValueError if malformed."""
    line = line.strip(" \t\r")
    if not line or line.startswith("#"):
        return None
    marker = Marker.NONE
    fields = _split_fields(line, 5 if line.startswith("@") else 4)
    if line.startswith("@"):
        markers = {m.value: m for m in Marker if m is not Marker.NONE}
        found = markers.get(fields.pop(0).lower())
        if found is None:
            raise ValueError("unknown marker")
        marker = found
    if len(fields) < 3:
        raise ValueError("expected host names, key type and key")
    hostnames, key_type, data = fields[0], fields[1], fields[2]
    comment = fields[3] if len(fields) > 3 else ""
    if key_type.isdigit():
        raise ValueError("SSH protocol 1 keys are not supported")
    salt = digest = b""
    if hostnames.startswith("|"):
        salt, digest = _parse_hashed(hostnames)
    blob, key = _parse_key(key_type, data)
    return KnownHostEntry(path, lineno, marker, hostnames, key_type, blob, key, comment, salt, digest)


def _read_limited(path: str) -> tuple[bytes, bool] | None:
    """The first MAX_FILE_SIZE bytes of the file and whether there was more; None if missing."""
    try:
        return read_bounded(path, MAX_FILE_SIZE, whole_lines=True)
    except (FileNotFoundError, NotADirectoryError):  # no such file: nothing known from it
        return None
    except OSError as exc:
        raise KnownHostsError(f"cannot read known hosts file {path}: {exc.strerror or exc}") from exc


class KnownHosts:
    """Parsed known_hosts entries, from any number of files, in order."""

    __slots__ = ("entries", "warnings")

    def __init__(
        self, entries: Sequence[KnownHostEntry] = (), warnings: Sequence[tuple[str, int, str]] = ()
    ) -> None:
        self.entries: tuple[KnownHostEntry, ...] = tuple(entries)
        #: (path, line number, reason) for every line that was skipped.
        self.warnings: tuple[tuple[str, int, str], ...] = tuple(warnings)

    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike[str]]) -> KnownHosts:
        """Read the files in order. A missing file holds no entries; a malformed line is
        skipped (see :attr:`warnings`); a file that exists but cannot be read raises
        :class:`KnownHostsError`. A leading ``~`` is expanded, as ssh does."""
        entries: list[KnownHostEntry] = []
        warnings: list[tuple[str, int, str]] = []
        for path in paths:
            name = os.path.expanduser(os.fspath(path))
            read = _read_limited(name)
            if read is None:
                continue
            data, truncated = read
            parsed = cls.parse(data, name)
            entries += parsed.entries
            warnings += parsed.warnings
            if truncated:
                warnings.append((name, 0, f"file larger than {MAX_FILE_SIZE} bytes: the rest is ignored"))
        return cls(entries, warnings)

    @classmethod
    def parse(cls, data: bytes | str, path: str = "<known_hosts>") -> KnownHosts:
        """Parse the text of one file; never raises on its content."""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        entries: list[KnownHostEntry] = []
        warnings: list[tuple[str, int, str]] = []
        for lineno, raw in enumerate(iter_lines(data[:MAX_FILE_SIZE]), 1):
            if len(raw) > MAX_LINE_LENGTH:
                warnings.append((path, lineno, "line too long"))
                continue
            try:
                entry = _parse_line(path, lineno, raw.decode("utf-8"))
            except UnicodeDecodeError:
                warnings.append((path, lineno, "line is not valid UTF-8"))
                continue
            except ValueError as exc:
                warnings.append((path, lineno, str(exc)))
                continue
            if entry is not None:
                entries.append(entry)
        return cls(entries, warnings)

    def lookup(self, host: str, port: int) -> list[KnownHostEntry]:
        """Every entry (any marker) whose host names match the host on this port."""
        name = host_port_name(host, port)
        return [entry for entry in self.entries if entry.matches(name)]

    def known_key_types(self, host: str, port: int) -> list[str]:
        """Key types of the host's plain entries, first seen first: a client may prefer these
        host key algorithms so that a known key is negotiated (as ssh does)."""
        types: dict[str, None] = {}
        for entry in self.lookup(host, port):
            if entry.marker is Marker.NONE:
                types.setdefault(entry.key_type)
        return list(types)

    def check(self, host: str, port: int, key: PublicKey) -> tuple[HostKeyStatus, list[KnownHostEntry]]:
        """Classify ``key`` for ``host`` on ``port``.

        REVOKED (with the @revoked entries) wins over everything; MATCH (with the
        matching entries) if a plain entry holds the key; MISMATCH (with every plain
        entry for the host, whatever its key type, as ssh treats them) if keys are known
        but none is this one; else UNKNOWN. @cert-authority entries never match a plain key.
        """
        entries = self.lookup(host, port)
        revoked = [e for e in entries if e.marker is Marker.REVOKED and e.blob == key.blob]
        if revoked:
            return HostKeyStatus.REVOKED, revoked
        plain = [e for e in entries if e.marker is Marker.NONE]
        matched = [e for e in plain if e.blob == key.blob]
        if matched:
            return HostKeyStatus.MATCH, matched
        if plain:
            return HostKeyStatus.MISMATCH, plain
        return HostKeyStatus.UNKNOWN, []

    def check_certificate(
        self, host: str, port: int, cert: Certificate, now: int
    ) -> tuple[HostKeyStatus, list[KnownHostEntry], str | None]:
        """Classify a host certificate as ssh does (sshconnect.c check_host_key):
        REVOKED if a @revoked entry for the host holds the certificate, the key
        it certifies or its CA; MATCH if a @cert-authority entry for the host
        holds its CA and the certificate is valid for ``host`` at ``now`` (Unix
        seconds); else UNKNOWN, with the reason in ssh's words when a CA was
        found but the certificate is not valid (the caller then falls back to
        the certified key, as ssh does)."""
        entries = self.lookup(host, port)
        revoked_blobs = {cert.blob, cert.key.blob, cert.signature_key.blob}
        revoked = [e for e in entries if e.marker is Marker.REVOKED and e.blob in revoked_blobs]
        if revoked:
            return HostKeyStatus.REVOKED, revoked, None
        cas = [e for e in entries if e.marker is Marker.CERT_AUTHORITY and e.blob == cert.signature_key.blob]
        if not cas:
            return HostKeyStatus.UNKNOWN, [], None
        why = _host_certificate_problem(cert, host, now)
        if why is not None:
            return HostKeyStatus.UNKNOWN, [], why
        return HostKeyStatus.MATCH, cas[:1], None

    def order_algorithms(self, host: str, port: int, algorithms: Sequence[str]) -> tuple[str, ...]:
        """ssh's order_hostkeyalgs: the algorithms of the host's known plain keys
        first, and every certificate algorithm first when a @cert-authority
        entry names the host; otherwise the order given."""
        entries = self.lookup(host, port)
        has_ca = any(e.marker is Marker.CERT_AUTHORITY for e in entries)
        known = {e.key_type for e in entries if e.marker is Marker.NONE}

        def preferred(algorithm: str) -> bool:
            return (has_ca and algorithm in CERT_ALGORITHMS) or _algorithm_key_type(algorithm) in known

        return (*(a for a in algorithms if preferred(a)), *(a for a in algorithms if not preferred(a)))

    def entries_for_key(self, key: PublicKey) -> list[KnownHostEntry]:
        """Plain entries holding ``key``, under whatever names."""
        return [e for e in self.entries if e.marker is Marker.NONE and e.blob == key.blob]


def _algorithm_key_type(algorithm: str) -> str:
    """The plain key type behind a host key algorithm (rsa-sha2-512 -> ssh-rsa)."""
    cert = CERT_ALGORITHMS.get(algorithm)
    if cert is not None:
        return CERT_KEY_TYPES[cert[0]]
    return "ssh-rsa" if algorithm.startswith("rsa-sha2-") else algorithm


def _host_certificate_problem(cert: Certificate, host: str, now: int) -> str | None:
    """Why a host certificate signed by a trusted CA is not valid for ``host``
    (ssh's check_host_cert), None if it is. Host principals may be wildcard
    patterns (OpenSSH 8.8); an empty list is valid for every host."""
    if not cert.signature_valid():
        return "Certificate signature is invalid"
    why = cert.check(cert_type=CertType.HOST, now=now)
    if why is not None:
        return why
    principals = cert.fields.principals
    if principals and not any(match_pattern(host.lower(), p) for p in principals):
        return "Certificate invalid: name is not a listed principal"
    if cert.fields.critical_options:
        return f"Certificate for {host} contains critical options"
    return None


def order_host_key_algorithms(
    algorithms: Sequence[str], host: str, port: int, files: Sequence[str | os.PathLike[str]]
) -> tuple[str, ...]:
    """:meth:`KnownHosts.order_algorithms` over ``files``; the order given
    when one cannot be read (the host key check will refuse then)."""
    try:
        return KnownHosts.load(files).order_algorithms(host, port, algorithms)
    except KnownHostsError:
        return tuple(algorithms)


# --- appending ----------------------------------------------------------------------


def _check_host(host: str) -> None:
    if not host or any(c in host for c in " \t\r\n,*?\0") or host[0] in "|@#!":
        raise ValueError(f"cannot write {host!r} as a known_hosts host name")


def append_known_host(
    path: str | os.PathLike[str],
    host: str,
    port: int,
    key: PublicKey,
    hashed: bool = False,
    rng: Callable[[int], bytes] = os.urandom,
) -> str:
    """Append a line for ``key`` of ``host`` (``[host]:port`` unless port 22); return the line.

    The line is ssh's: ``name keytype base64``, with the name hashed as
    ``|1|salt|hash`` when ``hashed`` (ssh_config(5) HashKnownHosts). The file is
    created with mode 0600 and its directory with 0700 if missing; a leading ``~``
    in ``path`` is expanded. Raises
    :class:`KnownHostsError` if it cannot be written, ValueError for a bad host.
    """
    _check_host(host)
    name = host_port_name(host, port)
    if hashed:
        salt = rng(_SHA1_LEN)
        if len(salt) != _SHA1_LEN:
            raise ValueError("rng returned the wrong number of bytes")
        name = hash_host_name(name, salt)
    line = f"{name} {key.openssh_line()}\n"
    file_name = os.path.expanduser(os.fspath(path))
    try:
        directory = os.path.dirname(file_name)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(file_name, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            data = line.encode("utf-8")
            size = os.fstat(fd).st_size
            # A last line without its newline would swallow ours.
            if size > 0 and os.pread(fd, 1, size - 1) not in (b"\n", b""):
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as exc:
        raise KnownHostsError(
            f"failed to add the host to the list of known hosts ({file_name}): {exc.strerror or exc}"
        ) from exc
    return line.rstrip("\n")


# --- the StrictHostKeyChecking policy -------------------------------------------------

_MODES = {
    "yes": "yes",
    "true": "yes",
    "ask": "ask",
    "accept-new": "accept-new",
    "no": "no",
    "off": "no",
    "false": "no",
}


def _changed_message(
    name: str, key: PublicKey, offending: KnownHostEntry, add_file: str, strict: bool
) -> str:
    label = key_type_label(key.key_type)
    lines = [
        _BANNER,
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
        _BANNER,
        "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!",
        "Someone could be eavesdropping on you right now (man-in-the-middle attack)!",
        "It is also possible that a host key has just been changed.",
        f"The fingerprint for the {label} key sent by the remote host is",
        f"{key.fingerprint()}.",
        "Please contact your system administrator.",
        f"Add correct host key in {add_file} to get rid of this message.",
        f"Offending {key_type_label(offending.key_type)} key in {offending.path}:{offending.line}",
        "  remove with:",
        f'  ssh-keygen -f "{offending.path}" -R "{name}"',
    ]
    if strict:
        lines.append(f"Host key for {name} has changed and you have requested strict checking.")
        lines.append("Host key verification failed.")
    return "\n".join(lines) + "\n"


def _revoked_message(name: str, key: PublicKey, strict: bool) -> str:
    label = key_type_label(key.key_type)
    lines = [
        _BANNER,
        "@       WARNING: REVOKED HOST KEY DETECTED!               @",
        _BANNER,
        f"The {label} host key for {name} is marked as revoked.",
        "This could mean that a stolen key is being used to",
        "impersonate this host.",
    ]
    if strict:
        lines.append(f"{label} host key for {name} was revoked and you have requested strict checking.")
    lines.append("Host key verification failed.")
    return "\n".join(lines) + "\n"


def _question(name: str, ip_name: str, key: PublicKey, known: KnownHosts) -> str:
    lines = [
        f"The authenticity of host '{name} ({ip_name})' can't be established.",
        f"{key_type_label(key.key_type)} key fingerprint is {key.fingerprint()}.",
    ]
    others = known.entries_for_key(key)
    if others:
        lines.append("This host key is known by the following other names/addresses:")
        for entry in others[:_MAX_OTHER_NAMES]:
            names = "[hashed name]" if entry.hashed else entry.hostnames
            lines.append(f"    {entry.path}:{entry.line}: {names}")
        if len(others) > _MAX_OTHER_NAMES:
            lines.append(f"    ({len(others) - _MAX_OTHER_NAMES} additional names omitted)")
    else:
        lines.append("This key is not known by any other names.")
    return "\n".join(lines) + "\nAre you sure you want to continue connecting (yes/no/[fingerprint])? "


def _confirm(prompt: Callable[[str], str | None], question: str, fingerprint: str) -> bool:
    """ssh's yes/no/fingerprint question: "yes" in any case or the exact fingerprint accepts;
    "no", an empty answer or no answer at all refuses; anything else asks again."""
    text = question
    for _ in range(_MAX_PROMPTS):
        answer = prompt(text)
        if answer is None:
            return False
        answer = answer.strip()
        if not answer or answer.lower() == "no":
            return False
        if answer.lower() == "yes" or answer == fingerprint:
            return True
        text = "Please type 'yes', 'no' or the fingerprint: "
    return False


def _add(
    add_file: str | None,
    host: str,
    port: int,
    key: PublicKey,
    hashed: bool,
    rng: Callable[[int], bytes],
    err: TextIO,
) -> None:
    if add_file is None:
        raise KnownHostsError("no known hosts file to add the host to")
    append_known_host(add_file, host, port, key, hashed=hashed, rng=rng)
    label = key_type_label(key.key_type)
    err.write(
        f"Warning: Permanently added '{host_port_name(host, port)}' ({label}) to the list of known hosts.\n"
    )


def evaluate_host_key(
    host: str,
    port: int,
    key: PublicKey,
    *,
    strict: str,
    known_hosts_files: Sequence[str | os.PathLike[str]],
    global_known_hosts_files: Sequence[str | os.PathLike[str]] = (),
    err: TextIO,
    prompt: Callable[[str], str | None] | None = None,
    hash_known_hosts: bool = False,
    address: str | None = None,
    rng: Callable[[int], bytes] = os.urandom,
    now: float = 0,
) -> HostKeyVerdict:
    """Decide whether to trust ``key`` for ``host``:``port``, as ssh_config(5)
    StrictHostKeyChecking ``strict`` (yes, ask, accept-new, no/off) says.

    ``known_hosts_files`` are the UserKnownHostsFile list (new keys go to the first),
    ``global_known_hosts_files`` the GlobalKnownHostsFile list (read only). ssh's
    messages go to ``err``. In ``ask`` mode the whole question is passed to ``prompt``,
    which returns the answer, or None when there is no terminal (refused). ``address``
    is the address connected to, shown in the question. A host certificate is
    checked against the @cert-authority entries at ``now`` (Unix seconds, the
    caller's clock); one that is not trusted falls back to the key it
    certifies, as ssh does. A REVOKED key is always refused;
    a changed key (MISMATCH) is refused except under ``no``, where it is accepted with
    ``restricted`` set. Any error (an unreadable file, a failed write) refuses.
    """
    mode = _MODES.get(strict.lower())
    if mode is None:
        raise ValueError(f"invalid StrictHostKeyChecking value {strict!r}")
    status = HostKeyStatus.UNKNOWN
    try:
        name = host_port_name(host, port)
        user_files = [os.path.expanduser(os.fspath(p)) for p in known_hosts_files]
        add_file = user_files[0] if user_files else None
        # ssh loads the system files before the user's; the last offending entry is reported.
        known = KnownHosts.load([*global_known_hosts_files, *user_files])
        if isinstance(key, Certificate):
            status, entries, why = known.check_certificate(host, port, key, int(now))
            if status is HostKeyStatus.MATCH:
                return HostKeyVerdict(accepted=True, status=status, entries=tuple(entries))
            if status is HostKeyStatus.REVOKED:
                err.write(_revoked_message(name, key, strict=mode != "no"))
                return HostKeyVerdict(accepted=False, status=status, entries=tuple(entries))
            if why is not None:
                err.write(why + "\n")
            key = key.key  # ssh: "No matching CA found. Retry with plain key"
        status, entries = known.check(host, port, key)
        found = tuple(entries)
        if status is HostKeyStatus.MATCH:
            return HostKeyVerdict(accepted=True, status=status, entries=found)
        if status is HostKeyStatus.REVOKED:
            err.write(_revoked_message(name, key, strict=mode != "no"))
            return HostKeyVerdict(accepted=False, status=status, entries=found)
        if status is HostKeyStatus.MISMATCH:
            shown_file = add_file if add_file is not None else entries[-1].path
            err.write(_changed_message(name, key, entries[-1], shown_file, strict=mode != "no"))
            accepted = mode == "no"
            return HostKeyVerdict(accepted=accepted, status=status, restricted=accepted, entries=found)
        # UNKNOWN
        if mode == "yes":
            label = key_type_label(key.key_type)
            err.write(
                f"No {label} host key is known for {name} and you have requested strict checking.\n"
                "Host key verification failed.\n"
            )
            return HostKeyVerdict(accepted=False, status=status)
        if mode == "ask":
            ip_name = host_port_name(address, port) if address else name
            question = _question(name, ip_name, key, known)
            if prompt is None or not _confirm(prompt, question, key.fingerprint()):
                err.write("Host key verification failed.\n")
                return HostKeyVerdict(accepted=False, status=status)
        _add(add_file, host, port, key, hash_known_hosts, rng, err)
        return HostKeyVerdict(accepted=True, status=status, added=True)
    except Exception as exc:  # fail closed: whatever went wrong, the key is not trusted
        message = str(exc).rstrip(".") or type(exc).__name__
        with contextlib.suppress(Exception):  # nothing more can be reported
            err.write(f"Host key verification failed: {message}.\n")
        return HostKeyVerdict(accepted=False, status=status, error=message)
