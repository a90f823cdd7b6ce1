"""ssh_config(5)'s keywords: the table :mod:`hashike.config.ssh_config` reads
lines with, and the value parsers of its rows.

Each row of ``KEYWORDS`` names the ClientSettings field it fills, the function
that turns its arguments into a value and how values combine. ``IGNORED`` and
``REFUSED`` are the OpenSSH keywords hashike does not implement (see
:mod:`hashike.config.ssh_config` for what becomes of them). Parsers raise
:class:`ValueProblem` with ssh's message; the reader adds where the line is.
"""

from __future__ import annotations

import re
from typing import Any

from hashike.config.forward import Forward, ForwardKind, ForwardSpecError, forward_from_config, parse_port
from hashike.config.jump import parse_jump
from hashike.config.keywords import (
    DEFAULT_REKEY_BYTES,
    Keyword,
    Parser,
    ValueProblem,
    choice,
    rekey_limit,
    single,
    transport_keywords,
)
from hashike.config.syntax import parse_size, parse_time

__all__ = ["IGNORED", "KEYWORDS", "MIN_RSA_SIZE", "REFUSED", "is_env_reference"]

MIN_RSA_SIZE = 1024
_INT_MAX = 2**31 - 1
_SIZE_MAX = 2**63 - 1


# --- value parsers: list of arguments -> value -------------------------------------------------

_WORDS_TRUE = ("yes", "true")
_WORDS_FALSE = ("no", "false")


def _words(yes: Any, no: Any, **extra: Any) -> dict[str, Any]:
    """ssh's multistate table: yes/true, no/false and the extra words."""
    return {**dict.fromkeys(_WORDS_TRUE, yes), **dict.fromkeys(_WORDS_FALSE, no), **extra}


_parse_flag = choice(_words(True, False))


def _parse_string(args: list[str]) -> str:
    if not args[0]:
        raise ValueProblem("Missing argument.")
    return args[0]


def _parse_optional_string(args: list[str]) -> str | None:
    # "none" is ssh's "not set", and still counts as the first value obtained.
    value = _parse_string(args)
    return None if value.lower() == "none" else value


def _parse_proxy_jump(args: list[str]) -> tuple[str, str | None]:
    value = _parse_optional_string(args)
    if value is not None:
        try:
            parse_jump(value)
        except ValueError:
            raise ValueProblem(f'Invalid ProxyJump "{value}"') from None
    return ("proxy_jump", value)


def _parse_proxy_command(args: list[str]) -> tuple[str, str | None]:
    # The reader passes the rest of the line as written: the shell splits it.
    return ("proxy_command", _parse_optional_string(args))


def _parse_port(args: list[str]) -> int:
    port = parse_port(args[0])
    if port is None or port == 0:
        raise ValueProblem(f"Bad port '{args[0]}'.")
    return port


def _parse_count(args: list[str]) -> int:
    arg = args[0]
    if not re.fullmatch(r"-?[0-9]+", arg, re.ASCII):
        raise ValueProblem("integer value invalid.")
    if arg.startswith("-") and arg.strip("-0"):
        raise ValueProblem("integer value too small.")
    # Length first: int() refuses very long digit strings with its own ValueError.
    digits = arg.lstrip("-0")
    if len(digits) > 10 or int(digits or "0") > _INT_MAX:
        raise ValueProblem("integer value too large.")
    return int(digits or "0")


def _time(arg: str) -> int:
    """A time value in seconds, at most INT_MAX (ssh's convtime); ValueError if bad."""
    seconds = parse_time(arg)
    if seconds > _INT_MAX:
        raise ValueError("time value too large")
    return seconds


def _seconds(arg: str) -> int:
    try:
        return _time(arg)
    except ValueError:
        raise ValueProblem("invalid time value.") from None


def _parse_interval(args: list[str]) -> int:
    return _seconds(args[0])


def _parse_reconnect(args: list[str]) -> int | None:
    # hashike's Reconnect: yes (None, for ever), no (0), or how many attempts in a row.
    word = args[0].lower()
    if word in ("yes", "no"):
        return None if word == "yes" else 0
    return _parse_count(args)


def _parse_connect_timeout(args: list[str]) -> float | None:
    # 0 and "none" both mean no timeout (ssh's connect() then blocks).
    if args[0].lower() == "none":
        return None
    return float(_seconds(args[0])) or None


def _rekey_size(arg: str) -> int:
    try:
        size = parse_size(arg)
    except ValueError:
        size = -1
    if not 0 <= size <= _SIZE_MAX:
        raise ValueProblem(f"Bad number '{arg}': Invalid argument")
    # 0 is ssh's "default"; below a few blocks every packet would rekey.
    if size == 0:
        return DEFAULT_REKEY_BYTES
    if size < 16:
        raise ValueProblem("RekeyLimit too small")
    return size


def _parse_escape_char(args: list[str]) -> str | None:
    arg = args[0]
    if arg == "none":
        return None
    if len(arg) == 1:
        return arg
    if len(arg) == 2 and arg[0] == "^" and 64 <= ord(arg[1]) < 127:
        return chr(ord(arg[1]) & 31)
    raise ValueProblem("Bad escape character.")


_LOG_LEVELS = ("QUIET", "FATAL", "ERROR", "INFO", "VERBOSE", "DEBUG", "DEBUG1", "DEBUG2", "DEBUG3")


def _parse_log_level(args: list[str]) -> str:
    level = args[0].upper()
    if level not in _LOG_LEVELS:
        raise ValueProblem(f"unsupported log level '{args[0]}'")
    return level


def _parse_names(args: list[str]) -> tuple[str, ...]:
    names = tuple(n for n in args[0].split(",") if n)
    if not names:
        raise ValueProblem("Missing argument.")
    return names


def _parse_paths(args: list[str]) -> tuple[str, ...]:
    if not all(args):
        raise ValueProblem("Missing argument.")
    return tuple(args)


_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def is_env_reference(arg: str) -> bool:
    """``$NAME`` (as opposed to ``${NAME}`` inside a path)."""
    return arg.startswith("$") and not arg.startswith("${")


def _parse_identity_agent(args: list[str]) -> str | None:
    arg = _parse_string(args)
    # "$NAME": the socket path is in that environment variable.
    if is_env_reference(arg) and not _ENV_NAME_RE.fullmatch(arg[1:]):
        raise ValueProblem(f"Invalid environment name {arg}.")
    return None if arg.lower() == "none" else arg


def _parse_required_rsa_size(args: list[str]) -> int:
    # ssh_config(5): the limit "may only be raised from the default".
    return max(MIN_RSA_SIZE, _parse_count(args))


def _parse_send_env(args: list[str]) -> tuple[str, ...]:
    if any("=" in arg for arg in args):
        raise ValueProblem("Invalid environment name.")
    return tuple(args)


def _parse_set_env(args: list[str]) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not name:
            raise ValueProblem("Invalid SetEnv.")
        pairs.append((name, value))
    return tuple(pairs)


def _parse_control_persist(args: list[str]) -> int | None:
    arg = args[0].lower()
    if arg in _WORDS_TRUE:
        return 0
    if arg in _WORDS_FALSE:
        return None
    try:
        return _time(arg)
    except ValueError:
        raise ValueProblem("Bad ControlPersist argument.") from None


def _forward_parser(kind: ForwardKind) -> Parser:
    def parse(args: list[str]) -> Forward:
        try:
            return forward_from_config(kind, args[0], args[1] if len(args) > 1 else None)
        except ForwardSpecError as exc:
            raise ValueProblem(str(exc)) from None

    return parse


# --- the keyword table ------------------------------------------------------------------------


KEYWORDS: dict[str, Keyword] = {
    "hostname": single("hostname", _parse_string),
    "user": single("user", _parse_string),
    "port": single("port", _parse_port),
    "identityfile": single("identity_files", _parse_string, merge="append"),
    "identitiesonly": single("identities_only", _parse_flag),
    "identityagent": single("identity_agent", _parse_identity_agent),
    "certificatefile": single("certificate_files", _parse_string, merge="append"),
    "localforward": single("local_forwards", _forward_parser("local"), merge="append", max_args=2),
    "remoteforward": single("remote_forwards", _forward_parser("remote"), merge="append", max_args=2),
    "dynamicforward": single("dynamic_forwards", _forward_parser("dynamic"), merge="append"),
    "clearallforwardings": single("clear_all_forwardings", _parse_flag),
    "exitonforwardfailure": single("exit_on_forward_failure", _parse_flag),
    "gatewayports": single("gateway_ports", _parse_flag),
    "batchmode": single("batch_mode", _parse_flag),
    "stricthostkeychecking": single(
        "strict_host_key_checking",
        choice(_words("yes", "no", off="no", ask="ask", **{"accept-new": "accept-new"})),
    ),
    "userknownhostsfile": single("user_known_hosts_files", _parse_paths, max_args=None),
    "globalknownhostsfile": single("global_known_hosts_files", _parse_paths, max_args=None),
    "hashknownhosts": single("hash_known_hosts", _parse_flag),
    "hostkeyalias": single("host_key_alias", _parse_string),
    "requiredrsasize": single("required_rsa_size", _parse_required_rsa_size),
    "passwordauthentication": single("password_authentication", _parse_flag),
    "kbdinteractiveauthentication": single("kbd_interactive_authentication", _parse_flag),
    "pubkeyauthentication": single(
        "pubkey_authentication", choice(_words(True, False, unbound=True, **{"host-bound": True}))
    ),
    "preferredauthentications": single("preferred_authentications", _parse_names),
    "numberofpasswordprompts": single("number_of_password_prompts", _parse_count),
    "connecttimeout": single("connect_timeout", _parse_connect_timeout),
    "serveraliveinterval": single("server_alive_interval", _parse_interval),
    "serveralivecountmax": single("server_alive_count_max", _parse_count),
    "tcpkeepalive": single("tcp_keep_alive", _parse_flag),
    # hashike extensions (ssh reads them under IgnoreUnknown Reconnect*):
    "reconnect": single("reconnect", _parse_reconnect),
    "reconnectmaxdelay": single("reconnect_max_delay", _parse_interval),
    "addressfamily": single("address_family", choice({"any": "any", "inet": "inet", "inet6": "inet6"})),
    "bindaddress": single("bind_address", _parse_string),
    **transport_keywords("SSH2 MAC spec", rekey_limit(_rekey_size, _seconds, ignore_case=True)),
    "compression": single("compression", _parse_flag),
    "loglevel": single("log_level", _parse_log_level),
    "escapechar": single("escape_char", _parse_escape_char),
    "enableescapecommandline": single("enable_escape_commandline", _parse_flag),
    "requesttty": single("request_tty", choice(_words("yes", "no", force="force", auto="auto"))),
    "sessiontype": single(
        "session_type", choice({"default": "default", "none": "none", "subsystem": "subsystem"})
    ),
    "forkafterauthentication": single("fork_after_authentication", _parse_flag),
    # One slot for both, the first value obtained winning, as ssh has it:
    # "ProxyCommand none" also keeps a later ProxyJump from applying.
    "proxyjump": single("proxy", _parse_proxy_jump),
    "proxycommand": single("proxy", _parse_proxy_command),
    "sendenv": single("send_env", _parse_send_env, merge="send_env", max_args=None),
    "setenv": single("set_env", _parse_set_env, merge="set_env", max_args=None),
    "controlmaster": single(
        "control_master",
        choice(_words("yes", "no", ask="ask", auto="auto", autoask="autoask")),
    ),
    "controlpath": single("control_path", _parse_optional_string),
    "controlpersist": single("control_persist", _parse_control_persist),
    "ignoreunknown": single("ignore_unknown", _parse_string),
}

# Old names ssh still reads as these keywords.
for _alias, _name in {
    "challengeresponseauthentication": "kbdinteractiveauthentication",
    "skeyauthentication": "kbdinteractiveauthentication",
    "tisauthentication": "kbdinteractiveauthentication",
    "dsaauthentication": "pubkeyauthentication",
    "keepalive": "tcpkeepalive",
}.items():
    KEYWORDS[_alias] = KEYWORDS[_name]

# OpenSSH keywords accepted and ignored: without them hashike does less (no
# X11, agent, GSSAPI, hostbased or hardware-token support), checks
# more (KnownHostsCommand, VerifyHostKeyDNS), or they tune what hashike does
# its own way (PubkeyAcceptedAlgorithms). CheckHostIP is the one that, when
# set to yes, checks something hashike does not; ignored_options shows it.
IGNORED = frozenset(
    """
    addkeystoagent canonicaldomains canonicalizefallbacklocal canonicalizehostname canonicalizemaxdots
    canonicalizepermittedcnames casignaturealgorithms channeltimeout checkhostip
    connectionattempts enablesshkeysign fingerprinthash forwardagent forwardx11
    forwardx11timeout forwardx11trusted gssapiauthentication gssapiclientidentity gssapidelegatecredentials
    gssapikexalgorithms gssapikeyexchange gssapirenewalforcesrekey gssapiserveridentity gssapitrustdns
    hostbasedacceptedalgorithms hostbasedauthentication hostbasedkeytypes ipqos kbdinteractivedevices
    knownhostscommand localcommand logverbose nohostauthenticationforlocalhost obscurekeystroketiming
    permitlocalcommand pkcs11provider proxyusefdpass pubkeyacceptedalgorithms pubkeyacceptedkeytypes
    securitykeyprovider smartcarddevice stdinnull streamlocalbindmask streamlocalbindunlink syslogfacility
    tag tunneldevice updatehostkeys verifyhostkeydns visualhostkey xauthlocation
    protocol cipher compressionlevel rsaauthentication rhostsrsaauthentication useroaming
    useprivilegedport fallbacktorsh usersh kerberosauthentication kerberostgtpassing afstokenpassing
    """.split()  # noqa: SIM905 -- a word list reads better than 64 quoted strings
)

# OpenSSH keywords hashike cannot honour and will not silently drop: their
# first value is an error when it takes effect, unless it is one of these
# values, which ask for nothing.
REFUSED: dict[str, frozenset[str]] = {
    "bindinterface": frozenset(),
    "tunnel": frozenset({"no", "false"}),
    "remotecommand": frozenset({"none"}),
    "revokedhostkeys": frozenset({"none"}),
    "permitremoteopen": frozenset({"any"}),
}
